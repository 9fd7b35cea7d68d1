"""Neuron matching: choose which neurons of network A share a neuron with network B.

Zipping a layer means picking ``k`` pairs ``(i, j)`` (neuron ``i`` of A, neuron ``j`` of B),
each neuron used at most once, from an ``n_a x n_b`` cost matrix. Two solvers are offered:

* :func:`greedy_pairs`, the rule MTZ uses: repeatedly take the cheapest pair whose neurons are
  both still free. It is defined by a sequential walk, but computed here in vectorised rounds so
  it runs on the GPU and stays fast for layers with thousands of neurons.
* :func:`optimal_pairs`, the exact minimum-total-cost matching of size ``k`` (Hungarian-style,
  O(n^3)), used as a reference to measure how much the greedy rule leaves on the table.

:func:`resolve_shares` turns a fraction ("share half of each layer") and :func:`resolve_counts` a
number of pairs into a pair count per layer, and :func:`validate_pairs` checks a hand-made pairing
before the engine trusts it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = [
    "greedy_pairs",
    "optimal_pairs",
    "resolve_shares",
    "resolve_counts",
    "resolve_plan",
    "validate_pairs",
    "validate_tuples",
]


def _check_cost(cost: Any, k: Any, func: str) -> tuple[torch.Tensor, int]:
    """Validate a cost matrix and pair count; return the matrix (detached) and ``k`` as int."""
    if not isinstance(cost, torch.Tensor):
        raise TypeError(f"{func}: cost must be a torch.Tensor, got {type(cost).__name__}")
    if cost.dim() != 2:
        raise ValueError(f"{func}: cost must be 2-D (n_a x n_b), got shape {tuple(cost.shape)}")
    if not cost.is_floating_point():
        raise TypeError(f"{func}: cost must have a floating dtype, got {cost.dtype}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{func}: k must be an int, got {type(k).__name__} {k!r}")
    k = operator.index(k)
    limit = min(cost.shape)
    if not 0 <= k <= limit:
        raise ValueError(
            f"{func}: k={k} is out of range; allowed 0 <= k <= min(n_a, n_b) = {limit} "
            f"for a cost matrix of shape {tuple(cost.shape)}"
        )
    cost = cost.detach()
    # NaN has no place in a total order and -inf would make "cheapest" meaningless (and
    # scipy refuses it); +inf is fine and simply means "as expensive as possible".
    # one host read for both checks (on a GPU each read waits for the device)
    nan, neginf = torch.stack([torch.isnan(cost).any(), torch.isneginf(cost).any()]).tolist()
    if nan:
        raise ValueError(f"{func}: cost contains NaN; every entry must be a number or +inf")
    if neginf:
        raise ValueError(f"{func}: cost contains -inf; entries must be finite or +inf")
    return cost, k


def _sort_by_key(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_b: int):
    """Order pairs by the total order (cost, flat index ``i * n_b + j``) used everywhere here."""
    order = torch.argsort(rows * n_b + cols)
    order = order[torch.sort(vals[order], stable=True).indices]
    return torch.stack([rows[order], cols[order]], dim=1)


def greedy_pairs(cost: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` pairs of the greedy matching, as a ``(k, 2)`` int64 tensor in pick order.

    Greedy means: sort all pairs by ``(cost, i * n_b + j)`` and walk the list, keeping a pair
    when neither its row nor its column is used yet. Walking n^2 pairs in Python is too slow,
    so we use the equivalent "locally dominant" formulation: a free pair that is the minimum of
    its row *and* of its column (among free entries, under the same total order) is taken by
    greedy no matter what happens elsewhere, because nothing cheaper can claim its row or
    column. Every round takes all such pairs at once (at least the global minimum), then drops
    their rows and columns. ``argmin`` returns the first minimum, which is exactly the flat-index
    tie-break for rows and for columns, and compacting the free rows/columns keeps index order,
    so the tie-break survives re-indexing.

    Greedy picks pairs in increasing key order, so its first ``k`` picks are the ``k``
    smallest-key pairs of the full matching. We can stop as soon as ``k`` selected pairs are
    cheaper than the cheapest free entry: later rounds only add pairs above that entry.

    Cost is ``O(n^2)`` per round; random matrices need few rounds, but heavily tied matrices
    (all equal) need about ``min(n_a, n_b)`` rounds, i.e. ``O(n^3)`` in the worst case.
    """
    cost, k = _check_cost(cost, k, "greedy_pairs")
    device = cost.device
    n_b = cost.shape[1]
    empty = torch.empty(0, dtype=torch.int64, device=device)
    if k == 0:
        return torch.empty((0, 2), dtype=torch.int64, device=device)

    rows = torch.arange(cost.shape[0], device=device)  # original ids of the free rows
    cols = torch.arange(n_b, device=device)  # original ids of the free columns
    sub = cost
    got_r, got_c, got_v = [empty], [empty], [cost.new_empty(0)]
    while sub.shape[0] > 0 and sub.shape[1] > 0:
        row_min, row_best = sub.min(dim=1)  # values and first-minimum indices in one pass
        col_best = sub.argmin(dim=0)
        if sum(t.numel() for t in got_r) >= k:
            # Cheapest free entry: the first row holding the smallest row minimum, at that
            # row's argmin column, is the smallest (cost, flat index) key.
            r0 = row_min.argmin()  # a device index: no host read
            free_v, free_f = row_min[r0], rows[r0] * n_b + cols[row_best[r0]]
            v, f = torch.cat(got_v), torch.cat(got_r) * n_b + torch.cat(got_c)
            if int(((v < free_v) | ((v == free_v) & (f < free_f))).sum()) >= k:
                break
        local = torch.arange(sub.shape[0], device=device)
        mutual = col_best[row_best] == local
        pick_r, pick_c = local[mutual], row_best[mutual]
        got_r.append(rows[pick_r])
        got_c.append(cols[pick_c])
        got_v.append(row_min[pick_r])
        keep_c = torch.ones(sub.shape[1], dtype=torch.bool, device=device)
        keep_c[pick_c] = False
        keep_r = (~mutual).nonzero().squeeze(1)
        keep_c = keep_c.nonzero().squeeze(1)
        rows, cols = rows[keep_r], cols[keep_c]
        sub = sub[keep_r[:, None], keep_c]  # one gather: the copy is the costliest step

    pairs = _sort_by_key(torch.cat(got_r), torch.cat(got_c), torch.cat(got_v), n_b)
    return pairs[:k].contiguous()


