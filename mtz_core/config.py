"""The options of a zip, validated once, with the reason beside each default."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

__all__ = [
    "TASK_LETTERS",
    "ZipConfig",
    "METHODS",
    "MANY_METHODS",
    "MATCHINGS",
    "CONV_HESSIANS",
    "FLATTEN_HESSIANS",
    "AUTO_DAMPING_GRID",
    "AUTO_HOLDOUT_EVERY",
    "BATCH_NORMS",
]

#: how tasks are named in messages and parameter counts: a, b, c, …
TASK_LETTERS = "abcdefghijklmnopqrstuvwxyz"

#: mtz: Hessian cost pairs + Hessian-weighted merge (the method). The rest are baselines at equal
#: shares: mtz-avg (MTZ pairs, plain average), euclidean (closest incoming vectors, plain
#: average), random (random pairs, plain average), zipit (ZipIt!: feature-correlation merges
#: over both models' units, within-model merges allowed, plain average; `mtz_core.clusters`).
METHODS = ("mtz", "mtz-avg", "euclidean", "random", "zipit")
#: the methods defined for every architecture and any number of models (zipit: chains of two)
MANY_METHODS = ("mtz", "mtz-avg", "euclidean", "random")
#: greedy is the method's own choice; optimal (min-cost k pairs) is a comparison.
MATCHINGS = ("greedy", "optimal")
CONV_HESSIANS = ("exact", "channel")
FLATTEN_HESSIANS = ("auto", "exact", "block")
BATCH_NORMS = ("fold", "keep")
#: the damping factors damping="auto" tries, weakest to strongest
AUTO_DAMPING_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: with damping="auto", calibration samples whose index (from 0, over the data in order) is
#: ≡ AUTO_HOLDOUT_EVERY − 1 (mod AUTO_HOLDOUT_EVERY) are held out of the Hessian to choose λ
AUTO_HOLDOUT_EVERY = 5


@dataclass(frozen=True)
class ZipConfig:
    method: str = "mtz"
    matching: str = "greedy"
    # exact: the unfolded k·k·C_in patch Hessian, what the method defines.
    hessian: str = "exact"
    # auto: exact below AUTO_EXACT_MAX_DIM (mtz_core.hessian), one block per position above.
    flatten_hessian: str = "auto"
    # λ = damping · trace(H)/D per task: λ the size of H's mean eigenvalue. Chosen on the
    # validation split (docs/results.md, the damping table; python -m experiments.paper): on
    # MNIST 0–4 vs 5–9 LeNet-300-100 pairs fully zipped and retrained, 1.0 gives the best mean
    # validation accuracy (98.11%; 97.83% at 1e-4 and at 10). Weak damping lets the merge
    # overfit the Hessian samples: with 256 samples per task and 1e-4 the merged weights are
    # 11.6× the originals and the error on validation images 410× the one on the Hessian samples
    # (0.90× and 1.6× at 1.0). 0 is exact (pseudo-inverse forms); "auto" picks, per layer, the
    # factor of AUTO_DAMPING_GRID with the least error on held-out calibration samples.
    damping: float | str = 1.0
    seed: int = 0
    # fold: batch norm folded into the layer before it (one normalisation for all tasks);
    # keep: every task keeps its own norm after every hidden layer (mtz_core.norms).
    batch_norm: str = "fold"
    # with batch_norm="keep": after each zipped layer, re-estimate that layer's per-task norm
    # statistics on each task's calibration data (REPAIR; ZipIt!'s reset of the statistics).
    recalibrate: bool = False
    # mtz only: a unit may also merge with a unit of its own model (A–A pairs cost the exact
    # increase of that task's layer error; mtz_core.clusters). Off by default: measured on
    # validation data in docs/results.md.
    within_model: bool = False
    # method="zipit": the paper's α (a merged unit's similarities are scaled by α before it
    # merges again; ≤ 0: never again) and β (each model merges at most β·m/2 pairs of its own
    # units). The defaults are ZipIt!'s code's; experiments validate them.
    # mtz / mtz-avg, research option: rank pairs by the layer error weighted by how much each
    # task's loss cares about each unit (the diagonal Fisher of the layer's outputs): pair
    # (i, j) costs d[i, j] · 2 g_i g_j / (g_i + g_j), exact when H_A = H_B. Merged weights
    # and recorded errors stay the plain ones. Off: measured in docs/results-peer.md.
    output_weighted: bool = False
    zipit_alpha: float = 0.3
    zipit_beta: float = 0.125
    # T ≥ 3 models, the paper's scheme: each step matches model t's units against every unit of
    # models 0 … t−1, shared or one model's own, so units may be shared by a subset of the tasks
    # (mtz_core.subsets; stored as mtz_core.pools). Off: every shared unit is shared by all T.
    # Chains with batch norm folded, method 'mtz', a fixed damping. Measured in
    # docs/results-many.md.
    subsets: bool = False

    @staticmethod
    def default_damping() -> float:
        return ZipConfig.damping

    def __post_init__(self) -> None:
        for name, allowed in (
            ("method", METHODS),
            ("matching", MATCHINGS),
            ("hessian", CONV_HESSIANS),
            ("flatten_hessian", FLATTEN_HESSIANS),
            ("batch_norm", BATCH_NORMS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {list(allowed)}")
        d = self.damping
        if d != "auto":
            if isinstance(d, bool) or not isinstance(d, Real) or not math.isfinite(d) or d < 0:
                raise ValueError(f"damping must be a finite number >= 0 or 'auto', got {d!r}")
            object.__setattr__(self, "damping", float(d))
        if not isinstance(self.recalibrate, bool):
            raise ValueError(f"recalibrate must be True or False, got {self.recalibrate!r}")
        if self.recalibrate and self.batch_norm != "keep":
            raise ValueError(
                "recalibrate=True re-estimates kept batch norms; it needs batch_norm='keep'"
            )
        if not isinstance(self.within_model, bool):
            raise ValueError(f"within_model must be True or False, got {self.within_model!r}")
        if self.within_model and self.method != "mtz":
            raise ValueError(f"within_model=True is an option of method 'mtz', not {self.method!r}")
        if not isinstance(self.output_weighted, bool):
            raise ValueError(f"output_weighted must be True or False, got {self.output_weighted!r}")
        if self.output_weighted and (self.method not in ("mtz", "mtz-avg") or self.within_model):
            raise ValueError(
                "output_weighted=True weighs MTZ's pair costs: methods 'mtz' and 'mtz-avg' "
                f"without within_model, not method={self.method!r}"
                + (" with within_model=True" if self.within_model else "")
            )
        if not isinstance(self.subsets, bool):
            raise ValueError(f"subsets must be True or False, got {self.subsets!r}")
        if self.subsets and (self.method != "mtz" or self.within_model or self.output_weighted):
            raise ValueError(
                "subsets=True is an option of method 'mtz' without within_model or "
                f"output_weighted; got method={self.method!r}, within_model={self.within_model}, "
                f"output_weighted={self.output_weighted}"
            )
        if self.subsets and self.damping == "auto":
            raise ValueError("subsets=True takes a fixed damping factor, not 'auto'")
        for name in ("zipit_alpha", "zipit_beta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
            object.__setattr__(self, name, float(v))
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
