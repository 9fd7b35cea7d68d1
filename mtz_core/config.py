"""The options of a zip, validated once, with the reason beside each default."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

__all__ = [
    "TASK_LETTERS",
    "ZipConfig",
    "METHODS",
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
#: average), random (random pairs, plain average).
METHODS = ("mtz", "mtz-avg", "euclidean", "random")
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
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
