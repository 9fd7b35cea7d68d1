"""What a zip did: one `LayerRecord` per zipped layer, the `ZipResult` of a whole zip, and the
`SharePreview` of what zipping the next layer would do at every share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .architecture import Architecture
from .config import ZipConfig
from .training import TrainReport
from .zipped import ZippedNet

__all__ = ["LayerRecord", "ZipResult", "SharePreview"]


@dataclass
class LayerRecord:
    """What zipping one layer did. Neuron indices are in the models' own numbering.

    Damping steers the choice of pairs (`cost`, `pair_costs` are the damped MTZ costs) and the
    merged weights; the errors are never damped: `pair_errors` and `predicted_error` are the
    increase of E_A + E_B that the weights actually applied cause on the Hessian samples, for
    every method, layout and damping (closed form from the exact Hessians; measured by one pass
    over the samples for the blocked layouts, whose Hessians drop cross-block terms).
    """

    name: str
    index: int
    kind: str  # "linear" | "conv"
    n_a: int
    n_b: int
    shared_inputs: int  # s: the shared input units the cost and the shared weights cover
    per_unit: int  # weights per (neuron, input unit): k·k for a conv, positions after a flatten
    bias: bool  # the layer has a bias (shared neurons share it)
    share: float | None  # the fraction asked for; None when k= or pairs= set the count
    pairs: np.ndarray  # int64 (k, 2): column 0 neuron of A, column 1 neuron of B
    cost: np.ndarray  # float64 (n_a, n_b): the damped MTZ cost d[i, j], whatever the method
    pair_costs: np.ndarray  # float64 (k,): cost[pairs[:, 0], pairs[:, 1]]
    pair_errors: np.ndarray  # float64 (k,): E_A + E_B increase each applied merge causes
    predicted_error: float  # Σ pair_errors: the increase of E_A + E_B on the Hessian samples
    method: str
    matching: str
    hessian: str  # "exact" | "channel" | "block"
    hessian_dim: int  # side of one Hessian block, with the bias entry
    hessian_blocks: int  # K: blocks the incoming weights split into (1 for the exact kinds)
    damping: float  # the factor used (the chosen one with damping="auto")
    lambdas: tuple[float, ...]  # λ added to each task's Hessian (one per task)
    n_samples: tuple[int, ...]  # calibration samples in each task's Hessians (one per task)
    pseudo_inverse: bool = False  # H_A + H_B was singular: the pseudo-inverse forms were used
    seconds: dict[str, float] = field(default_factory=dict)
    # measured E_A + E_B increase on held-out data (same units as predicted_error), when given
    heldout_error: float | None = None
    # damping="auto": {factor: held-out layer error of the merge it gives}
    damping_scores: dict[float, float] | None = None
    retraining: TrainReport | None = None
    # a residual group: its member layers (one matching), and the layers whose already-shared
    # rows were re-merged over the inputs this step shared, with the E_A + E_B increase each
    # caused (included in predicted_error; pair_errors sum the members' errors)
    members: tuple[str, ...] = ()
    remerged: dict[str, float] = field(default_factory=dict)
    saved: int | None = None  # parameters the step saved, counted on the network
    # more than two models: every model's width; pairs then has one column per model, `cost`
    # is the first two models' matrix and pair_costs the damped cost of each whole tuple
    widths: tuple[int, ...] = ()
    # within-model merges or zipit (mtz_core.clusters): each task's unit -> merged unit
    # (int64 per task; units 0..n_shared-1 are shared), and how many are shared. `pairs` then
    # lists the shared units made of exactly one unit per task; `pair_costs` / `pair_errors`
    # are per merged unit of more than one member, in merge id order (see `merged_units`)
    clusters: tuple[np.ndarray, ...] | None = None
    n_shared: int | None = None
    # subsets=True (units shared by some of the tasks, mtz_core.subsets): every unit of the
    # zipped layer in its order, int64 (units, T): each task's member, -1 where the task does
    # not use the unit. `pairs` then lists the units of two or more tasks (with their -1s),
    # `pair_costs` their summed stage costs and `pair_errors` their errors; `cost` is the first
    # two models' matrix
    units: np.ndarray | None = None

    @property
    def k(self) -> int:
        """Shared units: pairs, or shared clusters (some may hold several units per task)."""
        if self.n_shared is not None:
            return self.n_shared
        return int(self.pairs.shape[0])

    def saved_parameters(self) -> int:
        """Parameters this step saved: counted on the network before and after it when
        recorded (every member and re-merged reader), else k·(s·K + 1), without the 1 when
        the layer has no bias (one layer)."""
        if self.saved is not None:
            return self.saved
        return self.k * (self.shared_inputs * self.per_unit + int(self.bias))

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
            "pseudo_inverse": self.pseudo_inverse,
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
    def originals(self) -> int:
        """Parameters of all the original models together (a + b, + c … for more tasks)."""
        return sum(v for k, v in self.params.items() if k != "zipped")

    @property
    def saved(self) -> int:
        """Parameters saved against keeping every model: a + b (+ …) − zipped."""
        return self.originals - self.params["zipped"]

    @property
    def saved_fraction(self) -> float:
        """saved / (a + b + …): the one name for parameters saved everywhere."""
        return self.saved / self.originals

    @property
    def retrain_iterations(self) -> int:
        return sum(r.retraining.iterations for r in self.layers if r.retraining is not None)

    @property
    def retrain_samples(self) -> int:
        return sum(r.retraining.samples for r in self.layers if r.retraining is not None)


@dataclass
class SharePreview:
    """What zipping the next layer would do at every share k = 0 … m (m = min(n_a, n_b)):
    `predicted[k]` is the predicted error of the layer itself that `step(k=k)` would record,
    `pairs(k)` its pairs. In a residual network, layers reading the zipped units may already
    share rows (`remerges`, their names): the step then also re-merges those rows and adds
    that error to its record's `predicted_error`; the preview leaves it out (it depends on the
    network after the zip), so it equals the record only when `remerges` is empty.

    `cost` is the damped MTZ cost matrix at the damping used for a full share; `damping[k]`
    the factor used at k (they differ only with damping="auto"); `orders` the full pick order
    for each factor tried.
    """

    name: str
    index: int
    method: str
    n_a: int
    n_b: int
    cost: np.ndarray
    predicted: np.ndarray  # float64 (m + 1,)
    damping: np.ndarray  # float64 (m + 1,)
    orders: dict[float, np.ndarray]  # factor -> int64 (m, 2)
    remerges: tuple[str, ...] = ()  # readers whose shared rows the step re-merges too

    @property
    def max_k(self) -> int:
        return int(self.predicted.shape[0] - 1)

    def pairs(self, k: int) -> np.ndarray:
        """The pairs `step(k=k)` would take, in pick order."""
        if not 0 <= int(k) <= self.max_k:
            raise ValueError(f"k={k} is out of range; allowed 0 <= k <= {self.max_k}")
        return self.orders[float(self.damping[int(k)])][: int(k)]
