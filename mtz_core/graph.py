"""A model as a graph of unit spaces: which weight layers must share one matching.

`architecture.trace_model` reads plain chains. Residual networks add the outputs of several
layers into one stream, so those layers' output units must be permuted and shared together: if
unit i of A's stream is paired with unit j of B's, every layer writing into that stream pairs its
unit i with its unit j, or the additions stop lining up. `trace_graph` finds these **channel
groups** with a union-find over the tensors' unit spaces:

* a weight layer (Linear, Conv2d with groups=1) starts a new space for its output;
* batch norm, element-wise activations, pooling, dropout, flatten, identity and spatial
  subsampling (`x[:, :, ::2, ::2]`) keep their input's space (flatten: the next linear layer
  reads each unit at several positions);
* a residual addition (`+`, `+=`, `torch.add`, `Tensor.add`) merges its inputs' spaces;
* zero channel padding (`F.pad(x, (0, 0, 0, 0, p, q))`, the "option A" shortcut of CIFAR ResNets)
  starts a space that *embeds* its input's units at offset p.

Everything else — concatenation, products of two tensors, grouped or depthwise convolutions,
LayerNorm, attention, a module with weights used twice, several inputs or outputs — is refused with
an error naming the node and the model. A group is zippable when it is neither the input's space
nor the output's (the heads); groups come in the order of their first weight layer.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .architecture import ArchitectureError, _is_flatten_call, _is_meta_node
from .ops import MIXING, OpSpec, is_getitem, op_from_call, op_from_module

__all__ = ["GraphNode", "ChannelGroup", "ModelGraph", "trace_graph"]

_ADDS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_WEIGHTS = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class GraphNode:
    """One tensor-producing node. `kind`: input, weight, norm, op, add, embed or output."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    space: int  # the unit space of the node's output (canonical id after the union-find)
    width: int  # dim 1 of the output: its units, or units × positions after a flatten
    module: str | None = None  # weight and norm nodes: the module's path
    op: OpSpec | None = None  # op nodes
    offset: int = 0  # embed nodes: where the input's units land


@dataclass(frozen=True)
class ChannelGroup:
    """Weight layers whose outputs form one unit space (summed by residual additions).

    `members` write into the space, `readers` read it, `embeds` (option-A shortcuts) copy
    another space's units into it at an offset; `norms` maps a member to the batch norm right
    after it, if any.
    """

    name: str
    space: int
    units: int
    members: tuple[str, ...]
    readers: tuple[str, ...]
    embeds: tuple[str, ...] = ()
    norms: tuple[tuple[str, str], ...] = ()

    @property
    def residual(self) -> bool:
        """More than one producer: a residual stream."""
        return len(self.members) + len(self.embeds) > 1


@dataclass(frozen=True)
class ModelGraph:
    nodes: tuple[GraphNode, ...]
    groups: tuple[ChannelGroup, ...]  # zippable, in zip order
    heads: tuple[str, ...]  # weight layers writing the output's space (never zipped)
    input_shape: tuple[int, ...]
    output: str = ""  # the node the model returns
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> int:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)
        return min(a, b)


def _shapes(gm: torch.fx.GraphModule, input_shape: tuple[int, ...], label: str) -> dict:
    """Each node's output shape, from one forward pass of a meta-device copy."""
    from torch.fx.passes.shape_prop import ShapeProp

    meta = copy.deepcopy(gm).to("meta").eval()
    first = next(iter(meta.parameters()), None)
    dtype = first.dtype if first is not None else torch.get_default_dtype()
    try:
        ShapeProp(meta).propagate(torch.empty((1, *input_shape), device="meta", dtype=dtype))
    except Exception as exc:  # noqa: BLE001 - any failure means the shape does not fit
        raise ArchitectureError(
            f"{label}: cannot run on an input of shape {tuple(input_shape)}: {exc}"
        ) from exc
    out = {}
    for node in meta.graph.nodes:
        tm = node.meta.get("tensor_meta")
        if tm is not None and hasattr(tm, "shape"):
            out[node.name] = tuple(tm.shape)
    return out


def _is_subsample(node: torch.fx.Node) -> bool:
    """x[:, :, a::s, b::t]: every batch entry and channel, a strided window of positions."""
    if not (node.op == "call_function" and is_getitem(node.target)):
        return False
    index = node.args[1]
    if not isinstance(index, tuple) or len(index) < 2:
        return False
    full = slice(None, None, None)
    return index[0] == full and index[1] == full and all(isinstance(i, slice) for i in index[2:])


def _channel_pad(node: torch.fx.Node) -> tuple[int, int] | None:
    """(before, after) for F.pad(x, (0, 0, 0, 0, p, q)) with a zero constant, else None."""
    if node.op != "call_function" or node.target is not F.pad:
        return None
    pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", 0)
    if mode != "constant" or value not in (0, 0.0, None) or not isinstance(pad, (tuple, list)):
        return None
    if len(pad) != 6 or any(p != 0 for p in pad[:4]):
        return None
    return int(pad[4]), int(pad[5])


