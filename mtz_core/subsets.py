"""Costs and merges for units shared by subsets of the tasks (`ZipConfig.subsets`).

The paper zips T ≥ 3 models one at a time: A and B are zipped, then every unit of C may join
any unit of the zipped layer, shared or one task's own, so units end up shared by {A, B, C},
{A, C}, {B, C}, ... (`mtz_core.pools` stores them). We follow that scheme within each layer
step: stage s = 1 … T−1 matches task s's units against every unit built from tasks 0 … s−1.

**Merged rows.** A unit of pool P (its tasks) holds, for each t ∈ P, a member row v_t (task t's
original incoming vector in t's current input layout). Blocks of its weights that several tasks
read (input pool Q with |P ∩ Q| ≥ 2, and the bias when |P| ≥ 2) are *free*; blocks read by one
task keep that task's original weights (the method keeps what is not shared). The free
coordinates z minimise the summed layer error

    Σ_{t∈P} ½ (S_t z − a_t)ᵀ G_t (S_t z − a_t),      a_t = v_t on the free blocks t reads,

G_t task t's Hessian over those coordinates (its other coordinates are unchanged and add
nothing), so M z = Σ_t S_tᵀ G_t a_t with M = Σ_t S_tᵀ G_t S_t: one M per pool for the whole
layer (the Hessians do not depend on the row), every row of the pool solved at once. Two tasks
and one pool {A, B} give MTZ's merge (H_A + H_B)⁻¹(H_A a + H_B b) on the shared inputs.

**Costs.** Adding task s's unit j to unit u of pool P gives pool P' = P ∪ {s}. Over P''s free
coordinates the u side is exactly a quadratic ½ (z − ẑ_u)ᵀ M_u (z − ẑ_u) + c_u (M_u = Σ_{t∈P}
S_tᵀG_tS_t, ẑ_u its minimiser, c_u its minimum), and task s reads a subset w of z. Minimising
over the coordinates s does not read leaves the Schur complement K of M_u on w, so the least
error of the merged unit is c_u + ½ (ŵ_u − a_j)ᵀ K (K + G_s)⁻¹ G_s (ŵ_u − a_j): the two-model MTZ
cost with (ŵ_u, K) on one side, the zipped side's Hessian the exact sum of its tasks' (not the
authors' sum of inverses). The pair's cost is that minus u's error before the merge: c_u − E_u
is the (non-positive) gain of freeing the blocks that become shared, the rest the price of
sharing. With two tasks it is MTZ's cost exactly.

Damping adds λ_t I to each G_t with λ_t = damping · trace(G_t) / dim over the coordinates that
pool reads (as `LayerHessian.damped` does for the shared inputs); costs and merged weights use
the damped G_t, recorded errors the undamped ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .pools import Pool, PoolLayer, PoolSizes, pool_key

__all__ = ["SubsetProblem", "Unit", "plan_units", "build_layers"]

#: a unit of the layer being zipped: its tasks (sorted) and each task's member (original index)
Unit = tuple[tuple[int, ...], dict[int, int]]


@dataclass
class _Layout:
    """The free coordinates of a pool's rows: input pools (q, start in z, length), the bias."""

    blocks: list[tuple[int, int, int]]
    bias: int | None
    dim: int


