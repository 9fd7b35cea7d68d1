"""Residual networks as a program of steps over unit spaces, for the zipped network to run.

A plain chain is `Architecture.layers` in order. A residual network is a `GraphProgram`: steps
that each write one slot (slot 0 is the model's input, step i writes slot i + 1) — a weight layer
(with its batch norm, kept or folded), a channel-wise operation, a residual addition, or an
option-A zero-padding shortcut that *embeds* one space's units into another at an offset. Every
weight layer reads one unit space and writes one (`layer_spaces`); the zippable spaces are the
channel groups of `mtz_core.graph`, in zip order (`groups`).

`trace_residual` builds it from `graph.trace_graph`; `architecture.trace_model` calls it when a
model is not a chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .ops import OpSpec

__all__ = ["GraphStep", "GraphProgram", "ZipGroup", "trace_residual"]

STEP_KINDS = ("layer", "op", "add", "embed")


@dataclass(frozen=True)
class GraphStep:
    """One step. `inputs`: the slots it reads (slot 0 is the model's input)."""

    kind: str  # "layer" | "op" | "add" | "embed"
    inputs: tuple[int, ...]
    layer: int = -1  # layer steps: index into Architecture.layers
    op: OpSpec | None = None  # op steps
    source: int = -1  # embed: the space whose units are copied ...
    target: int = -1  # ... into this space,
    offset: int = 0  # ... starting at this unit

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "inputs": list(self.inputs)}
        if self.kind == "layer":
            d["layer"] = self.layer
        elif self.kind == "op":
            d["op"] = self.op.to_dict()
        elif self.kind == "embed":
            d.update(source=self.source, target=self.target, offset=self.offset)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> GraphStep:
        kind = d["kind"]
        if kind not in STEP_KINDS:
            raise ValueError(f"unknown graph step kind {kind!r}; known: {list(STEP_KINDS)}")
        op = OpSpec.from_dict(d["op"]) if kind == "op" else None
        return GraphStep(
            kind,
            tuple(int(i) for i in d["inputs"]),
            int(d.get("layer", -1)),
            op,
            int(d.get("source", -1)),
            int(d.get("target", -1)),
            int(d.get("offset", 0)),
        )


@dataclass(frozen=True)
class ZipGroup:
    """One zippable unit space: the layers writing it (`members`, one matching for all), the
    layers reading it (`readers`, whose input columns follow it) and the space id."""

    name: str
    space: int
    members: tuple[int, ...]
    readers: tuple[int, ...]