def trace_graph(
    model: nn.Module, input_shape: tuple[int, ...], *, label: str = "model"
) -> ModelGraph:
    """The unit-space graph of `model` and its channel groups (see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{label} must be a torch.nn.Module, got {type(model).__name__}")
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001
        raise ArchitectureError(
            f"{label} could not be traced with torch.fx ({type(exc).__name__}: {exc}); its "
            "forward must not have data-dependent control flow"
        ) from exc
    shapes = _shapes(gm, tuple(int(s) for s in input_shape), label)
    modules = dict(gm.named_modules())
    uf = _UnionFind()
    space: dict[str, int] = {}
    raw: list[dict[str, Any]] = []
    used: set[str] = set()
    meta: set[torch.fx.Node] = set()
    output_node = None
    for node in gm.graph.nodes:
        where = f"{label}: node {node.name!r}"
        if node.op == "placeholder":
            if any(r["kind"] == "input" for r in raw):
                raise ArchitectureError(
                    f"{where}: models with more than one input are not supported"
                )
            space[node.name] = uf.new()
            raw.append({"name": node.name, "kind": "input", "inputs": ()})
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node):
                raise ArchitectureError(f"{where}: the model must return one tensor")
            output_node = out.name
            continue
        if node.op == "get_attr":
            raise ArchitectureError(
                f"{where}: reads the tensor {node.target!r} directly; only weight layers and "
                "batch norms may hold parameters"
            )
        if _is_meta_node(node, meta):
            meta.add(node)
            continue
        inputs = [n for n in _tensor_args(node) if n not in meta]
        names = tuple(n.name for n in inputs)
        entry: dict[str, Any] = {"name": node.name, "inputs": names}
        if _is_add(node):
            if len(inputs) != 2:
                raise ArchitectureError(f"{where}: an addition of {len(inputs)} tensors")
            a, b = (shapes.get(n) for n in names)
            if a != b:
                raise ArchitectureError(
                    f"{where}: adds tensors of shapes {a} and {b}; residual additions need equal "
                    "shapes (broadcasting is not supported)"
                )
            space[node.name] = uf.union(space[names[0]], space[names[1]])
            raw.append({**entry, "kind": "add"})
            continue
        if len(inputs) != 1:
            raise ArchitectureError(
                f"{where} ({node.op} {_target_name(node)}) combines {len(inputs)} tensors: only "
                "residual additions may combine tensors (concatenation, products and attention "
                "are not supported)"
            )
        src = names[0]
        if node.op == "call_module":
            target = str(node.target)
            module = modules[target]
            if isinstance(module, _WEIGHTS) or isinstance(module, _NORMS):
                if target in used:
                    raise ArchitectureError(
                        f"{where}: module {target!r} with weights is used twice; shared "
                        "modules are not supported"
                    )
                used.add(target)
            if isinstance(module, _WEIGHTS):
                if isinstance(module, nn.Conv2d) and module.groups != 1:
                    raise ArchitectureError(
                        f"{where}: grouped or depthwise convolution {target!r} "
                        f"(groups={module.groups}) is not supported"
                    )
                if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                    raise ArchitectureError(
                        f"{where}: padding_mode={module.padding_mode!r} is not supported"
                    )
                space[node.name] = uf.new()
                raw.append({**entry, "kind": "weight", "module": target})
                continue
            if isinstance(module, _NORMS):
                producer = next(r for r in raw if r["name"] == src)
                if producer["kind"] != "weight":
                    raise ArchitectureError(
                        f"{where}: batch norm {target!r} must come right after a weight layer"
                    )
                space[node.name] = space[src]
                raw.append({**entry, "kind": "norm", "module": target})
                continue
            try:
                op = op_from_module(module)
            except ValueError as exc:
                raise ArchitectureError(f"{where}: {exc}") from exc
            if op is None:
                raise ArchitectureError(
                    f"{where}: unsupported module {type(module).__name__} ({target!r}); "
                    "supported: Linear, Conv2d (groups=1), BatchNorm1d/2d after them, "
                    "element-wise activations, pooling, Flatten, Dropout, Identity and residual "
                    "additions"
                )
        elif _is_subsample(node):
            op = OpSpec.make("subsample", index=_index_spec(node.args[1]))
        elif (pads := _channel_pad(node)) is not None:
            before, _ = pads
            space[node.name] = uf.new()
            raw.append({**entry, "kind": "embed", "offset": before})
            continue
        elif _is_flatten_call(node, meta):
            op = OpSpec.make("flatten")
        elif node.op in ("call_function", "call_method"):
            try:
                op = op_from_call(
                    where,
                    node.target,
                    tuple(node.args[1:]),
                    dict(node.kwargs),
                    node.op == "call_method",
                )
            except ValueError as exc:
                raise ArchitectureError(str(exc)) from exc
            if op is None:
                raise ArchitectureError(f"{where}: unsupported operation {_target_name(node)!r}")
        else:  # pragma: no cover
            raise ArchitectureError(f"{where}: unsupported node kind {node.op!r}")
        space[node.name] = space[src]
        raw.append({**entry, "kind": "op", "op": op})
    if output_node is None:
        raise ArchitectureError(f"{label}: the graph has no output")
    return _build(raw, space, uf, shapes, output_node, tuple(int(s) for s in input_shape), label)


def _build(raw, space, uf, shapes, output_node, input_shape, label) -> ModelGraph:
    def units(name: str) -> int:
        shape = shapes.get(name)
        if shape is None or len(shape) < 2:
            raise ArchitectureError(f"{label}: node {name!r} has no (batch, units, …) shape")
        return int(shape[1])

    canon = {n: uf.find(s) for n, s in space.items()}
    by_name = {r["name"]: r for r in raw}
    # an op that mixes units (softmax) is refused unless only the output follows
    nodes = []
    for r in raw:
        if r["kind"] == "op" and r["op"].kind in MIXING:
            if canon[r["name"]] != canon[output_node]:
                raise ArchitectureError(
                    f"{label}: node {r['name']!r} ({r['op'].describe()}) mixes the units of a "
                    "hidden layer; only element-wise operations, pooling, flatten and dropout "
                    "may sit between weight layers (a softmax may follow the head)"
                )
        # a flatten changes the tensor's width but not its units: read units upstream of it
        width = units(r["name"]) if r["kind"] != "input" else int(input_shape[0])
        nodes.append(
            GraphNode(
                name=r["name"],
                kind=r["kind"],
                inputs=r["inputs"],
                space=canon[r["name"]],
                width=width,
                module=r.get("module"),
                op=r.get("op"),
                offset=r.get("offset", 0),
            )
        )
    input_space = canon[raw[0]["name"]]
    output_space = canon[output_node]
    if input_space == output_space:
        raise ArchitectureError(f"{label}: the output is in the input's space (no weight layer)")
    members: dict[int, list[str]] = {}
    readers: dict[int, list[str]] = {}
    embeds: dict[int, list[str]] = {}
    norms: dict[int, list[tuple[str, str]]] = {}
    first: dict[int, int] = {}
    for pos, r in enumerate(raw):
        sp = canon[r["name"]]
        if r["kind"] == "weight":
            members.setdefault(sp, []).append(r["module"])
            first.setdefault(sp, pos)
            readers.setdefault(canon[r["inputs"][0]], []).append(r["module"])
        elif r["kind"] == "embed":
            embeds.setdefault(sp, []).append(r["name"])
        elif r["kind"] == "norm":
            producer = by_name[r["inputs"][0]]
            norms.setdefault(sp, []).append((producer["module"], r["module"]))
    if input_space in members or input_space in embeds:
        names = members.get(input_space, []) + embeds.get(input_space, [])
        raise ArchitectureError(
            f"{label}: {names} add into the model's input; the input's units cannot be zipped"
        )
    groups = []
    for sp in sorted(members, key=lambda s: first[s]):
        if sp == output_space:
            continue
        ms = members[sp]
        widths = {units(_node_of(raw, m)) for m in ms}
        if len(widths) != 1:  # pragma: no cover - the additions already checked shapes
            raise ArchitectureError(f"{label}: layers {ms} add outputs of widths {sorted(widths)}")
        groups.append(
            ChannelGroup(
                name=ms[0] if len(ms) == 1 else f"{ms[0]} (+{len(ms) - 1})",
                space=sp,
                units=widths.pop(),
                members=tuple(ms),
                readers=tuple(readers.get(sp, ())),
                embeds=tuple(embeds.get(sp, ())),
                norms=tuple(norms.get(sp, ())),
            )
        )
    for sp in embeds:
        if sp not in members:
            raise ArchitectureError(
                f"{label}: zero-padding shortcut(s) {embeds[sp]} are not added to a layer's output"
            )
    heads = tuple(members.get(output_space, ()))
    if not heads:
        raise ArchitectureError(f"{label}: no weight layer produces the output")
    if not groups:
        raise ArchitectureError(f"{label}: no hidden layer to zip before the head")
    return ModelGraph(tuple(nodes), tuple(groups), heads, input_shape, output_node, dict(shapes))


def _node_of(raw, module: str) -> str:
    return next(r["name"] for r in raw if r.get("module") == module and r["kind"] == "weight")


def _index_spec(index: tuple) -> tuple:
    return tuple((s.start, s.stop, s.step) for s in index[2:])


def _target_name(node: torch.fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target))


def _tensor_args(node: torch.fx.Node) -> list[torch.fx.Node]:
    found: list[torch.fx.Node] = []
    torch.fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    unique: list[torch.fx.Node] = []
    for n in found:
        if n not in unique:
            unique.append(n)
    if len(found) == 2 and len(unique) == 1:  # x + x
        return found
    return unique


def _is_add(node: torch.fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADDS:
        return node.kwargs.get("alpha", 1) == 1
    return node.op == "call_method" and node.target in _ADD_METHODS