def optimal_pairs(cost: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` pairs with the smallest total cost, as ``(k, 2)`` int64 sorted by key.

    ``linear_sum_assignment`` only solves full assignments, so we pad the matrix to a square of
    side ``n_a + n_b - k``: ``n_b - k`` dummy rows and ``n_a - k`` dummy columns, free (cost 0)
    against real neurons and forbidden (+inf) against each other. Every dummy row must then take
    a real column and every dummy column a real row, which leaves exactly ``k`` real-real pairs,
    and the cheapest such assignment is the cheapest size-``k`` matching.

    +inf costs are replaced by a finite penalty larger than any spread of finite totals, so that
    using fewer +inf pairs always wins (scipy would call a forced +inf pair infeasible).
    Runs on the CPU in ``O((n_a + n_b)^3)`` time: a reference, not for the largest layers.
    """
    cost, k = _check_cost(cost, k, "optimal_pairs")
    device = cost.device
    n_a, n_b = cost.shape
    if k == 0:
        return torch.empty((0, 2), dtype=torch.int64, device=device)
    c = cost.to(device="cpu", dtype=torch.float64).numpy()
    inf = np.isinf(c)
    if inf.any():
        penalty = 2.0 * float(np.abs(c[~inf]).sum()) + 1.0
        c = np.where(inf, penalty, c)
    side = n_a + n_b - k
    big = np.zeros((side, side))
    big[:n_a, :n_b] = c
    big[n_a:, n_b:] = np.inf
    r, cl = linear_sum_assignment(big)
    real = (r < n_a) & (cl < n_b)
    rows = torch.from_numpy(r[real].astype(np.int64))
    cols = torch.from_numpy(cl[real].astype(np.int64))
    vals = cost.cpu()[rows, cols]
    return _sort_by_key(rows, cols, vals, n_b).to(device)


def _share_to_k(value: Any, name: str, n_a: int, n_b: int) -> int:
    """One layer's share (a fraction of the narrower side, whatever its Python type) as k."""
    limit = min(n_a, n_b)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"share for layer {name!r} must be a fraction in [0, 1], got {type(value).__name__} "
            f"{value!r}; for a number of pairs pass k= (an int)"
        )
    frac = float(value)
    if math.isnan(frac) or not 0.0 <= frac <= 1.0:
        hint = f"; to share {int(frac)} pairs, pass k={int(frac)}" if frac > 1 else ""
        raise ValueError(
            f"share {value!r} for layer {name!r} is out of range: share is a fraction of the "
            f"narrower layer in [0, 1]{hint} (k= takes a number of pairs, 0 to {limit})"
        )
    # The epsilon keeps e.g. 0.3 * 10 = 2.9999999999999996 from rounding down to 2.
    return min(limit, math.floor(frac * limit + 1e-9))


def _count_to_k(value: Any, name: str, n_a: int, n_b: int) -> int:
    """One layer's k (a number of pairs) checked against the layer's widths."""
    limit = min(n_a, n_b)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"k for layer {name!r} must be a whole number of pairs (an int), got "
            f"{type(value).__name__} {value!r}; for a fraction of each layer pass share="
        )
    count = int(value)
    if not 0 <= count <= limit:
        raise ValueError(
            f"k={count} for layer {name!r} is out of range; allowed 0 <= k <= min(n_a, n_b) = "
            f"{limit} (for a fraction of each layer pass share=)"
        )
    return count


def _layer_dims(layers: Sequence[tuple[str, int, int]]) -> dict[str, tuple[int, int]]:
    dims: dict[str, tuple[int, int]] = {}
    for entry in layers:
        name, n_a, n_b = entry
        if isinstance(n_a, bool) or isinstance(n_b, bool) or min(int(n_a), int(n_b)) < 0:
            raise ValueError(f"layer {name!r}: sizes must be ints >= 0, got {n_a!r}, {n_b!r}")
        if name in dims:
            raise ValueError(f"layer name {name!r} appears more than once in layers")
        dims[name] = (int(n_a), int(n_b))
    return dims


def _per_layer(value: Any, what: str, convert, layers: Sequence[tuple[str, int, int]]):
    dims = _layer_dims(layers)
    if isinstance(value, Mapping):
        unknown = [key for key in value if key not in dims]
        if unknown:
            raise ValueError(
                f"{what} names unknown layer(s) {unknown!r}; known layers: {list(dims)!r}"
            )
        return {
            name: convert(value[name], name, *nm) if name in value else 0
            for name, nm in dims.items()
        }
    return {name: convert(value, name, *nm) for name, nm in dims.items()}


def resolve_shares(share: Any, layers: Sequence[tuple[str, int, int]]) -> dict[str, int]:
    """Number of neuron pairs to share in each layer, from a fraction.

    ``share`` is a fraction in [0, 1] of ``min(n_a, n_b)`` (rounded down), whatever its Python
    type (``1`` and ``1.0`` both mean every possible pair), or a mapping from layer name to
    one (unnamed layers share nothing). A number of pairs is asked for with `resolve_counts`
    (the ``k=`` argument of the engine's calls).
    """
    return _per_layer(share, "share", _share_to_k, layers)


def resolve_counts(k: Any, layers: Sequence[tuple[str, int, int]]) -> dict[str, int]:
    """Number of neuron pairs per layer from ``k``: an int for every layer, or a mapping from
    layer name to an int (unnamed layers share nothing)."""
    return _per_layer(k, "k", _count_to_k, layers)


def resolve_plan(share: Any, k: Any, layers: Sequence[tuple[str, int, int]]) -> dict[str, int]:
    """Pairs per layer from `share` (a fraction) or `k` (a count), never both; neither given
    means share = 1.0 (every possible pair)."""
    if share is not None and k is not None:
        raise ValueError("pass share= (a fraction in [0, 1]) or k= (a number of pairs), not both")
    if k is not None:
        return resolve_counts(k, layers)
    return resolve_shares(1.0 if share is None else share, layers)


def validate_pairs(pairs: Any, n_a: int, n_b: int, *, name: str = "layer") -> torch.Tensor:
    """Check a user-supplied pairing and return it as a ``(k, 2)`` int64 CPU tensor.

    Column 0 holds neurons of network A (``0 <= i < n_a``), column 1 neurons of network B
    (``0 <= j < n_b``); a neuron may appear at most once per column, since a shared neuron
    can only stand in for one neuron of each network. Order is kept as given.
    """
    if isinstance(pairs, torch.Tensor):
        arr = pairs.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(pairs)
        except ValueError as err:  # ragged nested lists
            raise ValueError(f"{name}: pairs must be a k x 2 array of ints ({err})") from None
    if arr.size == 0 and arr.shape in ((0,), (0, 2)):
        return torch.empty((0, 2), dtype=torch.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: pairs must have shape (k, 2), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: pairs must hold integers, got dtype {arr.dtype}")
    for col, net, n in ((0, "A", n_a), (1, "B", n_b)):
        idx = arr[:, col]
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise ValueError(
                f"{name}: neuron index {idx[bad][0]} in column {col} (network {net}) is out "
                f"of range; allowed 0 <= index < {n}"
            )
        values, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            dup = values[counts > 1][0]
            raise ValueError(
                f"{name}: neuron {dup} of network {net} (column {col}) is used "
                f"{counts[counts > 1][0]} times; each neuron may be paired at most once"
            )
    return torch.from_numpy(arr.astype(np.int64))


def validate_tuples(pairs: Any, widths: Sequence[int], name: str) -> torch.Tensor:
    """Explicit pairs: (k, 2) for two models (`validate_pairs`), (k, T) tuples for more."""
    if len(widths) == 2:
        return validate_pairs(pairs, widths[0], widths[1], name=name)
    t = torch.as_tensor(np.asarray(pairs), dtype=torch.long)
    if t.dim() != 2 or t.shape[1] != len(widths):
        raise ValueError(
            f"{name}: pairs must be (k, {len(widths)}): one column per model, got shape "
            f"{tuple(t.shape)}"
        )
    for col, width in enumerate(widths):
        c = t[:, col]
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= width):
            raise ValueError(f"{name}: column {col} must index units in [0, {width - 1}]")
        if c.unique().numel() != c.numel():
            raise ValueError(f"{name}: column {col} repeats a unit; each unit pairs at most once")
    return t
