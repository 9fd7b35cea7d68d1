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
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .batches import all_finite
from .config import AUTO_DAMPING_GRID, ZipConfig
from .costs import SharingOperator, average_merge, merge_error, sharing_operator, squared_distance
from .hessian import AUTO_EXACT_MAX_DIM, LayerHessian
from .matching import greedy_pairs, optimal_pairs
from .scaled import ScaledSharing, centred, scaled_error, scaled_sharing
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
    #: output_weighted: each pair's weight 2 g_i g_j / (g_i + g_j) on the summed costs when
    #: choosing (None: the plain costs)
    pair_weights: torch.Tensor | None = None

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

        cost = variant.cost if self.pair_weights is None else variant.cost * self.pair_weights
        return choose_pairs(cost, distance, k, config, index)

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


#: the most work (k · D³ floating-point operations per member and stage) a kept-norm stage for a
#: third or later model may take: every merged tuple has its own Hessian there (one generalised
#: eigendecomposition each), a few minutes on 2 cores
KEEP_MANY_MAX_FLOPS = 2e12


@dataclass
class ManyAnalysis:
    """A group's analyses for T ≥ 3 models: each member's Hessians and incoming vectors per
    task, and with a kept norm each task's unit scales. `plan` pairs the first two models'
    units by the summed MTZ cost, then matches every further model's units to the merged ones,
    whose Hessian is the sum of the merged tasks' Hessians (exact: Σ_t ½(w − v_t)ᵀH_t(w − v_t)
    = ½(w − w̄)ᵀ(ΣH_t)(w − w̄) + const, with w̄ the merged vector), and merges step by step,
    which gives the T-way Hessian-weighted average (ΣH_t)⁻¹ ΣH_t v_t (damping adds λ_t I to
    each H_t alike). With a kept norm H_t = s_t² Σ_t depends on the unit's scale s_t, so the
    merged side's Hessian differs per tuple (`_scaled_stage`)."""

    name: str
    members: list[tuple[int, str, list[LayerHessian], list[torch.Tensor]]]
    seconds: dict[str, float]
    scales: list[list[torch.Tensor] | None] = field(default_factory=list)  # per member, per task
    held: list[list[LayerHessian]] | None = None  # per member, per task: damping="auto"'s

    def __post_init__(self) -> None:
        if not self.scales:
            self.scales = [None] * len(self.members)

    def select_damping(
        self,
        count: int,
        pairs: torch.Tensor | None,
        config: ZipConfig,
        index: int,
        check: Callable[[], None] | None = None,
    ) -> tuple[float, dict[float, float]]:
        """damping="auto" for T models: per factor, the whole stage-wise plan (matching and
        merge), scored by Σ_t of the error its merged weights cause on the samples held out
        of the Hessians; the least wins, ties to the stronger damping."""
        if self.held is None:
            raise ValueError("damping selection needs held-out Hessians")
        scores: dict[float, float] = {}
        for damping in AUTO_DAMPING_GRID:
            if check is not None:
                check()
            chosen, merged, _, _, _ = self.plan(count, pairs, config, index, damping)
            scores[damping] = float(self.errors(merged, chosen, self.held).sum())
        return best_damping(scores), scores

    @property
    def exact(self) -> bool:
        return all(hs[0].k == 1 or vs[0].shape[1] == 0 for _, _, hs, vs in self.members)

    def _stage(self, hs_a, hs_b, vs_a, vs_b, scales=None) -> GroupAnalysis:
        scales = scales or [None] * len(self.members)
        return GroupAnalysis(
            self.name,
            [
                (i, LayerAnalysis(self.name, kind, ha, hb, None, va, vb, {}, scales=sc))
                for (i, kind, _, _), ha, hb, va, vb, sc in zip(
                    self.members, hs_a, hs_b, vs_a, vs_b, scales
                )
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
            [h[0] for h in hs],
            [h[1] for h in hs],
            [v[0] for v in vs],
            [v[1] for v in vs],
            [None if sc is None else (sc[0], sc[1]) for sc in self.scales],
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
            if any(sc is not None for sc in self.scales):
                stage = _ScaledStage(self, t, columns, merged, damping)
            else:
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

    def errors(
        self,
        merged: list[torch.Tensor],
        pairs: torch.Tensor,
        hessians: list[list[LayerHessian]] | None = None,
    ) -> torch.Tensor:
        """Per tuple, Σ_members Σ_t ½(w − v_t)ᵀH_t(w − v_t) with the undamped Hessians (the
        exact increase of Σ_t E_t on the Hessian samples for the exact kinds; `hessians`:
        others per member and task, e.g. the held-out ones); with a kept norm,
        ½ s_t²(w − v_t)ᵀΣ_t(w − v_t), what is left once each running mean absorbs its task's
        mean change (`mean_shifts`)."""
        out = None
        every = hessians or [m[2] for m in self.members]
        for (_, _, _, vs), hs, w, sc in zip(self.members, every, merged, self.scales):
            for t, (h, v) in enumerate(zip(hs, vs)):
                if v.shape[1] == 0:
                    e = w.new_zeros(w.shape[0])
                elif sc is None:
                    e = 0.5 * h.quad(w - v[pairs[:, t]])
                else:
                    s2 = sc[t][pairs[:, t]].square()
                    e = 0.5 * s2 * centred(h).quad(w - v[pairs[:, t]])
                out = e if out is None else out + e
        return out

    def mean_shifts(self, member: int, merged: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """(k × T) the change of each task's mean pre-norm output at member `member`,
        (w − v_t)·[μ_t; 1] on the Hessian samples: what the kept norms' running means absorb."""
        _, _, hs, vs = self.members[member]
        cols = [(merged - v[pairs[:, t]]) @ h.vecs[:, 0] for t, (h, v) in enumerate(zip(hs, vs))]
        return torch.stack(cols, dim=1)

    def pair_scales(self, member: int, pairs: torch.Tensor) -> list[torch.Tensor]:
        """The kept norm's scale s_t of each tuple's unit, per task."""
        sc = self.scales[member]
        if sc is None:
            raise ValueError(f"{self.name} member {member} keeps no batch norm")
        return [s[pairs[:, t]] for t, s in enumerate(sc)]


@dataclass
class _StageVariant:
    cost: torch.Tensor
    pseudo_inverse: bool


class _ScaledStage:
    """Adding task t's model to the merged tuples when some member keeps its norm per task.

    For such a member, tuple u's side has Hessian H_u = Σ_{t'<t} s_t',u² Σ_t' (centred,
    damped), its own per tuple: each tuple gets the two-model scaled form of (H_u, Σ_t) with
    scales (1, s_t,j), one generalised eigendecomposition per tuple (k · D³; refused above
    `KEEP_MANY_MAX_FLOPS`). A member without a kept norm uses the summed Hessians as usual.
    """

    def __init__(self, many: ManyAnalysis, t, columns, merged, damping: float) -> None:
        self.many, self.t, self.columns, self.merged = many, t, columns, merged
        self.damped = [[h.damped(damping)[0] for h in m[2][: t + 1]] for m in many.members]
        k = columns[0].shape[0]
        for (_, _, hs, _), sc in zip(many.members, many.scales):
            d = hs[0].dim
            if sc is not None and k * float(d) ** 3 > KEEP_MANY_MAX_FLOPS:
                raise ValueError(
                    f"{many.name}: batch_norm='keep' for a third or later model costs one "
                    f"generalised eigendecomposition per shared unit, here {k} of side {d} "
                    f"(about {k * float(d) ** 3:.1e} operations, more than the "
                    f"{KEEP_MANY_MAX_FLOPS:.0e} allowed); zip with batch_norm='fold', or fewer "
                    "shared units"
                )

    def _side(self, m: int, u: int) -> LayerHessian:
        """H_u for member m: Σ_{t'<t} s² × task t's damped centred blocks."""
        sc, damped = self.many.scales[m], self.damped[m]
        blocks = sum(
            sc[tt][self.columns[tt][u]].square() * damped[tt].blocks for tt in range(self.t)
        )
        return replace(centred(damped[0]), blocks=blocks)

    def _plain(self, m: int) -> LayerAnalysis:
        _, kind, hs, vs = self.many.members[m]
        total = self.damped[m][0]
        for h in self.damped[m][1 : self.t]:
            total = total.plus(h)
        return LayerAnalysis(
            self.many.name,
            kind,
            total,
            self.damped[m][self.t],
            None,
            self.merged[m],
            vs[self.t],
            {},
        )

    def variant(self, damping: float) -> _StageVariant:
        cost, pinv = None, False
        for m, ((_, _, _, vs), sc) in enumerate(zip(self.many.members, self.many.scales)):
            w, v_t = self.merged[m], vs[self.t]
            if v_t.shape[1] == 0 or w.shape[0] == 0:
                part = w.new_zeros((w.shape[0], v_t.shape[0]))
            elif sc is None:
                # already damped: the plain member's variant at damping 0 adds nothing
                pv = self._plain(m).variant(0.0)
                part, pinv = pv.cost, pinv or getattr(pv.op, "pseudo_inverse", False)
            else:
                ones = w.new_ones(1)
                rows = []
                for u in range(w.shape[0]):
                    op = scaled_sharing(self._side(m, u), self.damped[m][self.t])
                    rows.append(op.cost_matrix(w[u : u + 1], v_t, ones, sc[self.t]))
                    pinv = pinv or op.pseudo_inverse
                part = torch.cat(rows)
            cost = part if cost is None else cost + part
        return _StageVariant(cost, pinv)

    def choose(self, variant: _StageVariant, k: int, config: ZipConfig, index: int):
        def distance() -> torch.Tensor:
            return sum(
                squared_distance(w, m[3][self.t]) for w, m in zip(self.merged, self.many.members)
            )

        return choose_pairs(variant.cost, distance, k, config, index)

    def merge(self, variant: _StageVariant, pairs: torch.Tensor, method: str):
        out = []
        for m, ((_, _, _, vs), sc) in enumerate(zip(self.many.members, self.many.scales)):
            w, v_t = self.merged[m][pairs[:, 0]], vs[self.t][pairs[:, 1]]
            if method != "mtz" or v_t.shape[1] == 0 or w.shape[0] == 0:
                out.append(average_merge(w, v_t))
            elif sc is None:
                la = self._plain(m)
                out.append(la.merge(la.variant(0.0), pairs, method))
            else:
                ones = w.new_ones(1)
                rows = []
                for r in range(pairs.shape[0]):
                    u, j = int(pairs[r, 0]), int(pairs[r, 1])
                    op = scaled_sharing(self._side(m, u), self.damped[m][self.t])
                    rows.append(op.merge(w[r : r + 1], v_t[r : r + 1], ones, sc[self.t][j : j + 1]))
                out.append(torch.cat(rows))
        return out
