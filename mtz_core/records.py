"""What a zip did: one `LayerRecord` per zipped layer, and the `ZipResult` of a whole zip."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .architecture import Architecture
from .config import ZipConfig
from .training import TrainReport
from .zipped import ZippedNet

__all__ = ["LayerRecord", "ZipResult"]


@dataclass
class LayerRecord:
    """What zipping one layer did. Neuron indices are in the models' own numbering."""

    name: str
    index: int
    kind: str  # "linear" | "conv"
    n_a: int
    n_b: int
    shared_inputs: int  # s: the shared input units the cost and the shared weights cover
    per_unit: int  # weights per (neuron, input unit): k·k for a conv, positions after a flatten
    share: Any  # what was asked for: a fraction, a count, or "pairs"
    pairs: np.ndarray  # int64 (k, 2): column 0 neuron of A, column 1 neuron of B
    cost: np.ndarray  # float64 (n_a, n_b): the MTZ cost d[i, j], whatever the method
    pair_costs: np.ndarray  # float64 (k,): cost[pairs[:, 0], pairs[:, 1]]
    pair_errors: np.ndarray  # float64 (k,): predicted error of each applied merge
    predicted_error: float  # Σ pair_errors: predicted increase of E_A + E_B (Hessian data)
    method: str
    matching: str
    hessian: str  # "exact" | "channel" | "block"
    hessian_dim: int  # D, with the bias entry
    hessian_blocks: int
    damping: float  # the factor used (the chosen one with damping="auto")
    lambdas: tuple[float, float]  # mean λ added per task
    n_samples: tuple[int, int]  # calibration samples per task in the Hessians
    seconds: dict[str, float] = field(default_factory=dict)
    # measured E_A + E_B increase on held-out data (same units as predicted_error), when given
    heldout_error: float | None = None
    # damping="auto": {factor: held-out layer error of the merge it gives}
    damping_scores: dict[float, float] | None = None
    retraining: TrainReport | None = None

    @property
    def k(self) -> int:
        return int(self.pairs.shape[0])

    def saved_parameters(self) -> int:
        """Parameters this layer's sharing saves: k·(s·K + 1)."""
        return self.k * (self.shared_inputs * self.per_unit + 1)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary (no matrices) for reports and tables."""
        return {
            "name": self.name,
            "kind": self.kind,
            "n_a": self.n_a,
            "n_b": self.n_b,
            "shared": self.k,
            "shared_inputs": self.shared_inputs,
            "predicted_error": self.predicted_error,
            "heldout_error": self.heldout_error,
            "hessian": self.hessian,
            "damping": self.damping,
            "saved_parameters": self.saved_parameters(),
            "retrain_iterations": 0 if self.retraining is None else self.retraining.iterations,
            "seconds": self.seconds,
        }


@dataclass
class ZipResult:
    """A zipped network, what each layer did, and the parameter counts."""

    model: ZippedNet
    layers: list[LayerRecord]
    params: dict[str, int]
    architecture: Architecture
    config: ZipConfig

    @property
    def saved(self) -> int:
        """Parameters saved against keeping both models: a + b − zipped."""
        return self.params["a"] + self.params["b"] - self.params["zipped"]

    @property
    def saved_fraction(self) -> float:
        """saved / (a + b): the one name for parameters saved everywhere."""
        return self.saved / (self.params["a"] + self.params["b"])

    @property
    def retrain_iterations(self) -> int:
        return sum(r.retraining.iterations for r in self.layers if r.retraining is not None)

    @property
    def retrain_samples(self) -> int:
        return sum(r.retraining.samples for r in self.layers if r.retraining is not None)
