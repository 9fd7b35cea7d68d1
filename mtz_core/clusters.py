"""Merges beyond one A unit with one B unit: clusters of units, from either model.

MTZ pairs unit i of A with unit j of B. Two relatives relax that rule:

* **within-model merges** (`within_model=True`, `union_ward`): greedy merges over both
  models' units, each the cheapest exact increase of the layer error. An A–B pair costs what
  MTZ charges (½ Δᵀ Ĥ Δ over the shared inputs); two units of A cost the increase of A's layer
  error when both take one row w: ½ (w − a₁)ᵀ H (w − a₁) + ½ (w − a₂)ᵀ H (w − a₂), least at the
  mean w = ½(a₁ + a₂), where it is ¼ (a₁ − a₂)ᵀ H (a₁ − a₂) with H task A's Hessian over all
  its inputs; groups of one model's units keep merging by Ward's criterion in that metric
  (docs/method.md).
* **ZipIt!** (Stoica et al., ICLR 2024; `method="zipit"`): greedy on the correlation of the
  units' post-activation features over both tasks' data, merged units may merge again (their
  similarities become the minimum of their members', times α), and at most β·m/2 merges of
  each model are with its own units (none when that is below 1).

Both give an assignment per task: `assign[t][j]` is the merged unit unit j of task t becomes;
units of both tasks come first (they are shared), then each task's own.
"""

from __future__ import annotations

import math

import torch

from .hessian import LayerHessian

__all__ = ["within_costs", "union_ward", "zipit_clusters"]


def within_costs(h: LayerHessian, v: torch.Tensor) -> torch.Tensor:
    """¼ (v_i − v_j)ᵀ H (v_i − v_j) for all pairs of rows of v (n, D): what merging units i
    and j of one task into their mean costs that task's layer error; +inf on the diagonal."""
    hv = h.matvec(v)
    q = (hv * v).sum(1)
    c = 0.25 * (q[:, None] + q[None, :] - 2 * (v @ hv.T))
    c.clamp_min_(0).fill_diagonal_(math.inf)
    return c