@dataclass(frozen=True)
class GraphProgram:
    """The steps, the slot holding the head's output, each layer's (input, output) space (-1:
    the model's input, never zipped) and the zippable spaces as (name, space) in zip order."""

    steps: tuple[GraphStep, ...]
    output: int
    layer_spaces: tuple[tuple[int, int], ...]
    groups: tuple[tuple[str, int], ...]

    def zip_groups(self) -> tuple[ZipGroup, ...]:
        out = []
        for name, space in self.groups:
            members = tuple(i for i, (_, o) in enumerate(self.layer_spaces) if o == space)
            readers = tuple(i for i, (s, _) in enumerate(self.layer_spaces) if s == space)
            out.append(ZipGroup(name, space, members, readers))
        return tuple(out)

    @property
    def n_spaces(self) -> int:
        return 1 + max(max(pair) for pair in self.layer_spaces)

    def embeds(self) -> tuple[GraphStep, ...]:
        return tuple(s for s in self.steps if s.kind == "embed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": [s.to_dict() for s in self.steps],
            "output": self.output,
            "layer_spaces": [list(p) for p in self.layer_spaces],
            "groups": [[n, s] for n, s in self.groups],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> GraphProgram:
        return GraphProgram(
            tuple(GraphStep.from_dict(s) for s in d["steps"]),
            int(d["output"]),
            tuple((int(a), int(b)) for a, b in d["layer_spaces"]),
            tuple((str(n), int(s)) for n, s in d["groups"]),
        )


def trace_residual(
    model: nn.Module, input_shape: tuple[int, ...], *, label: str, batch_norm: str
) -> tuple[Any, list[tuple[torch.Tensor, torch.Tensor | None]]]:
    """`Architecture` (with a `GraphProgram`) and weights of a model with residual additions.

    Each weight layer's batch norm is kept per task (`batch_norm="keep"`, hidden layers) or
    folded into it, exactly as for chains; the head must be the last weight layer and only
    element-wise operations may follow it.
    """
    from .architecture import Architecture, ArchitectureError, _Weight, make_layer
    from .graph import trace_graph

    g = trace_graph(model, input_shape, label=label)
    modules = dict(model.named_modules())
    nodes = {n.name: n for n in g.nodes}
    users: dict[str, list[str]] = {n.name: [] for n in g.nodes}
    for n in g.nodes:
        for i in n.inputs:
            users[i].append(n.name)
    unused = [n.name for n in g.nodes[1:] if not users[n.name] and n.name != g.output]
    if unused:
        raise ArchitectureError(
            f"{label}: node {unused[0]!r} is computed but never used; branches must end in a "
            "residual addition"
        )
    if len(g.heads) != 1:
        raise ArchitectureError(f"{label}: {len(g.heads)} layers {list(g.heads)} write the output")
    head = g.heads[0]
    input_space = g.nodes[0].space
    compact: dict[int, int] = {}

    def sid(space: int) -> int:
        return -1 if space == input_space else compact.setdefault(space, len(compact))

    units: dict[int, int] = {}  # canonical space -> units, from its writers
    for n in g.nodes:
        if n.kind == "weight":
            m = modules[n.module]
            units[n.space] = m.out_features if isinstance(m, nn.Linear) else m.out_channels
    norm_of = {n.inputs[0]: n for n in g.nodes if n.kind == "norm"}
    slot = {g.nodes[0].name: 0}
    steps: list[GraphStep] = []
    specs, weights, spaces = [], [], []
    ops_after: list[OpSpec] = []
    out_slot = -1
    keep = batch_norm == "keep"
    for n in g.nodes[1:]:
        where = f"{label}: node {n.name!r}"
        if n.kind == "norm":
            continue
        if out_slot >= 0:  # after the head: a chain of element-wise operations only
            if n.kind != "op" or slot.get(n.inputs[0]) != out_slot:
                raise ArchitectureError(
                    f"{where} follows the head {head!r}; only element-wise operations on the "
                    "head's output may follow it"
                )
            ops_after.append(n.op)
            slot[n.name] = out_slot
            continue
        ins = tuple(slot[i] for i in n.inputs)
        if n.kind == "weight":
            norm = norm_of.get(n.name)
            if norm is not None and users[n.name] != [norm.name]:
                raise ArchitectureError(
                    f"{where}: the output of {n.module!r} is used besides its batch norm "
                    f"{norm.module!r}; the norm must be the layer's only reader"
                )
            src = nodes[n.inputs[0]]
            item = _Weight(n.module, modules[n.module], [], norm.module if norm else None)
            x = torch.empty(g.shapes[src.name], device="meta")
            prev = None if src.space == input_space else units[src.space]
            is_head = n.module == head
            spec, w, b, _ = make_layer(
                item,
                x,
                prev,
                modules,
                tuple(input_shape),
                label,
                keep and not is_head and bool(norm),
            )
            steps.append(GraphStep("layer", ins, layer=len(specs)))
            specs.append(spec)
            weights.append((w, b))
            spaces.append((sid(src.space), sid(n.space)))
            slot[n.name] = len(steps)
            if norm is not None:
                slot[norm.name] = len(steps)
            if is_head:
                out_slot = len(steps)
            continue
        if n.kind == "op":
            steps.append(GraphStep("op", ins, op=n.op))
        elif n.kind == "add":
            steps.append(GraphStep("add", ins))
        elif n.kind == "embed":
            source = sid(nodes[n.inputs[0]].space)
            steps.append(
                GraphStep("embed", ins, source=source, target=sid(n.space), offset=n.offset)
            )
        slot[n.name] = len(steps)
    if slot.get(g.output) != out_slot:
        raise ArchitectureError(f"{label}: the model must return its head's ({head!r}) output")
    groups = tuple((grp.name, sid(grp.space)) for grp in g.groups)
    program = GraphProgram(tuple(steps), out_slot, tuple(spaces), groups)
    arch = Architecture(tuple(specs), tuple(ops_after), tuple(input_shape), program)
    return arch, weights