@dataclass
class SubsetProblem:
    """One layer's data for subset zipping: the input pools, per-unit coordinates (kernel or
    flatten positions), each task's undamped Hessian H_t (D_t × D_t, over all its inputs in
    its layout, bias last) and original rows V_t (n_t × D_t), and the damping factor."""

    in_pools: tuple[Pool, ...]
    per: int
    has_bias: bool
    hessians: Sequence[torch.Tensor]
    rows: Sequence[torch.Tensor]
    damping: float
    _layouts: dict[tuple[int, ...], _Layout] = field(default_factory=dict)
    _reads: dict[tuple[tuple[int, ...], int], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict
    )
    _grams: dict[tuple[tuple[int, ...], int], torch.Tensor] = field(default_factory=dict)
    pseudo_inverse: bool = False

    def task_slices(self, task: int) -> dict[int, tuple[int, int]]:
        """Where each input pool task `task` reads sits in its coordinates: q -> (start, len)."""
        out, offset = {}, 0
        for q, (s, n) in enumerate(self.in_pools):
            if task in s:
                out[q] = (offset, n * self.per)
                offset += n * self.per
        return out

    def layout(self, pool: tuple[int, ...]) -> _Layout:
        if pool not in self._layouts:
            blocks, start = [], 0
            for q, (s, n) in enumerate(self.in_pools):
                if len(set(pool) & set(s)) >= 2:
                    blocks.append((q, start, n * self.per))
                    start += n * self.per
            bias = None
            if self.has_bias and len(pool) >= 2:
                bias, start = start, start + 1
            self._layouts[pool] = _Layout(blocks, bias, start)
        return self._layouts[pool]

    def reads(self, pool: tuple[int, ...], task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z indices, task coordinates) of the free coordinates of `pool` that `task` reads."""
        key = (pool, task)
        if key not in self._reads:
            lay, where = self.layout(pool), self.task_slices(task)
            z, c = [], []
            for q, start, length in lay.blocks:
                if q in where:
                    z.append(torch.arange(start, start + length))
                    c.append(torch.arange(where[q][0], where[q][0] + length))
            if lay.bias is not None:
                z.append(torch.tensor([lay.bias]))
                c.append(torch.tensor([self.hessians[task].shape[0] - 1]))
            dev = self.hessians[task].device
            empty = torch.zeros(0, dtype=torch.long)
            self._reads[key] = (
                (torch.cat(z) if z else empty).to(dev),
                (torch.cat(c) if c else empty).to(dev),
            )
        return self._reads[key]

    def gram(self, pool: tuple[int, ...], task: int, damped: bool = True) -> torch.Tensor:
        """Task `task`'s Hessian over the free coordinates of `pool` it reads (z order)."""
        _, c = self.reads(pool, task)
        h = self.hessians[task][c][:, c]
        if not damped or self.damping == 0 or h.shape[0] == 0:
            return h
        key = (pool, task)
        if key not in self._grams:
            lam = self.damping * float(torch.diagonal(h).sum()) / h.shape[0]
            self._grams[key] = h + lam * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
        return self._grams[key]

    def lam(self, pool: tuple[int, ...], task: int) -> float:
        """λ_t added to task t's Hessian over `pool`'s free coordinates."""
        g, h = self.gram(pool, task), self.gram(pool, task, damped=False)
        return float(g[0, 0] - h[0, 0]) if g.shape[0] else 0.0

    def targets(self, pool: tuple[int, ...], task: int, members: torch.Tensor) -> torch.Tensor:
        """a_t: the members' original rows on the free coordinates of `pool` they read."""
        _, c = self.reads(pool, task)
        return self.rows[task][members.to(self.rows[task].device)][:, c]

    def _solve(self, m: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """M⁻¹ Bᵀ as rows (B: rows × d); the pseudo-inverse when M is singular."""
        chol, info = torch.linalg.cholesky_ex(m)
        if int(info) == 0:
            return torch.cholesky_solve(b.T, chol).T
        self.pseudo_inverse = True
        return (torch.linalg.pinv(m, hermitian=True) @ b.T).T

    def fit(
        self, pool: tuple[int, ...], tasks: Sequence[int], members: Mapping[int, torch.Tensor]
    ) -> torch.Tensor:
        """The free coordinates (rows × dim) minimising Σ_{t∈tasks} ½ (S_t z − a_t)ᵀ G_t (…)
        over `pool`'s layout (damped G_t)."""
        d = self.layout(pool).dim
        n = len(next(iter(members.values())))
        dev, dt = self.hessians[0].device, self.hessians[0].dtype
        m = torch.zeros(d, d, dtype=dt, device=dev)
        b = torch.zeros(n, d, dtype=dt, device=dev)
        for t in tasks:
            z, _ = self.reads(pool, t)
            g = self.gram(pool, t)
            m[z[:, None], z[None, :]] += g
            b[:, z] += self.targets(pool, t, members[t]) @ g
        return self._solve(m, b)

    def objective(
        self,
        pool: tuple[int, ...],
        tasks: Sequence[int],
        members: Mapping[int, torch.Tensor],
        z: torch.Tensor,
        hessians: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per row: Σ_{t∈tasks} ½ (S_t z − a_t)ᵀ G_t (S_t z − a_t); damped G_t, or the given
        undamped `hessians` (the recorded errors; held-out Hessians for held-out errors)."""
        total = z.new_zeros(z.shape[0])
        for t in tasks:
            zi, c = self.reads(pool, t)
            g = self.gram(pool, t) if hessians is None else hessians[t][c][:, c]
            delta = z[:, zi] - self.targets(pool, t, members[t])
            total = total + 0.5 * ((delta @ g) * delta).sum(1)
        return total

    def stage_costs(
        self, pool: tuple[int, ...], members: Mapping[int, torch.Tensor], task: int
    ) -> torch.Tensor:
        """(units of `pool` × units of `task`): the increase of the damped error when task
        `task`'s unit joins each unit (see the module docstring)."""
        new = tuple(sorted((*pool, task)))
        n_new = self.rows[task].shape[0]
        z_hat = self.fit(new, pool, members)
        gain = self.objective(new, pool, members, z_hat)
        if len(pool) > 1:
            gain = gain - self.objective(pool, pool, members, self.fit(pool, pool, members))
        w, c = self.reads(new, task)
        if w.numel() == 0:  # nothing to share but the units themselves (no inputs, no bias)
            return gain[:, None].expand(-1, n_new).clone()
        d = self.layout(new).dim
        mu = z_hat.new_zeros(d, d)
        for t in pool:
            zi, _ = self.reads(new, t)
            mu[zi[:, None], zi[None, :]] += self.gram(new, t)
        rest = torch.ones(d, dtype=torch.bool, device=mu.device)
        rest[w] = False
        y = torch.nonzero(rest).flatten()
        k = mu[w][:, w]
        if y.numel():  # symmetric positive (semi-)definite systems: Cholesky, as in `fit`
            k = k - mu[w][:, y] @ self._solve(mu[y][:, y], mu[w][:, y]).T
        g = self.gram(new, task)
        h_hat = k @ self._solve(k + g, g).T
        h_hat = 0.5 * (h_hat + h_hat.T)
        u = z_hat[:, w]
        a = self.rows[task][:, c]
        qu = ((u @ h_hat) * u).sum(1)
        qa = ((a @ h_hat) * a).sum(1)
        return gain[:, None] + 0.5 * (qu[:, None] + qa[None, :] - 2 * (u @ h_hat) @ a.T)


def plan_units(
    problem: SubsetProblem,
    widths: Sequence[int],
    count: Callable[[int, int, int], int],
    solver: Callable[[torch.Tensor, int], torch.Tensor],
) -> tuple[list[Unit], list[torch.Tensor], dict[int, float]]:
    """The stage-wise matching: stage s matches task s's units against every unit made of
    tasks 0 … s−1 (`count(s, units so far, units of s)` of them, chosen by `solver` on the
    costs). Returns the units (task 0's in its order, then each later task's unmatched units;
    a matched unit keeps its place and gains the task), each stage's cost matrix, and each
    merged unit's summed stage costs (by unit index)."""
    units: list[Unit] = [((0,), {0: j}) for j in range(widths[0])]
    matrices: list[torch.Tensor] = []
    spent: dict[int, float] = {}
    for s in range(1, len(widths)):
        classes: dict[tuple[int, ...], list[int]] = {}
        for i, (pool, _) in enumerate(units):
            classes.setdefault(pool, []).append(i)
        like = problem.hessians[0]
        cost = like.new_zeros((len(units), widths[s]))
        for pool, idx in classes.items():
            members = {
                t: torch.tensor([units[i][1][t] for i in idx], dtype=torch.long) for t in pool
            }
            cost[torch.tensor(idx, device=cost.device)] = problem.stage_costs(pool, members, s)
        matrices.append(cost)
        k = count(s, len(units), widths[s])
        chosen = solver(cost, k).cpu()
        taken = torch.zeros(widths[s], dtype=torch.bool)
        for u, j in chosen.tolist():
            pool, mem = units[u]
            units[u] = (tuple(sorted((*pool, s))), {**mem, s: j})
            taken[j] = True
            spent[u] = spent.get(u, 0.0) + float(cost[u, j])
        units.extend(((s,), {s: j}) for j in torch.nonzero(~taken).flatten().tolist())
    return units, matrices, spent


@dataclass
class BuiltStep:
    """What `build_layers` made: the zipped layer and its reader, the units in the new layer's
    order (indices into the planned list), and each unit's undamped error (and held-out error
    when held-out Hessians were given)."""

    layer: PoolLayer
    reader: PoolLayer
    order: list[int]
    errors: torch.Tensor
    held_errors: torch.Tensor | None


def build_layers(
    problem: SubsetProblem,
    layer: PoolLayer,
    reader: PoolLayer,
    units: Sequence[Unit],
    held: Sequence[torch.Tensor] | None = None,
) -> BuiltStep:
    """The zipped layer (one pool per task set, merged rows from `SubsetProblem.fit`, blocks
    read by one task copied from its original rows) and the reader taking each task's input
    columns in the new order. `layer` must be unzipped (every row one task's own)."""
    n_tasks = layer.n_tasks
    by_pool: dict[tuple[int, ...], list[int]] = {}
    for i, (pool, _) in enumerate(units):
        by_pool.setdefault(pool, []).append(i)
    pools = sorted(by_pool, key=pool_key)
    out_pools = tuple((p, len(by_pool[p])) for p in pools)
    like = layer.like
    new = PoolLayer(layer.spec, PoolSizes(layer.sizes.in_pools, out_pools, n_tasks), like)
    tail = (tuple(layer.spec.kernel_size),) if layer.spec.kind == "conv" else ()
    errors, helds, order = [], [], []
    with torch.no_grad():
        for pi, pool in enumerate(pools):
            idx = by_pool[pool]
            order.extend(idx)
            members = {
                t: torch.tensor([units[i][1][t] for i in idx], dtype=torch.long) for t in pool
            }
            n = len(idx)
            z = None
            zero = problem.hessians[0].new_zeros(n)
            if len(pool) >= 2:
                z = problem.fit(pool, pool, members)
                errors.append(problem.objective(pool, pool, members, z, problem.hessians))
                if held is not None:
                    helds.append(problem.objective(pool, pool, members, z, held))
            else:
                errors.append(zero)
                helds.append(zero)
            lay = problem.layout(pool)
            free = {q: (start, length) for q, start, length in lay.blocks}
            for q, (tasks_q, m) in enumerate(layer.sizes.in_pools):
                common = sorted(set(pool) & set(tasks_q))
                if not common:
                    continue
                if len(common) >= 2:
                    start, length = free[q]
                    vals = z[:, start : start + length]
                else:
                    (t,) = common
                    start, length = problem.task_slices(t)[q]
                    vals = problem.rows[t][members[t].to(problem.rows[t].device)]
                    vals = vals[:, start : start + length]
                shape = (n, m, *tail[0]) if tail else (n, m * layer.spec.positions)
                new.block(pi, q).copy_(vals.reshape(shape).to(like.device, like.dtype))
            if new.has_bias:
                if len(pool) >= 2:
                    bias = z[:, lay.bias]
                else:
                    (t,) = pool
                    bias = problem.rows[t][members[t].to(problem.rows[t].device)][:, -1]
                new.biases[str(pi)].copy_(bias.to(like.device, like.dtype))
        follower = PoolLayer(
            reader.spec,
            PoolSizes(out_pools, reader.sizes.out_pools, n_tasks),
            reader.like,
        )
        per = reader.spec.positions if reader.spec.kind == "linear" else 1
        for p, (tasks_p, _) in enumerate(reader.sizes.out_pools):
            (t,) = tasks_p  # the reader is not zipped yet: every row is one task's own
            w, b = reader.task_weight(t)
            rows = [i for i, row_p in enumerate(reader.sizes.out_pools) if t in row_p[0]]
            if rows != [p]:
                raise ValueError(f"layer {reader.spec.name!r} is zipped already: zip in order")
            for q, pool in enumerate(pools):
                if t not in pool:
                    continue
                src = torch.tensor([units[i][1][t] for i in by_pool[pool]], dtype=torch.long)
                cols = (src[:, None] * per + torch.arange(per)).flatten().to(w.device)
                follower.block(p, q).copy_(w[:, cols])
            if follower.has_bias:
                follower.biases[str(p)].copy_(b)
    held_errors = torch.cat(helds) if held is not None else None
    return BuiltStep(
        new.train(layer.training),
        follower.train(reader.training),
        order,
        torch.cat(errors),
        held_errors,
    )