def zipit_clusters(
    sims: torch.Tensor, n_a: int, m: int, alpha: float, beta: float
) -> tuple[list[torch.Tensor], int]:
    """ZipIt!'s greedy merging of the n_a + n_b units by similarity `sims` (correlations), `m`
    merges; returns assignments in the module's layout and the number of shared units.

    Each step merges the most similar pair of live units; the merged unit's similarities are
    the minimum of its two members', times `alpha` (alpha <= 0: it merges no further with
    units of either member's model). A model that has used its budget of floor(m/2 · beta)
    merges with itself merges no more units of its own (the paper's α and β)."""
    n = sims.shape[0]
    if not 0 <= m <= n - 1:
        raise ValueError(f"m={m} merges is out of range [0, {n - 1}] for {n} units")
    s = sims.detach().to(torch.float64).clone()
    s.fill_diagonal_(-math.inf)
    origin = torch.tensor([0] * n_a + [1] * (n - n_a))
    members: dict[int, list[int]] = {u: [u] for u in range(n)}
    live = torch.ones(n, dtype=torch.bool)
    budget = [int(m // 2 * beta + 1e-4)] * 2
    for o in (0, 1):  # a model without budget merges none of its own units
        if budget[o] <= 0:
            mine = origin == o
            s[mine[:, None] & mine[None, :]] = -math.inf
    for _ in range(m):
        f = int(torch.argmax(s))
        i, j = sorted(divmod(f, n))
        if not float(s[i, j]) > -math.inf:
            raise ValueError(f"ZipIt!: no pair may merge after {n - int(live.sum())} merges")
        oi, oj = int(origin[i]), int(origin[j])
        row = torch.minimum(s[i], s[j])
        if alpha > 0:
            row = row * alpha
        else:
            row[(origin == oi) | (origin == oj)] = -math.inf
        row[i] = -math.inf
        s[i], s[:, i] = row, row
        s[j], s[:, j] = -math.inf, -math.inf
        live[j] = False
        members[i] += members.pop(j)
        if oi == oj:
            budget[oi] -= 1
            if budget[oi] <= 0:
                mine = origin == oi
                s[mine[:, None] & mine[None, :]] = -math.inf
    groups = [members[u] for u in sorted(members)]
    shared = [g for g in groups if min(g) < n_a <= max(g)]
    own = [g for g in groups if not (min(g) < n_a <= max(g))]
    assign = [torch.empty(n_a, dtype=torch.int64), torch.empty(n - n_a, dtype=torch.int64)]
    for u, g in enumerate(shared + own):
        for x in g:
            if x < n_a:
                assign[0][x] = u
            else:
                assign[1][x - n_a] = u
    return assign, len(shared)


def union_ward(
    within_a: torch.Tensor, within_b: torch.Tensor, cross: torch.Tensor, m: int
) -> tuple[list[torch.Tensor], int]:
    """`m` greedy merges over both models' units, each the cheapest exact increase of the layer
    error: a unit of A with a unit of B (`cross`, the MTZ cost; the pair is then final), or two
    groups of one model's units into one (their mean row). Merging groups i and j of one task
    (sizes n_i, n_j, mean rows c_i, c_j) costs ½ n_i n_j/(n_i + n_j) ‖c_i − c_j‖²_H, Ward's
    criterion in the task's Hessian metric; after a merge the costs to the new group follow
    from the old ones (the Lance–Williams formula for Ward), so no row is recomputed.
    `within_a`, `within_b`: the pair costs ¼‖v_i − v_j‖²_H (`within_costs`). A group of two or
    more never pairs across (its shared row would need another Hessian weighting).
    Returns the assignments (shared pairs first) and the number of shared units."""
    n_a, n_b = cross.shape
    n = n_a + n_b
    if not 0 <= m <= n - 1:
        raise ValueError(f"m={m} merges is out of range [0, {n - 1}] for {n} units")
    full = torch.full((n, n), math.inf, dtype=torch.float64, device=cross.device)  # symmetric
    full[:n_a, :n_a] = within_a
    full[n_a:, n_a:] = within_b
    full[:n_a, n_a:] = cross
    full[n_a:, :n_a] = cross.T
    full.fill_diagonal_(math.inf)
    lower = torch.ones(n, n, dtype=torch.bool, device=full.device).tril()  # each pair once, i < j
    size = torch.ones(n, dtype=torch.float64, device=full.device)
    task = torch.arange(n, device=full.device) >= n_a
    group = list(range(n))  # each unit's group head
    shared_pairs: list[tuple[int, int]] = []
    for done in range(m):
        f = int(torch.argmin(full.masked_fill(lower, math.inf)))
        i, j = divmod(f, n)
        if not math.isfinite(float(full[i, j])):
            raise ValueError(f"no finite-cost merge is left after {done} merges")
        if bool(task[i]) != bool(task[j]):  # a cross pair: final
            shared_pairs.append((i, j))
            for u in (i, j):
                full[u, :], full[:, u] = math.inf, math.inf
            continue
        ni, nj = size[i], size[j]
        same = (task == task[i]) & torch.isfinite(full[i]) & torch.isfinite(full[j])
        nk = size[same]
        row = ((ni + nk) * full[i, same] + (nj + nk) * full[j, same] - nk * full[i, j]) / (
            ni + nj + nk
        )
        full[i, :] = math.inf
        full[i, same] = row
        full[i, i] = math.inf
        full[:, i] = full[i, :]
        full[j, :], full[:, j] = math.inf, math.inf
        size[i] = ni + nj
        for u in range(n):
            if group[u] == j:
                group[u] = i
    assign = [torch.empty(n_a, dtype=torch.int64), torch.empty(n_b, dtype=torch.int64)]
    for u, (i, j) in enumerate(shared_pairs):
        assign[0][i] = u
        assign[1][j - n_a] = u
    paired = {x for p in shared_pairs for x in p}
    heads = sorted({group[u] for u in range(n) if u not in paired})
    ids = {h: len(shared_pairs) + r for r, h in enumerate(heads)}
    for u in range(n):
        if u not in paired:
            assign[int(u >= n_a)][u - n_a * int(u >= n_a)] = ids[group[u]]
    return assign, len(shared_pairs)
