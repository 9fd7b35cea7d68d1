"""The operations that sit between weight layers, as plain data.

A zipped network must replay whatever the original models do between their weight layers
(activations, pooling, flatten, dropout) without keeping the original modules around: it is saved
as a spec plus tensors. So every supported module, function or method call is turned into an
`OpSpec` (a kind and JSON-friendly parameters) that knows how to apply itself and how to become a
module again for `ZippedNet.export_task`.

Between weight layers these operations act on each channel separately (or are a flatten), which
is what lets the zipped network run them on the concatenation [shared channels; task's own
channels]; softmax and log-softmax mix units and are accepted only after the head (`MIXING`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OpSpec", "op_from_module", "op_from_call", "ELEMENTWISE", "CHANNELWISE", "MIXING"]


def _freeze(value: Any) -> Any:
    """Tuples for lists (hashable, comparable), recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class OpSpec:
    """One operation between weight layers: `kind` plus its parameters as (name, value) pairs."""

    kind: str
    params: tuple[tuple[str, Any], ...] = field(default=())

    @staticmethod
    def make(kind: str, **params: Any) -> OpSpec:
        return OpSpec(kind, tuple(sorted((k, _freeze(v)) for k, v in params.items())))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def describe(self) -> str:
        if not self.params:
            return self.kind
        return f"{self.kind}({', '.join(f'{k}={v}' for k, v in self.params)})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": {k: v for k, v in self.params}}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> OpSpec:
        return OpSpec.make(data["kind"], **data.get("params", {}))

    def apply(self, x: torch.Tensor, training: bool = False) -> torch.Tensor:
        p = self.kwargs
        if self.kind == "dropout":
            return F.dropout(x, p["p"], training=training)
        if self.kind == "flatten":
            return torch.flatten(x, 1)
        return _APPLY[self.kind](x, **p)

    def to_module(self) -> nn.Module:
        p = self.kwargs
        return _MODULES[self.kind](**p)


# kind -> functional form (all but dropout/flatten, handled in OpSpec.apply)
_APPLY: dict[str, Callable[..., torch.Tensor]] = {
    "identity": lambda x: x,
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": lambda x, negative_slope: F.leaky_relu(x, negative_slope),
    "elu": lambda x, alpha: F.elu(x, alpha),
    "gelu": lambda x, approximate: F.gelu(x, approximate=approximate),
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": lambda x, beta, threshold: F.softplus(x, beta, threshold),
    "hardtanh": lambda x, min_val, max_val: F.hardtanh(x, min_val, max_val),
    "max_pool2d": lambda x, **p: F.max_pool2d(x, **p),
    "avg_pool2d": lambda x, **p: F.avg_pool2d(x, **p),
    "adaptive_avg_pool2d": lambda x, output_size: F.adaptive_avg_pool2d(x, output_size),
    "adaptive_max_pool2d": lambda x, output_size: F.adaptive_max_pool2d(x, output_size),
    "softmax": lambda x, dim: F.softmax(x, dim=dim),
    "log_softmax": lambda x, dim: F.log_softmax(x, dim=dim),
    "subsample": lambda x, index: x[(slice(None), slice(None), *(slice(*i) for i in index))],
}


class Subsample(nn.Module):
    """x[:, :, a::s, b::t] as a module (the spatial part of an option-A ResNet shortcut)."""

    def __init__(self, index: tuple) -> None:
        super().__init__()
        self.index = tuple(tuple(i) for i in index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _APPLY["subsample"](x, self.index)

    def extra_repr(self) -> str:
        return f"index={self.index}"


_MODULES: dict[str, Callable[..., nn.Module]] = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "hardtanh": nn.Hardtanh,
    "dropout": nn.Dropout,
    "flatten": nn.Flatten,
    "max_pool2d": nn.MaxPool2d,
    "avg_pool2d": nn.AvgPool2d,
    "adaptive_avg_pool2d": nn.AdaptiveAvgPool2d,
    "adaptive_max_pool2d": nn.AdaptiveMaxPool2d,
    "softmax": nn.Softmax,
    "log_softmax": nn.LogSoftmax,
    "subsample": Subsample,
}

