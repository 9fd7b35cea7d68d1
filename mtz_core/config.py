"""The options of a zip, validated once, with the reason beside each default."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

__all__ = [
    "ZipConfig",
    "METHODS",
    "MATCHINGS",
    "CONV_HESSIANS",
    "FLATTEN_HESSIANS",
    "AUTO_DAMPING_GRID",
    "AUTO_HOLDOUT_EVERY",
]

#: mtz: Hessian cost pairs + Hessian-weighted merge (the method). The rest are baselines at equal
#: shares: mtz-avg (MTZ pairs, plain average), euclidean (closest incoming vectors, plain
#: average), random (random pairs, plain average).
METHODS = ("mtz", "mtz-avg", "euclidean", "random")
#: greedy is the method's own choice; optimal (min-cost k pairs) is a comparison.
MATCHINGS = ("greedy", "optimal")
CONV_HESSIANS = ("exact", "channel")
FLATTEN_HESSIANS = ("auto", "exact", "block")
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
    # λ = damping · trace(H)/dim per task: λ the size of H's mean eigenvalue. Measured on
    # MNIST 0–4 vs 5–9 (python -m experiments.damping_probe): weak damping (1e-4) lets the
    # merge overfit the Hessian samples (merged weights 4–10× the originals, held-out layer
    # error up to 300× the predicted one: docs/results.md); at 1.0 the full zip keeps 97.1%
    # mean accuracy before retraining (96.9% at 0.1), and MTZ's lead over MTZ pairs with plain
    # averaging grows from 0.9 to 2.0 points. 0 is exact (pseudo-inverse forms); "auto" picks, per
    # layer, the factor of AUTO_DAMPING_GRID with the least held-out layer error.
    damping: float | str = 1.0
    seed: int = 0

    @staticmethod
    def default_damping() -> float:
        return ZipConfig.damping

    def __post_init__(self) -> None:
        for name, allowed in (
            ("method", METHODS),
            ("matching", MATCHINGS),
            ("hessian", CONV_HESSIANS),
            ("flatten_hessian", FLATTEN_HESSIANS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {list(allowed)}")
        d = self.damping
        if d != "auto":
            if isinstance(d, bool) or not isinstance(d, Real) or not math.isfinite(d) or d < 0:
                raise ValueError(f"damping must be a finite number >= 0 or 'auto', got {d!r}")
            object.__setattr__(self, "damping", float(d))
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
