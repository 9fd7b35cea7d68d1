"""Small chain networks: `mlp`, `lenet300` (LeNet-300-100) and `lenet5` (Caffe's LeNet-5).

These are the MTZ paper's MNIST networks plus a free-width MLP for 2-D toy tasks. They are plain
`nn.Sequential`s with named children (`fc1`, `relu1`, ..., `conv1`, `pool1`, ...), so that torch.fx
traces them to a single chain of supported layers and the state-dict keys read like the paper's
layer names. ReLUs are not in-place, so hooks that keep a layer's output see it unmodified.

Each builder returns the module and the options it actually used (defaults filled in), which the
registry stores in the model's `ModelSpec`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

__all__ = ["build_mlp", "build_lenet300", "build_lenet5", "lenet5_feature_size"]


def _flat_size(input_shape: tuple[int, ...]) -> int:
    size = 1
    for s in input_shape:
        size *= s
    return size


def _check_widths(widths: Any, name: str) -> tuple[int, ...]:
    if isinstance(widths, int) and not isinstance(widths, bool):
        widths = (widths,)
    try:
        out = tuple(widths)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, got {widths!r}") from None
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in out):
        raise ValueError(f"{name} must hold positive ints, got {widths!r}")
    return out


def _check_dropout(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, int | float) or not (0.0 <= p < 1.0):
        raise ValueError(f"dropout must be a probability in [0, 1), got {p!r}")
    return float(p)


def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    widths: tuple[int, ...] | list[int] = (256, 128),
    dropout: float = 0.0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Flatten -> [Linear(w) -> ReLU (-> Dropout)] for each w in `widths` -> Linear(num_classes).

    `widths=()` gives a linear classifier. Any input shape works (it is flattened first).
    """
    widths = _check_widths(widths, "widths")
    dropout = _check_dropout(dropout)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    fan_in = _flat_size(input_shape)
    for i, w in enumerate(widths, start=1):
        layers[f"fc{i}"] = nn.Linear(fan_in, w)
        layers[f"relu{i}"] = nn.ReLU()
        if dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        fan_in = w
    layers[f"fc{len(widths) + 1}"] = nn.Linear(fan_in, num_classes)
    return nn.Sequential(layers), {"widths": widths, "dropout": dropout}


def build_lenet300(
    input_shape: tuple[int, ...], num_classes: int
) -> tuple[nn.Module, dict[str, Any]]:
    """LeNet-300-100 (LeCun et al. 1998; the MTZ paper's MLP): Flatten, 300, ReLU, 100, ReLU,
    head - i.e. `mlp` with widths (300, 100), state-dict keys fc1, fc2, fc3."""
    model, _ = build_mlp(input_shape, num_classes, widths=(300, 100))
    return model, {}


def _lenet5_map(size: int, padding: int) -> int:
    """Side of the last feature map (0 if it vanishes): (conv5 -> pool2) twice."""
    for _ in range(2):
        size = size + 2 * padding - 4
        if size < 2:
            return 0
        size //= 2
    return size


def lenet5_feature_size(input_shape: tuple[int, ...], padding: int, channels: int = 50) -> int:
    """Inputs of fc1: channels x final height x final width."""
    return channels * _lenet5_map(input_shape[1], padding) * _lenet5_map(input_shape[2], padding)


def build_lenet5(
    input_shape: tuple[int, ...],
    num_classes: int,
    padding: int | None = None,
    channels: tuple[int, int] | list[int] = (20, 50),
    hidden: int = 500,
    conv_relu: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Caffe's LeNet-5 as in the MTZ paper: conv 20 5x5, maxpool 2, conv 50 5x5, maxpool 2,
    flatten, fc 500, ReLU, head (Caffe puts no ReLU after the convolutions; `conv_relu=True`
    adds them).

    `padding` is the convolutions' zero padding. Left as None it is the smallest of 0, 1, 2 that
    leaves a non-empty feature map: 0 for 28x28 MNIST (fc1 sees 50x4x4 = 800 inputs, as in Caffe)
    and for anything from 16x16 up, 1 for 12x12 to 15x15, 2 for 8x8 digits (fc1 sees 50x2x2).
    The padding chosen is recorded in the model's spec.
    """
    if len(input_shape) != 3:
        raise ValueError(
            f"lenet5 needs image inputs (C, H, W), got input_shape={input_shape}; "
            "use 'mlp' for flat or 2-D inputs"
        )
    channels = _check_widths(channels, "channels")
    if len(channels) != 2:
        raise ValueError(f"channels must be two ints (conv1, conv2), got {channels!r}")
    (hidden,) = _check_widths(hidden, "hidden")
    c, h, w = input_shape
    if padding is None:
        padding = next(
            (p for p in (0, 1, 2) if _lenet5_map(h, p) > 0 and _lenet5_map(w, p) > 0), None
        )
        if padding is None:
            raise ValueError(
                f"lenet5 cannot shrink a {h}x{w} input through two 5x5 convs and two 2x2 pools "
                "even with padding 2; inputs must be at least 4x4 (or pass a larger padding)"
            )
    elif isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int or None, got {padding!r}")
    features = lenet5_feature_size(input_shape, padding, channels[1])
    if features == 0:
        raise ValueError(
            f"lenet5 with padding={padding} shrinks a {h}x{w} input to nothing; use a larger "
            "padding or leave padding=None to choose one"
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv1"] = nn.Conv2d(c, channels[0], kernel_size=5, padding=padding)
    if conv_relu:
        layers["conv1_relu"] = nn.ReLU()
    layers["pool1"] = nn.MaxPool2d(2, 2)
    layers["conv2"] = nn.Conv2d(channels[0], channels[1], kernel_size=5, padding=padding)
    if conv_relu:
        layers["conv2_relu"] = nn.ReLU()
    layers["pool2"] = nn.MaxPool2d(2, 2)
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(features, hidden)
    layers["relu1"] = nn.ReLU()
    layers["fc2"] = nn.Linear(hidden, num_classes)
    used = {
        "padding": padding,
        "channels": channels,
        "hidden": hidden,
        "conv_relu": bool(conv_relu),
    }
    return nn.Sequential(layers), used
