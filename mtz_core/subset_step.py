"""One `ZipSession` step with units shared by subsets of the tasks (`ZipConfig.subsets`).

The session orchestrates; `mtz_core.subsets` holds the algebra and `mtz_core.pools` the layout.
Here: each task's exact Hessian over all its inputs, the stage-wise matching, the new layer and
its reader, and the `LayerRecord`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .hessian import AUTO_EXACT_MAX_DIM
from .layout import incoming_vectors
from .matching import greedy_pairs, optimal_pairs, resolve_plan
from .pools import PoolLayer
from .records import LayerRecord
from .streams import layer_hessian
from .subsets import SubsetProblem, build_layers, plan_units
from .zipped import GroupUndo

__all__ = ["check_subsets", "subset_step"]


def check_subsets(session: Any) -> None:
    """Refuse, naming the reason, what subsets=True does not cover; then convert the session's
    network to pool layers (same outputs, same parameter count)."""
    arch = session.architecture
    if arch.graph is not None:
        raise ValueError(
            "subsets=True supports chains of layers; these models have residual additions "
            "(use subsets=False: every shared unit shared by all tasks)"
        )
    if session.config.batch_norm == "keep" and any(sp.norm for sp in arch.layers):
        raise ValueError("subsets=True needs batch norm folded: use batch_norm='fold'")
    for layer in session.model.layers[:-1]:
        sp = layer.spec
        per = sp.kernel_positions if sp.kind == "conv" else sp.positions
        dim = max(layer.sizes.in_shared + u for u in layer.sizes.in_own) * per + 1
        if dim > AUTO_EXACT_MAX_DIM:
            raise ValueError(
                f"subsets=True uses each task's exact Hessian over all its inputs; layer "
                f"{sp.name!r} has {dim} (at most {AUTO_EXACT_MAX_DIM}): use subsets=False"
            )
    session.model = session.model.with_pools()


def _count(name: str, share: Any, k: Any):
    """Stage s's number of merges: `share` of the smaller side (units so far, task s's
    units), as for two models, or k."""

    def count(s: int, n_side: int, n_new: int) -> int:
        return resolve_plan(share, k, [(name, n_side, n_new)])[name]

    return count


def subset_step(session: Any, index: int, share: Any, k: Any, asked: float | None):
    """Zip group `index` (one layer of a chain) with units shared by subsets of the tasks;
    returns (undo, record) for `ZipSession._finish_step`."""
    cfg = session.config
    group = session._groups[index]
    (li,) = group.members
    (ri,) = group.readers
    layer: PoolLayer = session.model.layers[li]
    reader: PoolLayer = session.model.layers[ri]
    spec = layer.spec
    n_tasks = layer.n_tasks
    dev = session.algebra_device
    per = spec.kernel_positions if spec.kind == "conv" else spec.positions
    t0 = time.perf_counter()
    hs, vs, samples, held = [], [], [], None
    on_batch = session._on_batch(index, "hessian")
    for t in range(n_tasks):
        units = layer.sizes.in_width(t)
        h, _ = layer_hessian(
            session.model, li, t, session.data[t], "exact", False, dev,
            check=session._check, on_batch=on_batch, units=units,
        )  # fmt: skip
        hs.append(h.dense())
        samples.append(h.n_samples)
        w, b = layer.task_weight(t)
        vs.append(
            incoming_vectors(
                w.detach().to(dev, torch.float64),
                None if b is None else b.detach().to(dev, torch.float64),
                spec,
                units,
                "exact",
            )
        )
    if session.heldout is not None:
        held = [
            layer_hessian(
                session.model, li, t, session.heldout[t], "exact", False, dev,
                check=session._check, on_batch=session._on_batch(index, "heldout"),
                units=layer.sizes.in_width(t),
            )[0].dense()
            for t in range(n_tasks)
        ]  # fmt: skip
    session._check()
    t1 = time.perf_counter()
    problem = SubsetProblem(layer.sizes.in_pools, per, layer.has_bias, hs, vs, cfg.damping)
    solver = greedy_pairs if cfg.matching == "greedy" else optimal_pairs
    widths = layer.widths()
    units, matrices, spent = plan_units(problem, widths, _count(group.name, share, k), solver)
    session._check()
    t2 = time.perf_counter()
    session._emit(index, "matching", 1, 1)
    built = build_layers(problem, layer, reader, units, held)
    t3 = time.perf_counter()
    before = session.model.num_parameters()
    undo = GroupUndo(index, {li: layer, ri: reader}, {}, {})
    session.model.layers[li] = built.layer
    session.model.layers[ri] = built.reader
    table = np.full((len(units), n_tasks), -1, dtype=np.int64)
    for row, i in enumerate(built.order):
        for t, j in units[i][1].items():
            table[row, t] = j
    merged = (table >= 0).sum(1) >= 2
    errors = built.errors.cpu().numpy()
    shared_in = sum(n for s, n in layer.sizes.in_pools if len(s) >= 2)
    record = LayerRecord(
        name=group.name,
        index=index,
        kind=spec.kind,
        n_a=widths[0],
        n_b=widths[1],
        shared_inputs=shared_in,
        per_unit=per,
        bias=layer.has_bias,
        share=asked,
        pairs=table[merged],
        cost=matrices[0].cpu().numpy(),
        pair_costs=np.array([spent[i] for i, m in zip(built.order, merged) if m]),
        pair_errors=errors[merged],
        predicted_error=float(errors.sum()),
        method=cfg.method,
        matching=cfg.matching,
        hessian="exact",
        hessian_dim=hs[0].shape[0],
        hessian_blocks=1,
        damping=float(cfg.damping),
        # λ_t over the inputs a unit of every task shares (each pool damps its own inputs)
        lambdas=tuple(problem.lam(tuple(range(n_tasks)), t) for t in range(n_tasks)),
        n_samples=tuple(samples),
        pseudo_inverse=problem.pseudo_inverse,
        seconds={"hessian": t1 - t0, "matching": t2 - t1, "merge": t3 - t2},
        heldout_error=None if held is None else float(built.held_errors.sum()),
        members=(spec.name,),
        saved=before - session.model.num_parameters(),
        widths=tuple(widths),
        n_shared=int(merged.sum()),
        units=table,
    )
    return undo, record
