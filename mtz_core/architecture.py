"""Read a model's architecture from the model itself: the table every algorithm reads.

`trace_model` runs `torch.fx.symbolic_trace` once and walks the graph, which must be a single chain
from the input to the output: weight layers (`nn.Linear`, `nn.Conv2d`), batch norm right after a
weight layer (folded into it, eval-mode statistics), and channel-wise operations in between
(`ops.OpSpec`). Anything else — a node that reads two tensors (residual additions, concatenation,
attention), a branch, a module called twice, an unknown module — is refused with an error naming the
node. Residual networks need a graph rather than a chain; `Architecture` is where that would go.

The result is plain data (`Architecture`, `LayerSpec`) plus the models' weights, cloned (the
given models are never modified): with batch norm folded in (`batch_norm="fold"`), or with each
hidden layer's norm kept (`"keep"`: `LayerSpec.norm`, read with `trace_norms`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.fx
from torch import nn

from .batches import all_finite
from .config import BATCH_NORMS
from .norms import NormState, norm_state
from .ops import MIXING, OpSpec, is_getitem, op_from_call, op_from_module
from .program import GraphProgram, ZipGroup

__all__ = [
    "ArchitectureError",
    "BATCH_NORMS",
    "LayerSpec",
    "Architecture",
    "trace_model",
    "trace_norms",
    "check_compatible",
]


class ArchitectureError(ValueError):
    """The model cannot be zipped as it is (unsupported structure or a mismatch between A and B)."""


class _NotAChain(ArchitectureError):
    """The model branches: `trace_model` reads it as a residual graph instead."""


@dataclass(frozen=True)
class LayerSpec:
    """One weight layer and what comes before it.

    `in_units` counts the units the layer's input is made of: channels for a convolution, for a
    linear layer the previous weight layer's neurons (or the input features for the first layer).
    A linear layer after a flatten of a conv map sees `positions` columns per unit (channel-major,
    as `torch.flatten` lays them out); everywhere else `positions` is 1. `bias` is False for a
    layer that has no bias and no batch norm folded into it: it then stores none when zipped.
    """

    name: str
    kind: str  # "linear" | "conv"
    in_units: int
    out_units: int
    positions: int = 1
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ops_before: tuple[OpSpec, ...] = ()
    batch_norm: str | None = None
    in_shape: tuple[int, ...] = ()  # per-sample shape of the layer's input (after ops_before)
    out_shape: tuple[int, ...] = ()
    bias: bool = True
    norm: bool = False  # batch norm kept per task after this layer (`mtz_core.norms`)
    norm_eps: float = 1e-5
    norm_momentum: float | None = 0.1
    norm_affine: bool = True

    @property
    def kernel_positions(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    @property
    def after_flatten(self) -> bool:
        """A linear layer reading a flattened conv map (more than one column per unit)."""
        return self.kind == "linear" and self.positions > 1

    def geometry(self) -> dict[str, Any]:
        """What must agree between the two models at this layer (widths may differ)."""
        g: dict[str, Any] = {"kind": self.kind}
        if self.kind == "conv":
            g.update(
                kernel_size=self.kernel_size,
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
            )
        g["positions"] = self.positions
        g["bias"] = self.bias
        g["norm kept"] = self.norm
        g["ops before"] = tuple(op.describe() for op in self.ops_before)
        return g

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "ops_before"}
        d["ops_before"] = [op.to_dict() for op in self.ops_before]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> LayerSpec:
        d = dict(d)
        d["ops_before"] = tuple(OpSpec.from_dict(o) for o in d["ops_before"])
        for key in ("kernel_size", "stride", "padding", "dilation", "in_shape", "out_shape"):
            d[key] = tuple(d[key])
        return LayerSpec(**d)


@dataclass(frozen=True)
class Architecture:
    """Weight layers in order, the last one the model's head: a chain (`graph` None: each
    layer reads the one before it, after its `ops_before`) or a residual network run by its
    `graph` program (`mtz_core.program`)."""

    layers: tuple[LayerSpec, ...]
    ops_after: tuple[OpSpec, ...] = ()
    input_shape: tuple[int, ...] = field(default=())
    graph: GraphProgram | None = None

    @property
    def hidden(self) -> tuple[LayerSpec, ...]:
        """Every weight layer but the head."""
        return self.layers[:-1]

    def zip_groups(self) -> tuple[ZipGroup, ...]:
        """The zippable unit spaces in zip order: for a chain one per hidden layer (its output,
        read by the next layer); for a residual network the channel groups."""
        if self.graph is not None:
            return self.graph.zip_groups()
        return tuple(ZipGroup(s.name, i, (i,), (i + 1,)) for i, s in enumerate(self.hidden))

    def to_dict(self) -> dict[str, Any]:
        d = {
            "layers": [layer.to_dict() for layer in self.layers],
            "ops_after": [op.to_dict() for op in self.ops_after],
            "input_shape": list(self.input_shape),
        }
        if self.graph is not None:
            d["graph"] = self.graph.to_dict()
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Architecture:
        return Architecture(
            layers=tuple(LayerSpec.from_dict(x) for x in d["layers"]),
            ops_after=tuple(OpSpec.from_dict(x) for x in d["ops_after"]),
            input_shape=tuple(d["input_shape"]),
            graph=GraphProgram.from_dict(d["graph"]) if d.get("graph") else None,
        )


@dataclass
class _Weight:
    name: str
    module: nn.Module
    ops_before: list[OpSpec]
    batch_norm: str | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _tensor_args(node: torch.fx.Node, meta: set[torch.fx.Node]) -> list[torch.fx.Node]:
    found: list[torch.fx.Node] = []
    torch.fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return [n for n in found if n not in meta]


def _is_flatten_call(node: torch.fx.Node, meta: set[torch.fx.Node]) -> bool:
    """torch.flatten(x, 1), x.flatten(1), x.view(x.size(0), -1), x.view(-1, n), x.reshape(...)."""
    args, kwargs = node.args[1:], dict(node.kwargs)
    if (
        node.op == "call_function"
        and node.target is torch.flatten
        or (node.op == "call_method" and node.target == "flatten")
    ):
        start = args[0] if args else kwargs.get("start_dim", 0)
        end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    if node.op == "call_method" and node.target in ("view", "reshape"):
        shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        if len(shape) != 2 or kwargs:
            return False
        first, second = shape
        return (
            second == -1
            and (first in meta or isinstance(first, int))
            or (first == -1 and isinstance(second, int))
        )
    return False


def _is_meta_node(node: torch.fx.Node, meta: set[torch.fx.Node]) -> bool:
    """Nodes that compute sizes, not tensors (x.size(0), x.shape[0])."""
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
        return True
    return node.op == "call_function" and is_getitem(node.target) and node.args[0] in meta


def _fold_batch_norm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if bn.running_mean is None or bn.running_var is None:
        raise ArchitectureError(
            f"batch norm {name!r} has no running statistics (track_running_stats=False); "
            "it cannot be folded into the layer before it"
        )
    dtype = weight.dtype
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    b = bias.detach().double() if bias is not None else torch.zeros_like(var)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    w = weight.detach().double() * scale.reshape(shape)
    return w.to(dtype), ((b - mean) * scale + beta).to(dtype)


def trace_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    label: str = "model",
    batch_norm: str = "fold",
) -> tuple[Architecture, list[tuple[torch.Tensor, torch.Tensor | None]]]:
    """Trace `model` into an `Architecture` and its (cloned) weights per layer (the bias None
    for a layer without one).

    `input_shape` is one sample's shape (no batch dimension); it fixes the spatial sizes and the
    number of positions a flatten produces. `batch_norm`: "fold" folds every batch norm into the
    layer before it (eval-mode statistics); "keep" keeps the batch norm after each hidden layer
    (`LayerSpec.norm`; the layer's weights are returned unfolded; read the norms with
    `trace_norms`). A norm after the head is folded either way: the head is never shared.

    A model that branches (residual additions, zero-padding shortcuts) is read as a graph
    (`mtz_core.program.trace_residual`): the architecture then carries its `graph`.
    """
    try:
        return _trace_chain(model, input_shape, label=label, batch_norm=batch_norm)
    except _NotAChain:
        pass  # a branching model: read it as a graph (its own errors name what it cannot do)
    from .program import trace_residual

    return trace_residual(model, input_shape, label=label, batch_norm=batch_norm)


def _trace_chain(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    label: str = "model",
    batch_norm: str = "fold",
) -> tuple[Architecture, list[tuple[torch.Tensor, torch.Tensor | None]]]:
    if batch_norm not in BATCH_NORMS:
        raise ValueError(f"batch_norm must be one of {list(BATCH_NORMS)}, got {batch_norm!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{label} must be a torch.nn.Module, got {type(model).__name__}")
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many kinds; re-raise with context
        raise ArchitectureError(
            f"{label} could not be traced with torch.fx ({type(exc).__name__}: {exc}); "
            "its forward must be a plain chain of layers without data-dependent control flow"
        ) from exc
    modules = dict(gm.named_modules())
    items: list[_Weight] = []
    pending: list[OpSpec] = []
    mixing: str | None = None  # a node since the last weight layer that mixes channels
    meta: set[torch.fx.Node] = set()
    used_modules: set[str] = set()
    current: torch.fx.Node | None = None
    last_was_weight = False

    for node in gm.graph.nodes:
        where = f"{label}: node {node.name!r}"
        if node.op == "placeholder":
            if current is not None:
                raise ArchitectureError(
                    f"{where}: models with more than one input are not supported"
                )
            current = node
            continue
        if node.op == "output":
            out = node.args[0]
            if out is not current:
                raise ArchitectureError(
                    f"{where}: the model must return the output of its last layer as one tensor"
                )
            continue
        if node.op == "get_attr":
            raise ArchitectureError(
                f"{where}: reads the tensor {node.target!r} directly; only weight layers may "
                "hold parameters"
            )
        if _is_meta_node(node, meta):
            meta.add(node)
            continue
        inputs = _tensor_args(node, meta)
        if len(inputs) != 1:
            raise _NotAChain(
                f"{where} ({node.op} {node.target}) combines {len(inputs)} tensors: residual "
                "additions, concatenations and attention are not supported (a chain of layers is)"
            )
        if inputs[0] is not current:
            raise _NotAChain(
                f"{where} reads {inputs[0].name!r} instead of the previous node "
                f"{current.name if current is not None else None!r}: branches are not supported"
            )
        current = node
        if node.op == "call_module":
            target = str(node.target)
            module = modules[target]
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)):
                if target in used_modules:  # a parameter-free module (ReLU) may be reused
                    raise ArchitectureError(
                        f"{where}: module {target!r} with weights is used twice; shared modules "
                        "are not supported"
                    )
                used_modules.add(target)
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                if isinstance(module, nn.Conv2d):
                    if module.groups != 1:
                        raise ArchitectureError(f"{where}: grouped convolutions are not supported")
                    if module.padding_mode != "zeros":
                        raise ArchitectureError(
                            f"{where}: padding_mode={module.padding_mode!r} is not supported "
                            "(only 'zeros')"
                        )
                if mixing is not None:
                    raise ArchitectureError(
                        f"{label}: node {mixing!r} mixes the channels of a hidden layer before "
                        f"layer {target!r}; a zipped network applies the operations between "
                        "layers to each task's own arrangement of shared and unshared units, so "
                        "only elementwise operations, pooling, flatten and dropout may sit "
                        "between weight layers (a softmax may follow the head)"
                    )
                items.append(_Weight(target, module, pending))
                pending = []
                last_was_weight = True
                continue
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if not last_was_weight or items[-1].batch_norm is not None:
                    raise ArchitectureError(
                        f"{where}: batch norm must come right after a weight layer to be folded"
                    )
                items[-1].batch_norm = target
                continue
            try:
                op = op_from_module(module)
            except ValueError as exc:
                raise ArchitectureError(f"{where}: {exc}") from exc
            if op is None:
                raise ArchitectureError(
                    f"{where}: unsupported module {type(module).__name__} ({target!r}); "
                    "supported: Linear, Conv2d, BatchNorm after them, elementwise activations, "
                    "pooling, Flatten, Dropout"
                )
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
                name = getattr(node.target, "__name__", str(node.target))
                raise ArchitectureError(f"{where}: unsupported operation {name!r}")
        else:  # pragma: no cover - fx has no other node kinds
            raise ArchitectureError(f"{where}: unsupported node kind {node.op!r}")
        last_was_weight = False
        if op.kind in MIXING:
            mixing = f"{node.name}: {op.describe()}"
        if op.kind != "identity":
            pending.append(op)

    if len(items) < 2:
        raise ArchitectureError(
            f"{label} has {len(items)} weight layer(s); zipping needs at least one hidden layer "
            "before the head"
        )
    keep = batch_norm == "keep"
    return _finish(items, pending, modules, tuple(int(s) for s in input_shape), label, keep)


def _finish(
    items: list[_Weight],
    ops_after: list[OpSpec],
    modules: dict[str, nn.Module],
    input_shape: tuple[int, ...],
    label: str,
    keep_norms: bool = False,
) -> tuple[Architecture, list[tuple[torch.Tensor, torch.Tensor | None]]]:
    """Propagate shapes on the meta device and collect the weights."""
    x = torch.empty((1, *input_shape), device="meta")
    prev_units: int | None = None
    specs: list[LayerSpec] = []
    weights: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for position, item in enumerate(items):
        keep = keep_norms and item.batch_norm is not None and position < len(items) - 1
        try:
            for op in item.ops_before:
                x = op.apply(x)
        except Exception as exc:  # noqa: BLE001
            raise ArchitectureError(
                f"{label}: cannot apply the operations before layer {item.name!r} to an input "
                f"of shape {tuple(x.shape[1:])}: {exc}"
            ) from exc
        spec, w, b, x = make_layer(item, x, prev_units, modules, input_shape, label, keep)
        prev_units = spec.out_units
        specs.append(spec)
        weights.append((w, b))
    for op in ops_after:
        x = op.apply(x)
    if math.prod(x.shape[1:]) != specs[-1].out_units or x.dim() != 2:
        raise ArchitectureError(
            f"{label}: the operations after the head change its output shape to "
            f"{tuple(x.shape[1:])}; only elementwise operations and softmax may follow the head"
        )
    return Architecture(tuple(specs), tuple(ops_after), input_shape), weights


def make_layer(
    item: _Weight,
    x: torch.Tensor,
    prev_units: int | None,
    modules: dict[str, nn.Module],
    input_shape: tuple[int, ...],
    label: str,
    keep: bool,
) -> tuple[LayerSpec, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One weight layer's spec and (cloned) weights from its input `x` (meta device);
    `prev_units` the units its input is made of (None: the model's input). Returns the spec,
    the weight, the bias (None without) and the layer's output (meta)."""
    norm_args: dict[str, Any] = {}
    m = item.module
    w = m.weight.detach().clone()
    b = m.bias.detach().clone() if m.bias is not None else None
    if keep:
        bn = modules[item.batch_norm]
        norm_state(bn, item.batch_norm)  # refuses a norm without running statistics
        norm_args = {
            "norm_eps": float(bn.eps),
            "norm_momentum": None if bn.momentum is None else float(bn.momentum),
            "norm_affine": bn.weight is not None,
        }
    elif item.batch_norm is not None:
        w, b = _fold_batch_norm(w, b, modules[item.batch_norm], item.batch_norm)
    has_bias = b is not None
    in_shape = tuple(x.shape[1:])
    if isinstance(m, nn.Linear):
        if x.dim() != 2 or x.shape[1] != m.in_features:
            raise ArchitectureError(
                f"{label}: layer {item.name!r} expects {m.in_features} input features but "
                f"receives shape {in_shape} (input shape {input_shape})"
            )
        features = m.in_features
        units, positions = features, 1
        if prev_units is not None:
            if features % prev_units != 0:
                raise ArchitectureError(
                    f"{label}: layer {item.name!r} reads {features} features, not a multiple "
                    f"of the {prev_units} units of the layer before"
                )
            units, positions = prev_units, features // prev_units
        spec = LayerSpec(
            item.name,
            "linear",
            units,
            m.out_features,
            positions,
            ops_before=tuple(item.ops_before),
            batch_norm=item.batch_norm,
            in_shape=in_shape,
            out_shape=(m.out_features,),
            bias=has_bias,
            norm=keep,
            **norm_args,
        )
        x = torch.empty((1, m.out_features), device="meta")
    else:
        if x.dim() != 4 or x.shape[1] != m.in_channels:
            raise ArchitectureError(
                f"{label}: layer {item.name!r} expects {m.in_channels} input channels but "
                f"receives shape {in_shape} (input shape {input_shape})"
            )
        padding = m.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            else:
                k, d = _pair(m.kernel_size), _pair(m.dilation)
                if any(d[i] * (k[i] - 1) % 2 for i in range(2)):
                    raise ArchitectureError(
                        f"{label}: layer {item.name!r} uses padding='same' with an even "
                        "kernel (asymmetric padding), which is not supported"
                    )
                padding = tuple(d[i] * (k[i] - 1) // 2 for i in range(2))
        spec = LayerSpec(
            item.name,
            "conv",
            m.in_channels,
            m.out_channels,
            1,
            kernel_size=_pair(m.kernel_size),
            stride=_pair(m.stride),
            padding=_pair(padding),
            dilation=_pair(m.dilation),
            ops_before=tuple(item.ops_before),
            batch_norm=item.batch_norm,
            in_shape=in_shape,
            bias=has_bias,
            norm=keep,
            **norm_args,
        )
        x = torch.nn.functional.conv2d(
            x,
            torch.empty_like(w, device="meta"),
            None,
            spec.stride,
            spec.padding,
            spec.dilation,
        )
        spec = replace(spec, out_shape=tuple(x.shape[1:]))
    if not (all_finite(w) and (b is None or all_finite(b))):
        raise ValueError(f"{label}: layer {item.name!r} has NaN or Inf weights")
    return spec, w, b, x


def trace_norms(model: nn.Module, arch: Architecture) -> list[NormState | None]:
    """The kept batch norms of a model traced with batch_norm="keep", one per layer (None
    where a layer keeps none)."""
    modules = dict(model.named_modules())
    out: list[NormState | None] = []
    for spec in arch.layers:
        if not spec.norm:
            out.append(None)
            continue
        out.append(norm_state(modules[spec.batch_norm], spec.batch_norm))
    return out


def check_compatible(arch_a: Architecture, arch_b: Architecture) -> None:
    """Refuse a pair whose layers differ in anything but their widths (and the heads' outputs)."""
    if arch_a.input_shape != arch_b.input_shape:
        raise ArchitectureError(
            f"input shapes differ: A {arch_a.input_shape}, B {arch_b.input_shape}"
        )
    if arch_a.graph != arch_b.graph:
        what = {None: "a chain"}
        ga, gb = (what.get(a.graph, "a residual graph") for a in (arch_a, arch_b))
        raise ArchitectureError(
            f"the models are wired differently: A is {ga}, B is {gb}"
            + (" with other additions, shortcuts or offsets" if ga == gb else "")
        )
    if len(arch_a.layers) != len(arch_b.layers):
        names_a = [s.name for s in arch_a.layers]
        names_b = [s.name for s in arch_b.layers]
        raise ArchitectureError(
            f"layer counts differ: A has {len(names_a)} weight layers {names_a}, "
            f"B has {len(names_b)} {names_b}"
        )
    for i, (la, lb) in enumerate(zip(arch_a.layers, arch_b.layers)):
        ga, gb = la.geometry(), lb.geometry()
        if i == 0 and la.in_units != lb.in_units:
            ga["input units"], gb["input units"] = la.in_units, lb.in_units
        for key in ga:
            if ga[key] != gb[key]:
                raise ArchitectureError(
                    f"layer {i + 1} differs (A {la.name!r}, B {lb.name!r}): {key} is "
                    f"{ga[key]} in A and {gb[key]} in B"
                )
    ops_a = tuple(op.describe() for op in arch_a.ops_after)
    ops_b = tuple(op.describe() for op in arch_b.ops_after)
    if ops_a != ops_b:
        raise ArchitectureError(f"operations after the head differ: A {ops_a}, B {ops_b}")
