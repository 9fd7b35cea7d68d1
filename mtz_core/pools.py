"""Zipped layers whose units are shared by *subsets* of the tasks (the paper's scheme, T ≥ 3).

The default layout (`mtz_core.zipped.ZippedLayer`) knows two kinds of unit: shared by all tasks,
or one task's own. Zipping a third model into a zipped pair the paper's way lets its unit join a
unit of either original model alone, which gives units shared by {A, C} or {B, C}. A **pool** is
a set of tasks S and a number of units that every task in S computes with the same incoming
weights. A layer's outputs are a list of pools (`out_pools`), its inputs the previous layer's
(`in_pools`; the model's input is one pool of all tasks). Task t's activations are the pools
that contain t, concatenated in the layer's pool order, so the operations between layers run on
them unchanged.

The weights from input pool Q into output pool P are one block, read by the tasks in P ∩ Q (no
block when that is empty): a unit shares a weight with another task exactly where both the unit
and its input are shared with that task, which is what keeps every stored weight one parameter.
Pool P's bias is shared by P. With two tasks the pools are {A, B}, {A}, {B} and the blocks are
those of `ZippedLayer` (`pool_layer_from` converts one exactly).

Pools are ordered by size (largest first), then by their tasks; a layer never holds an empty
pool. Batch norm kept per task is not represented here (the session refuses it with subsets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import LayerSpec

__all__ = ["Pool", "PoolSizes", "PoolLayer", "pool_layer_from", "pool_key"]

#: (tasks, units): `tasks` a sorted tuple of task indices
Pool = tuple[tuple[int, ...], int]


def pool_key(tasks: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """The sort key of a pool's tasks: larger pools first, then by their tasks."""
    return (-len(tasks), tuple(tasks))


def _check_pools(pools: Sequence[Pool], what: str) -> tuple[Pool, ...]:
    out = tuple((tuple(int(t) for t in s), int(n)) for s, n in pools)
    keys = [pool_key(s) for s, _ in out]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise ValueError(f"{what} must be distinct and in pool order, got {out}")
    for s, n in out:
        if n <= 0 or not s or list(s) != sorted(set(s)):
            raise ValueError(f"{what}: every pool needs sorted distinct tasks and units > 0: {out}")
    return out


