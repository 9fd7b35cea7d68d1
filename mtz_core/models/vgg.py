"""VGG-11/13/16/19 (with or without batch norm) as torchvision defines them, plus a width knob.

The MTZ paper zips VGG-16s; the explorer needs the same architecture at toy sizes too. So the
layer configuration is torchvision's own (`VGG_CFGS`, a copy of `torchvision.models.vgg.cfgs`
that a test compares with torchvision's, so building a VGG needs no torchvision) and
the module tree reproduces torchvision's `VGG` exactly - children `features`, `avgpool`,
`classifier`, same indices, same initialisation - so a torchvision VGG state dict loads unchanged
at `width=1` with the image's channel count as the first conv's input.

Two deliberate differences from `torchvision.models.VGG`, both invisible to the state dict:

* the model is an `nn.Sequential` with an `nn.Flatten` child between `avgpool` and
  `classifier`, instead of a custom `forward` calling `torch.flatten`, so torch.fx sees one chain
  of modules;
* ReLUs are not in-place, so hooks that keep a layer's output see it unmodified.

`width` scales every conv's channel count and the two hidden classifier layers (4096) by the same
factor, rounded, at least 1: `width=0.125` gives 8, 16, 32, 64 channels and 512 hidden units.
`avgpool_size` is torchvision's 7 by default (a 32x32 input then reaches the classifier as 1x1
maps repeated 7x7 times, as in torchvision); 1 gives the common CIFAR-style classifier.

Pretrained weights are never loaded: nothing here downloads.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

__all__ = ["VGG_CFGS", "VGG_VARIANTS", "build_vgg", "MIN_VGG_SIZE"]

#: torchvision's layer configurations (`torchvision.models.vgg.cfgs`): conv widths, "M" a max-pool
VGG_CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ],
}

# registry name -> (torchvision cfg letter, batch norm)
VGG_VARIANTS: dict[str, tuple[str, bool]] = {
    "vgg11": ("A", False),
    "vgg11_bn": ("A", True),
    "vgg13": ("B", False),
    "vgg13_bn": ("B", True),
    "vgg16": ("D", False),
    "vgg16_bn": ("D", True),
    "vgg19": ("E", False),
    "vgg19_bn": ("E", True),
}
MIN_VGG_SIZE = 32  # five 2x2 max-pools


def _scaled(v: int, width: float) -> int:
    return max(1, int(round(v * width)))


def _make_features(cfg: list, batch_norm: bool, in_channels: int, width: float) -> nn.Sequential:
    """torchvision's `make_layers`, with the input channel count and a width factor."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out = _scaled(int(v), width)
        layers.append(nn.Conv2d(in_channels, out, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU())
        in_channels = out
    return nn.Sequential(*layers)


def _init_like_torchvision(model: nn.Module) -> None:
    """The initialisation of `torchvision.models.VGG.__init__` (init_weights=True)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)


def build_vgg(
    variant: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    dropout: float = 0.5,
    avgpool_size: int = 7,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build VGG `variant` (a key of `VGG_VARIANTS`) for `input_shape` = (C, H >= 32, W >= 32)."""
    if variant not in VGG_VARIANTS:
        raise ValueError(f"unknown VGG variant {variant!r}; known: {', '.join(VGG_VARIANTS)}")
    if len(input_shape) != 3:
        raise ValueError(f"{variant} needs image inputs (C, H, W), got input_shape={input_shape}")
    c, h, w = input_shape
    if h < MIN_VGG_SIZE or w < MIN_VGG_SIZE:
        raise ValueError(
            f"{variant} needs inputs of at least {MIN_VGG_SIZE}x{MIN_VGG_SIZE} (it has five 2x2 "
            f"max-pools), got {h}x{w}; load the task with pad_to={MIN_VGG_SIZE} "
            f"(e.g. load_task('mnist', pad_to={MIN_VGG_SIZE}))"
        )
    if isinstance(width, bool) or not isinstance(width, int | float) or not (0 < width <= 8):
        raise ValueError(f"width must be a number in (0, 8], got {width!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    if isinstance(avgpool_size, bool) or not isinstance(avgpool_size, int) or avgpool_size < 1:
        raise ValueError(f"avgpool_size must be a positive int, got {avgpool_size!r}")

    letter, batch_norm = VGG_VARIANTS[variant]
    cfg = VGG_CFGS[letter]
    features = _make_features(cfg, batch_norm, c, float(width))
    last = _scaled(int([v for v in cfg if v != "M"][-1]), float(width))
    hidden = _scaled(4096, float(width))
    classifier = nn.Sequential(
        nn.Linear(last * avgpool_size * avgpool_size, hidden),
        nn.ReLU(),
        nn.Dropout(p=float(dropout)),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(p=float(dropout)),
        nn.Linear(hidden, num_classes),
    )
    model = nn.Sequential(
        OrderedDict(
            features=features,
            avgpool=nn.AdaptiveAvgPool2d((avgpool_size, avgpool_size)),
            flatten=nn.Flatten(1),
            classifier=classifier,
        )
    )
    _init_like_torchvision(model)
    used = {"width": float(width), "dropout": float(dropout), "avgpool_size": avgpool_size}
    return model, used
