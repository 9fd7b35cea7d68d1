"""`ModelSpec`: how a model was made, small enough to travel in a checkpoint's metadata.

A checkpoint holds tensors only; to turn it back into a network one needs the architecture name,
the input shape, the class count and the builder options (e.g. `widths=(300, 100)` or
`width=0.125`). `ModelSpec` records exactly the arguments of `create_model` (with defaults filled
in by the builder), so `build_model(spec)` rebuilds the same module tree and the saved state dict
fits it. It is frozen and hashable (options are stored as sorted `(name, value)` pairs with lists
turned into tuples) and round-trips through JSON via `to_dict` / `from_dict`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ModelSpec"]


def _freeze(value: Any, where: str) -> Any:
    """Tuples for lists (hashable, comparable); only JSON-friendly scalars are allowed."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v, where) for v in value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"model option {where}={value!r} must be finite")
        return value
    raise TypeError(
        f"model option {where} has type {type(value).__name__}; allowed are None, bool, int, "
        "float, str and lists/tuples of them (they must survive a JSON round trip)"
    )


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelSpec:
    """Architecture name + input shape + class count + builder options."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    options: tuple[tuple[str, Any], ...] = field(default=())

    @staticmethod
    def make(
        name: str, input_shape: tuple[int, ...] | list[int], num_classes: int, **kwargs: Any
    ) -> ModelSpec:
        if not isinstance(name, str) or not name:
            raise TypeError(f"model name must be a non-empty str, got {name!r}")
        shape = tuple(input_shape)
        if not shape or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
        ):
            raise ValueError(
                f"input_shape must be a non-empty tuple of positive ints such as (1, 28, 28) or "
                f"(2,), got {input_shape!r}"
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        options = tuple(sorted((k, _freeze(v, k)) for k, v in kwargs.items()))
        return ModelSpec(name, shape, num_classes, options)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The builder options as keyword arguments."""
        return dict(self.options)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        shape = "x".join(str(s) for s in self.input_shape)
        return f"{self.name}({opts}) on {shape} -> {self.num_classes} classes"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "kwargs": {k: _thaw(v) for k, v in self.options},
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> ModelSpec:
        if not isinstance(data, Mapping):
            raise TypeError(f"a model spec must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("name", "input_shape", "num_classes") if k not in data]
        if missing:
            raise ValueError(f"model spec is missing {missing}; it has keys {sorted(data)}")
        kwargs = data.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"model spec 'kwargs' must be a mapping, got {type(kwargs).__name__}")
        return ModelSpec.make(
            data["name"], tuple(data["input_shape"]), data["num_classes"], **kwargs
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> ModelSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"model spec is not valid JSON ({err})") from None
        return ModelSpec.from_dict(data)
