"""One front door for building networks: `create_model(name, input_shape, num_classes, **kw)`.

The UI, the CLI and checkpoint loading all need "a LeNet-5 for 1x28x28 and 10 classes" from a
name; a single registry keeps the list of choices, the error for a wrong name and the spec
bookkeeping in one place. Every model it returns is what the zipping engine traces (a chain of
nn.Linear / nn.Conv2d / nn.BatchNorm2d / activations / pooling / flatten / dropout, or a ResNet
with residual additions), and carries the `ModelSpec` it was built from as `model.mtz_spec`, so a
checkpoint card can rebuild it with `build_model(spec)`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .resnet import TORCHVISION_RESNETS, build_resnet20, build_torchvision_resnet
from .simple import build_lenet5, build_lenet300, build_mlp
from .spec import ModelSpec
from .vgg import VGG_VARIANTS, build_vgg

__all__ = [
    "MODEL_BUILDERS",
    "create_model",
    "build_model",
    "list_models",
    "model_options",
    "get_model_spec",
    "SPEC_ATTR",
]

SPEC_ATTR = "mtz_spec"

Builder = Callable[..., tuple[nn.Module, dict[str, Any]]]

MODEL_BUILDERS: dict[str, Builder] = {
    "mlp": build_mlp,
    "lenet300": build_lenet300,
    "lenet5": build_lenet5,
    **{name: functools.partial(build_vgg, name) for name in VGG_VARIANTS},
    "resnet20": build_resnet20,
    **{name: functools.partial(build_torchvision_resnet, name) for name in TORCHVISION_RESNETS},
}


def list_models() -> list[str]:
    """Registry names, in a stable order."""
    return list(MODEL_BUILDERS)


def _builder(name: str) -> Builder:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return MODEL_BUILDERS[key]


def model_options(name: str) -> dict[str, Any]:
    """The keyword options a model accepts, with their defaults (for UIs and error messages)."""
    params = list(inspect.signature(_builder(name)).parameters.values())
    return {p.name: p.default for p in params[2:]}  # after input_shape, num_classes


def create_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build registry model `name` (see `list_models()`) with fresh weights.

    `kwargs` are the model's options (`model_options(name)`); unknown ones are a TypeError naming
    the accepted ones. `seed`, if given, makes the initial weights reproducible without touching
    the global RNG. No pretrained weights are ever loaded.
    """
    builder = _builder(name)
    key = name.strip().lower()
    allowed = model_options(key)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"model {key!r} got unknown option(s) {unknown}; it accepts: "
            f"{', '.join(allowed) or 'no options'}"
        )
    spec = ModelSpec.make(key, tuple(input_shape), num_classes, **kwargs)  # validates shape/classes
    if seed is None:
        model, used = builder(spec.input_shape, spec.num_classes, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model, used = builder(spec.input_shape, spec.num_classes, **kwargs)
    full = ModelSpec.make(key, spec.input_shape, spec.num_classes, **used)
    setattr(model, SPEC_ATTR, full)
    return model


def build_model(spec: ModelSpec, *, seed: int | None = None) -> nn.Module:
    """Rebuild the (untrained) model a `ModelSpec` describes."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build_model needs a ModelSpec, got {type(spec).__name__}")
    return create_model(spec.name, spec.input_shape, spec.num_classes, seed=seed, **spec.kwargs)


def get_model_spec(model: nn.Module) -> ModelSpec | None:
    """The spec a registry model was built from, or None for any other module."""
    spec = getattr(model, SPEC_ATTR, None)
    return spec if isinstance(spec, ModelSpec) else None