@dataclass(frozen=True)
class PoolSizes:
    """A pool layer's input pools and output pools (see the module docstring)."""

    in_pools: tuple[Pool, ...]
    out_pools: tuple[Pool, ...]
    n_tasks: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_pools", _check_pools(self.in_pools, "in_pools"))
        object.__setattr__(self, "out_pools", _check_pools(self.out_pools, "out_pools"))
        for t in range(self.n_tasks):
            if not any(t in s for s, _ in self.out_pools):
                raise ValueError(f"task {t} has no output unit in {self.out_pools}")

    def out_width(self, task: int) -> int:
        return sum(n for s, n in self.out_pools if task in s)

    def in_width(self, task: int) -> int:
        return sum(n for s, n in self.in_pools if task in s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_pools": [[list(s), n] for s, n in self.in_pools],
            "out_pools": [[list(s), n] for s, n in self.out_pools],
            "n_tasks": self.n_tasks,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PoolSizes:
        return PoolSizes(
            tuple((tuple(s), n) for s, n in d["in_pools"]),
            tuple((tuple(s), n) for s, n in d["out_pools"]),
            int(d["n_tasks"]),
        )


class PoolLayer(nn.Module):
    """One weight layer whose units are shared by subsets of the tasks.

    `block(p, q)`: the weights from input pool q into output pool p, (units of p, units of q ·
    positions) for a linear layer, (units of p, units of q, kh, kw) for a convolution.
    """

    def __init__(self, spec: LayerSpec, sizes: PoolSizes, like: torch.Tensor) -> None:
        super().__init__()
        if spec.norm:
            raise ValueError(
                f"layer {spec.name!r} keeps a batch norm per task: units shared by subsets of "
                "tasks need batch_norm='fold'"
            )
        self.spec, self.sizes = spec, sizes
        self.has_bias = bool(spec.bias)
        self.norm = None
        tail = tuple(spec.kernel_size) if spec.kind == "conv" else ()
        self.blocks = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for p, (sp, n) in enumerate(sizes.out_pools):
            for q, (sq, m) in enumerate(sizes.in_pools):
                if set(sp) & set(sq):
                    shape = (n, m, *tail) if spec.kind == "conv" else (n, m * spec.positions)
                    self.blocks[f"{p}_{q}"] = _zeros(shape, like)
            if self.has_bias:
                self.biases[str(p)] = _zeros((n,), like)

    def block(self, p: int, q: int) -> nn.Parameter:
        return self.blocks[f"{p}_{q}"]

    @property
    def n_tasks(self) -> int:
        return self.sizes.n_tasks

    def out_width(self, task: int) -> int:
        return self.sizes.out_width(task)

    def widths(self) -> list[int]:
        """Each task's output units."""
        return [self.out_width(t) for t in range(self.n_tasks)]

    def input_columns(self, units: int) -> int:
        return units * (self.spec.positions if self.spec.kind == "linear" else 1)

    @property
    def like(self) -> torch.Tensor:
        """A tensor with the layer's dtype and device."""
        return next(iter(self.blocks.values()))

    def task_weight(self, task: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Task `task`'s full weight (rows: its output pools in order; columns: its input
        pools in order) and bias (None without bias)."""
        outs = [p for p, (s, _) in enumerate(self.sizes.out_pools) if task in s]
        ins = [q for q, (s, _) in enumerate(self.sizes.in_pools) if task in s]
        rows = [torch.cat([self.block(p, q) for q in ins], dim=1) for p in outs]
        weight = torch.cat(rows, dim=0)
        if not self.has_bias:
            return weight, None
        return weight, torch.cat([self.biases[str(p)] for p in outs])

    def apply_weights(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        if self.spec.kind == "linear":
            return F.linear(x, weight, bias)
        sp = self.spec
        return F.conv2d(x, weight, bias, sp.stride, sp.padding, sp.dilation)

    def forward(
        self, xs: list[torch.Tensor], tasks: Sequence[int], shared_same: bool
    ) -> tuple[list[torch.Tensor], bool]:
        """Each task's output from its assembled weight (`ZippedLayer.forward`'s contract; the
        tasks' inputs are never reported identical afterwards)."""
        return [self.apply_weights(x, *self.task_weight(t)) for x, t in zip(xs, tasks)], False


def _zeros(shape: Sequence[int], like: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.zeros(tuple(shape), dtype=like.dtype, device=like.device))


def pool_layer_from(layer: Any) -> PoolLayer:
    """The `PoolLayer` computing exactly what a `ZippedLayer` computes (same parameters, same
    count): shared rows are the pool of all tasks, own rows and own inputs one pool per task."""
    if layer.norm is not None:
        raise ValueError(
            f"layer {layer.spec.name!r} keeps a batch norm per task: units shared by subsets of "
            "tasks need batch_norm='fold'"
        )
    sz = layer.sizes
    n_tasks = len(sz.out_own)
    every = tuple(range(n_tasks))
    ins = ([(every, sz.in_shared)] if sz.in_shared else []) + [
        ((t,), u) for t, u in enumerate(sz.in_own) if u
    ]
    outs = ([(every, sz.shared)] if sz.shared else []) + [
        ((t,), o) for t, o in enumerate(sz.out_own) if o
    ]
    new = PoolLayer(layer.spec, PoolSizes(tuple(ins), tuple(outs), n_tasks), layer.like)
    s_cols = layer.input_columns(sz.in_shared)
    in_index = {s: q for q, (s, _) in enumerate(new.sizes.in_pools)}
    with torch.no_grad():
        for p, (sp, _) in enumerate(new.sizes.out_pools):
            if sp == every:  # the shared rows (T ≥ 2: no task's own pool is every task)
                if sz.in_shared:
                    new.block(p, in_index[every]).copy_(layer.shared_weight)
                for t in range(n_tasks):
                    if sz.in_own[t]:
                        new.block(p, in_index[(t,)]).copy_(layer.shared_own_weight[t])
                if new.has_bias:
                    new.biases[str(p)].copy_(layer.shared_bias)
                continue
            (t,) = sp
            w = layer.own_weight[t]
            if sz.in_shared:
                new.block(p, in_index[every]).copy_(w[:, :s_cols])
            if sz.in_own[t]:
                new.block(p, in_index[(t,)]).copy_(w[:, s_cols:])
            if new.has_bias:
                new.biases[str(p)].copy_(layer.own_bias[t])
    return new.train(layer.training)