#: kinds that act on every entry separately
ELEMENTWISE = frozenset(
    {"identity", "relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid"}
    | {"softplus", "hardtanh", "dropout"}
)
#: kinds that act on every channel separately (elementwise ones included)
CHANNELWISE = (
    ELEMENTWISE
    | {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"}
    | {"adaptive_max_pool2d", "subsample"}
)
#: kinds that mix a layer's units: allowed only after the head
MIXING = frozenset({"softmax", "log_softmax"})


def op_from_module(module: nn.Module) -> OpSpec | None:
    """The OpSpec for a supported module, or None when the module is not one of ours."""
    m = module
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ValueError(
                f"nn.Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) is not supported: "
                "only a flatten from dim 1 to the end (start_dim=1, end_dim=-1)"
            )
        return OpSpec.make("flatten")
    simple = {
        nn.Identity: "identity",
        nn.ReLU: "relu",
        nn.ReLU6: "relu6",
        nn.SiLU: "silu",
        nn.Tanh: "tanh",
        nn.Sigmoid: "sigmoid",
    }
    for cls, kind in simple.items():
        if type(m) is cls:
            return OpSpec.make(kind)
    if isinstance(m, nn.LeakyReLU):
        return OpSpec.make("leaky_relu", negative_slope=float(m.negative_slope))
    if isinstance(m, nn.ELU):
        return OpSpec.make("elu", alpha=float(m.alpha))
    if isinstance(m, nn.GELU):
        return OpSpec.make("gelu", approximate=m.approximate)
    if isinstance(m, nn.Softplus):
        return OpSpec.make("softplus", beta=float(m.beta), threshold=float(m.threshold))
    if type(m) is nn.Hardtanh:
        return OpSpec.make("hardtanh", min_val=float(m.min_val), max_val=float(m.max_val))
    if type(m) is nn.Dropout:
        return OpSpec.make("dropout", p=float(m.p))
    if isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            raise ValueError("nn.MaxPool2d(return_indices=True) is not supported")
        return OpSpec.make(
            "max_pool2d",
            kernel_size=m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            ceil_mode=bool(m.ceil_mode),
        )
    if isinstance(m, nn.AvgPool2d):
        return OpSpec.make(
            "avg_pool2d",
            kernel_size=m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            ceil_mode=bool(m.ceil_mode),
            count_include_pad=bool(m.count_include_pad),
            divisor_override=m.divisor_override,
        )
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return OpSpec.make("adaptive_avg_pool2d", output_size=m.output_size)
    if isinstance(m, nn.AdaptiveMaxPool2d):
        if m.return_indices:
            raise ValueError("nn.AdaptiveMaxPool2d(return_indices=True) is not supported")
        return OpSpec.make("adaptive_max_pool2d", output_size=m.output_size)
    if isinstance(m, nn.Softmax):
        return OpSpec.make("softmax", dim=m.dim)
    if isinstance(m, nn.LogSoftmax):
        return OpSpec.make("log_softmax", dim=m.dim)
    return None


# Functional forms: target -> (kind, parameter names after the input, defaults).
_NO_PARAMS: tuple[tuple[str, Any], ...] = ()
_POOL_MAX = (
    ("kernel_size", None),
    ("stride", None),
    ("padding", 0),
    ("dilation", 1),
    ("ceil_mode", False),
    ("return_indices", False),
)
_POOL_AVG = (
    ("kernel_size", None),
    ("stride", None),
    ("padding", 0),
    ("ceil_mode", False),
    ("count_include_pad", True),
    ("divisor_override", None),
)
_FUNCTIONS: dict[Any, tuple[str, tuple[tuple[str, Any], ...]]] = {
    F.relu: ("relu", (("inplace", False),)),
    torch.relu: ("relu", _NO_PARAMS),
    F.relu6: ("relu6", (("inplace", False),)),
    F.leaky_relu: ("leaky_relu", (("negative_slope", 0.01), ("inplace", False))),
    F.elu: ("elu", (("alpha", 1.0), ("inplace", False))),
    F.gelu: ("gelu", (("approximate", "none"),)),
    F.silu: ("silu", (("inplace", False),)),
    torch.tanh: ("tanh", _NO_PARAMS),
    F.tanh: ("tanh", _NO_PARAMS),
    torch.sigmoid: ("sigmoid", _NO_PARAMS),
    F.sigmoid: ("sigmoid", _NO_PARAMS),
    F.softplus: ("softplus", (("beta", 1.0), ("threshold", 20.0))),
    F.hardtanh: ("hardtanh", (("min_val", -1.0), ("max_val", 1.0), ("inplace", False))),
    F.dropout: ("dropout", (("p", 0.5), ("training", True), ("inplace", False))),
    F.max_pool2d: ("max_pool2d", _POOL_MAX),
    torch.max_pool2d: ("max_pool2d", _POOL_MAX[:5]),
    F.avg_pool2d: ("avg_pool2d", _POOL_AVG),
    F.adaptive_avg_pool2d: ("adaptive_avg_pool2d", (("output_size", None),)),
    F.adaptive_max_pool2d: (
        "adaptive_max_pool2d",
        (("output_size", None), ("return_indices", False)),
    ),
    F.softmax: ("softmax", (("dim", None), ("_stacklevel", 3), ("dtype", None))),
    torch.softmax: ("softmax", (("dim", None), ("dtype", None))),
    F.log_softmax: ("log_softmax", (("dim", None), ("_stacklevel", 3), ("dtype", None))),
    torch.log_softmax: ("log_softmax", (("dim", None), ("dtype", None))),
}
_METHODS: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {
    "relu": ("relu", _NO_PARAMS),
    "tanh": ("tanh", _NO_PARAMS),
    "sigmoid": ("sigmoid", _NO_PARAMS),
    "softmax": ("softmax", (("dim", None), ("dtype", None))),
    "log_softmax": ("log_softmax", (("dim", None), ("dtype", None))),
    "contiguous": ("identity", _NO_PARAMS),
}
# Keyword-only flags that change nothing we replay.
_IGNORED = {"inplace", "training", "_stacklevel"}


def _bind(
    where: str, args: tuple[Any, ...], kwargs: dict[str, Any], names: tuple[tuple[str, Any], ...]
) -> dict[str, Any]:
    bound = {name: default for name, default in names}
    order = [name for name, _ in names]
    if len(args) > len(order):
        raise ValueError(f"{where}: too many arguments ({len(args)}) for a supported call")
    bound.update(zip(order, args))
    for key, value in kwargs.items():
        if key not in bound:
            raise ValueError(f"{where}: unsupported argument {key!r}")
        bound[key] = value
    return bound


def op_from_call(
    where: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], is_method: bool
) -> OpSpec | None:
    """The OpSpec for a supported function or tensor-method call (args exclude the input)."""
    table = _METHODS if is_method else _FUNCTIONS
    try:
        entry = table.get(target)
    except TypeError:  # unhashable target
        entry = None
    if entry is None:
        return None
    kind, names = entry
    p = _bind(where, args, kwargs, names)
    if p.pop("return_indices", False):
        raise ValueError(f"{where}: return_indices=True is not supported")
    if p.get("dtype") is not None:
        raise ValueError(f"{where}: a dtype argument is not supported")
    p.pop("dtype", None)
    if kind == "dropout" and not p.get("training", True):
        return OpSpec.make("identity")
    for key in _IGNORED:
        p.pop(key, None)
    if kind in ("softmax", "log_softmax") and p.get("dim") is None:
        raise ValueError(f"{where}: {kind} needs an explicit dim")
    if kind == "max_pool2d":
        p.setdefault("dilation", 1)
        p.setdefault("ceil_mode", False)
    return OpSpec.make(kind, **p)


def is_getitem(target: Any) -> bool:
    return target is operator.getitem
