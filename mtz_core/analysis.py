"""One layer's analysis: Hessians, incoming vectors, and the algebra per damping factor.

A `LayerAnalysis` is computed once per layer and network state and reused: re-stepping a layer
with another share, previewing every share, and damping="auto" (which tries several factors) all
read the same Hessians. Choosing pairs and merging them for a method live here too, so the
session only orchestrates.

Damping steers the choice of pairs and the merged weights; it never enters a reported error:
`model_errors` uses the undamped Hessians.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .batches import all_finite
from .config import AUTO_DAMPING_GRID, ZipConfig
from .costs import SharingOperator, average_merge, merge_error, sharing_operator, squared_distance
from .hessian import AUTO_EXACT_MAX_DIM, LayerHessian
from .matching import greedy_pairs, optimal_pairs
from .scaled import ScaledSharing, scaled_error, scaled_sharing
from .zipped import ZippedLayer

__all__ = ["DampingVariant", "LayerAnalysis", "GroupAnalysis", "GroupVariant", "hessian_kind"]


def hessian_kind(layer: ZippedLayer, config: ZipConfig) -> str:
    """Which Hessian a layer gets: the conv option, exact for plain linear layers, and for a
    linear layer after a flatten exact below `AUTO_EXACT_MAX_DIM` (auto) or as asked."""
    spec, s = layer.spec, layer.sizes.in_shared
    if spec.kind == "conv":
        return config.hessian
    if spec.positions == 1:
        return "exact"
    if config.flatten_hessian == "auto":
        return "exact" if s * spec.positions + 1 <= AUTO_EXACT_MAX_DIM else "block"
    return config.flatten_hessian


@dataclass
class DampingVariant:
    """The algebra for one damping factor: damped Hessians, the sharing operator, the costs."""

    damping: float
    damped_a: LayerHessian
    damped_b: LayerHessian
    lambdas: tuple[float, float]
    op: SharingOperator | ScaledSharing | None  # None: nothing to merge (`LayerAnalysis.empty`)
    cost: torch.Tensor | None  # None when the analysis was made without costs


@dataclass
class LayerAnalysis:
    """Hessians (and, for damping="auto", held-out ones) and incoming vectors of one layer.

    `scales` (per task, one per unit) marks a layer whose batch norm is kept per task: costs,
    merges and errors are then those of `mtz_core.scaled` (each task's output change scaled by
    its norm, each task's running mean re-centred).
    """

    name: str
    kind: str
    h_a: LayerHessian
    h_b: LayerHessian
    held: tuple[LayerHessian, LayerHessian] | None
    va: torch.Tensor
    vb: torch.Tensor
    seconds: dict[str, float]
    variants: dict[float, DampingVariant] = field(default_factory=dict)
    scales: tuple[torch.Tensor, torch.Tensor] | None = None
    #: False for merges of given pairs (re-merges): no N_A × N_B cost matrix (`cost` None)
    with_costs: bool = True

    @property
    def full_share(self) -> int:
        return min(len(self.va), len(self.vb))

    @property
    def exact(self) -> bool:
        """The Hessians are the exact ones (one block): `model_errors` is then the exact
        increase of E_A + E_B on the Hessian samples."""
        return self.h_a.k == 1 or self.empty

    @property
    def empty(self) -> bool:
        """No shared inputs and no bias (a residual stream's layer whose inputs are not zipped
        yet): a shared neuron shares nothing yet, and costs nothing."""
        return self.va.shape[1] == 0

    def variant(self, damping: float) -> DampingVariant:
        if damping in self.variants:
            return self.variants[damping]
        damped_a, lam_a = self.h_a.damped(damping)
        damped_b, lam_b = self.h_b.damped(damping)
        op: SharingOperator | ScaledSharing | None
        if self.empty:  # nothing to merge: every pair costs 0
            op = None
            cost = self.va.new_zeros((len(self.va), len(self.vb)))
        elif self.scales is None:
            op = sharing_operator(damped_a, damped_b, name=self.name)
            cost = op.cost_matrix(self.va, self.vb) if self.with_costs else None
        else:
            op = scaled_sharing(damped_a, damped_b)
            cost = op.cost_matrix(self.va, self.vb, *self.scales) if self.with_costs else None
        if cost is not None and not all_finite(cost):
            raise ValueError(
                f"{self.name}: the cost matrix has NaN or Inf entries (activations overflowed?)"
            )
        self.variants[damping] = DampingVariant(
            damping, damped_a, damped_b, (lam_a, lam_b), op, cost
        )
        return self.variants[damping]

    def choose(
        self, variant: DampingVariant, k: int, config: ZipConfig, index: int
    ) -> torch.Tensor:
        """k pairs by the method: MTZ costs, incoming-vector distance, or seeded random.

        Greedy and random picks are prefixes of the full-share order: the first k of the pairs
        for k + 1 are the pairs for k (what `ZipSession.preview` relies on).
        """
        return choose_pairs(
            variant.cost, lambda: squared_distance(self.va, self.vb), k, config, index
        )

    def merge(self, variant: DampingVariant, pairs: torch.Tensor, method: str) -> torch.Tensor:
        """Merged vectors for the pairs: Hessian-weighted for mtz, the plain average otherwise."""
        a, b = self.va[pairs[:, 0]], self.vb[pairs[:, 1]]
        if method != "mtz" or self.empty:
            return average_merge(a, b)
        if self.scales is None:
            return variant.op.merge(a, b)
        return variant.op.merge(a, b, *self.pair_scales(pairs))

    def pair_scales(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept norms' scales s_A, s_B of each pair's units."""
        if self.scales is None:
            raise ValueError(f"{self.name} keeps no batch norm")
        return self.scales[0][pairs[:, 0]], self.scales[1][pairs[:, 1]]

    def _errors(
        self, merged: torch.Tensor, pairs: torch.Tensor, h_a: LayerHessian, h_b: LayerHessian
    ) -> torch.Tensor:
        a, b = self.va[pairs[:, 0]], self.vb[pairs[:, 1]]
        if self.empty:
            return merged.new_zeros(merged.shape[0])
        if self.scales is None:
            return merge_error(merged, a, b, h_a, h_b)
        return scaled_error(merged, a, b, *self.pair_scales(pairs), h_a, h_b)

    def model_errors(self, merged: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Per pair, ½(w−a)ᵀH_A(w−a) + ½(w−b)ᵀH_B(w−b) with the *undamped* Hessians (for a
        kept norm, ½ s_A²(w−a)ᵀΣ_A(w−a) + ½ s_B²(w−b)ᵀΣ_B(w−b): the error after re-centring)."""
        return self._errors(merged, pairs, self.h_a, self.h_b)

    def mean_shifts(self, merged: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """(k × 2) the change of each task's mean pre-norm output, (w − v_t)·[μ_t; 1], on the
        Hessian samples: what the kept norms' running means absorb (exact kinds)."""
        cols = []
        for t, (v, h) in enumerate(((self.va, self.h_a), (self.vb, self.h_b))):
            cols.append((merged - v[pairs[:, t]]) @ h.vecs[:, 0])
        return torch.stack(cols, dim=1)

    def held_errors(self, merged: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Per pair, the same error on the samples damping="auto" held out of the Hessians."""
        if self.held is None:
            raise ValueError("damping selection needs held-out Hessians")
        return self._errors(merged, pairs, *self.held)


def choose_pairs(
    cost: torch.Tensor,
    distance: Callable[[], torch.Tensor],
    k: int,
    config: ZipConfig,
    index: int,
) -> torch.Tensor:
    """k pairs by the method: MTZ costs, incoming-vector distance, or seeded random.

    Greedy and random picks are prefixes of the full-share order: the first k of the pairs
    for k + 1 are the pairs for k (what `ZipSession.preview` relies on).
    """
    solver = greedy_pairs if config.matching == "greedy" else optimal_pairs
    if config.method in ("mtz", "mtz-avg"):
        return solver(cost, k)
    if config.method == "euclidean":
        return solver(distance(), k)
    n_a, n_b = cost.shape
    rng = np.random.default_rng([config.seed, index])
    rows = rng.permutation(n_a)[:k]
    cols = rng.permutation(n_b)[:k]
    return torch.as_tensor(np.stack([rows, cols], axis=1), dtype=torch.long)


def best_damping(scores: dict[float, float]) -> float:
    """The factor with the least held-out error; ties go to the stronger damping."""
    return min(scores, key=lambda d: (scores[d], -d))


@dataclass
class GroupVariant:
    """One damping factor's algebra for every member of a group; `cost` is their sum."""

    damping: float
    members: list[DampingVariant]
    cost: torch.Tensor

    @property
    def lambdas(self) -> tuple[float, float]:
        """The first member's λ per task (a chain's layer: its only one)."""
        return self.members[0].lambdas

    @property
    def pseudo_inverse(self) -> bool:
        return any(getattr(v.op, "pseudo_inverse", False) for v in self.members)


@dataclass
class GroupAnalysis:
    """The analyses of a group's member layers (one for a chain's layer; every layer writing a
    residual stream otherwise). One matching serves them all, so a pair's cost is the sum of
    the members' costs, each from its own Hessians and kept norm."""

    name: str
    members: list[tuple[int, LayerAnalysis]]  # (layer index, analysis)

    @property
    def first(self) -> LayerAnalysis:
        return self.members[0][1]

    @property
    def full_share(self) -> int:
        return self.first.full_share

    @property
    def exact(self) -> bool:
        return all(a.exact for _, a in self.members)

    @property
    def seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for _, a in self.members:
            for key, value in a.seconds.items():
                out[key] = out.get(key, 0.0) + value
        return out

    def variant(self, damping: float) -> GroupVariant:
        parts = [a.variant(damping) for _, a in self.members]
        cost = parts[0].cost
        for v in parts[1:]:
            cost = cost + v.cost
        return GroupVariant(damping, parts, cost)

    def choose(self, variant: GroupVariant, k: int, config: ZipConfig, index: int) -> torch.Tensor:
        """k pairs by the method, on the summed costs (summed distances for euclidean)."""

        def distance() -> torch.Tensor:
            return sum(squared_distance(a.va, a.vb) for _, a in self.members)

        return choose_pairs(variant.cost, distance, k, config, index)

    def merge(self, variant: GroupVariant, pairs: torch.Tensor, method: str) -> list[torch.Tensor]:
        """Each member's merged vectors for the pairs."""
        return [a.merge(v, pairs, method) for (_, a), v in zip(self.members, variant.members)]

    def held_errors(self, merged: list[torch.Tensor], pairs: torch.Tensor) -> torch.Tensor:
        return sum(a.held_errors(m, pairs) for (_, a), m in zip(self.members, merged))

    def select_damping(
        self,
        k: int,
        config: ZipConfig,
        index: int,
        pairs: torch.Tensor | None = None,
        check: Callable[[], None] | None = None,
    ) -> tuple[float, dict[float, float]]:
        """damping="auto" for the group: per factor, match on the summed costs, merge every
        member, and score by the members' summed held-out error."""
        scores: dict[float, float] = {}
        for damping in AUTO_DAMPING_GRID:
            if check is not None:
                check()
            variant = self.variant(damping)
            chosen = pairs if pairs is not None else self.choose(variant, k, config, index)
            chosen = chosen.to(self.first.va.device)
            merged = self.merge(variant, chosen, config.method)
            scores[damping] = float(self.held_errors(merged, chosen).sum())
        return best_damping(scores), scores


@dataclass
class ManyAnalysis:
    """A group's analyses for T ≥ 3 models: each member's Hessians and incoming vectors per
    task. `plan` pairs the first two models' units by the summed MTZ cost, then matches every
    further model's units to the merged ones, whose Hessian is the sum of the merged tasks'
    Hessians (exact: Σ_t ½(w − v_t)ᵀH_t(w − v_t) = ½(w − w̄)ᵀ(ΣH_t)(w − w̄) + const, with w̄
    the merged vector), and merges step by step, which gives the T-way Hessian-weighted
    average (ΣH_t)⁻¹ ΣH_t v_t (damping adds λ_t I to each H_t alike)."""

    name: str
    members: list[tuple[int, str, list[LayerHessian], list[torch.Tensor]]]
    seconds: dict[str, float]

    @property
    def exact(self) -> bool:
        return all(hs[0].k == 1 or vs[0].shape[1] == 0 for _, _, hs, vs in self.members)

    def _stage(self, hs_a, hs_b, vs_a, vs_b) -> GroupAnalysis:
        return GroupAnalysis(
            self.name,
            [
                (i, LayerAnalysis(self.name, kind, ha, hb, None, va, vb, {}))
                for (i, kind, _, _), ha, hb, va, vb in zip(self.members, hs_a, hs_b, vs_a, vs_b)
            ],
        )

    def plan(
        self,
        count: int,
        pairs: torch.Tensor | None,
        config: ZipConfig,
        index: int,
        damping: float,
    ) -> tuple[torch.Tensor, list[torch.Tensor], GroupVariant, torch.Tensor, bool]:
        """(pairs k × T, each member's merged vectors, the first two models' variant, each
        tuple's damped cost, whether any solve fell back to a pseudo-inverse)."""
        hs = [m[2] for m in self.members]
        vs = [m[3] for m in self.members]
        n_tasks = len(hs[0])
        first = self._stage(
            [h[0] for h in hs], [h[1] for h in hs], [v[0] for v in vs], [v[1] for v in vs]
        )
        variant = first.variant(damping)
        if pairs is None:
            chosen = first.choose(variant, count, config, index)
        else:
            chosen = pairs[:, :2]
        chosen = chosen.to(variant.cost.device)
        k = chosen.shape[0]
        cost = variant.cost[chosen[:, 0], chosen[:, 1]]
        merged = first.merge(variant, chosen, config.method)
        pinv = variant.pseudo_inverse
        columns = [chosen[:, 0], chosen[:, 1]]
        sums = [h[0].plus(h[1]) for h in hs]
        rows = torch.arange(k, device=chosen.device)
        for t in range(2, n_tasks):
            stage = self._stage(sums, [h[t] for h in hs], merged, [v[t] for v in vs])
            v_t = stage.variant(damping)
            if pairs is None:
                q = stage.choose(v_t, k, config, index * 1000 + t)
                col = q[torch.argsort(q[:, 0]), 1].to(rows.device)
            else:
                col = pairs[:, t].to(rows.device)
            fixed = torch.stack([rows, col], dim=1)
            cost = cost + v_t.cost[rows, col]
            merged = stage.merge(v_t, fixed, config.method)
            pinv = pinv or v_t.pseudo_inverse
            sums = [s.plus(h[t]) for s, h in zip(sums, hs)]
            columns.append(col)
        chosen = torch.stack(columns, dim=1)
        if config.method != "mtz":  # the plain average of all T vectors
            merged = [
                torch.stack([v[t][chosen[:, t]] for t in range(n_tasks)]).mean(dim=0) for v in vs
            ]
        return chosen, merged, variant, cost, pinv

    def errors(self, merged: list[torch.Tensor], pairs: torch.Tensor) -> torch.Tensor:
        """Per tuple, Σ_members Σ_t ½(w − v_t)ᵀH_t(w − v_t) with the undamped Hessians (the
        exact increase of Σ_t E_t on the Hessian samples for the exact kinds)."""
        out = None
        for (_, _, hs, vs), w in zip(self.members, merged):
            for t, (h, v) in enumerate(zip(hs, vs)):
                if v.shape[1] == 0:
                    e = w.new_zeros(w.shape[0])
                else:
                    e = 0.5 * h.quad(w - v[pairs[:, t]])
                out = e if out is None else out + e
        return out
