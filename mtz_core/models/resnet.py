"""Residual networks: the CIFAR-style ResNet-20 (He et al. 2016, §4.2) and torchvision's ResNets
with a width multiplier.

`resnet20(option="A")` is the paper's CIFAR net: three stages of three basic blocks (16, 32, 64
channels); where a stage halves the resolution and doubles the channels, option A's shortcut
subsamples and pads the new channels with zeros, option B's is a strided 1×1 convolution with
batch norm. `torchvision_resnet(name, width=…)` builds torchvision's resnet18/34/50 with every
stage's width scaled (for small experiments, as `vgg` does); its state-dict keys are
torchvision's, so a torchvision checkpoint of width 1 loads into it.

These models are traced by `mtz_core.graph.trace_graph` (channel groups for the residual
streams).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

__all__ = [
    "resnet20",
    "torchvision_resnet",
    "TORCHVISION_RESNETS",
    "build_resnet20",
    "build_torchvision_resnet",
]

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50")


def _scaled(channels: int, width: float) -> int:
    return max(1, int(math.floor(channels * width + 0.5)))


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus the shortcut, then relu."""

    def __init__(self, inp: int, out: int, stride: int, option: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut: nn.Module | None = None
        self.pad = (0, 0)
        self.stride = stride
        if stride != 1 or inp != out:
            if option == "A":
                extra = out - inp
                self.pad = (extra // 2, extra - extra // 2)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            short = self.shortcut(x)
        elif self.pad != (0, 0):
            short = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, *self.pad))
        else:
            short = x
        return F.relu(out + short)


class ResNet20(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, option: str, width: float) -> None:
        super().__init__()
        widths = [_scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, inp = [], widths[0]
        for stage, out in enumerate(widths):
            for i in range(3):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(inp, out, stride, option))
                inp = out
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(inp, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(x.flatten(1))


def resnet20(
    num_classes: int = 10, *, in_channels: int = 3, option: str = "A", width: float = 1.0
) -> nn.Module:
    """CIFAR ResNet-20; `option` "A" (zero-padding shortcuts) or "B" (1×1 conv + BN)."""
    if option not in ("A", "B"):
        raise ValueError(f"option must be 'A' or 'B', got {option!r}")
    if isinstance(width, bool) or not isinstance(width, int | float) or not 0 < width <= 8:
        raise ValueError(f"width must be a number in (0, 8], got {width!r}")
    return ResNet20(in_channels, num_classes, option, float(width))


def torchvision_resnet(
    name: str, num_classes: int = 1000, *, in_channels: int = 3, width: float = 1.0
) -> nn.Module:
    """torchvision's `name` (resnet18/34/50) with every stage's channels scaled by `width`."""
    from torchvision.models import resnet as tv  # lazy: torchvision is optional for the core

    if name not in TORCHVISION_RESNETS:
        raise ValueError(f"unknown ResNet {name!r}; choose one of {list(TORCHVISION_RESNETS)}")
    if isinstance(width, bool) or not isinstance(width, int | float) or not 0 < width <= 8:
        raise ValueError(f"width must be a number in (0, 8], got {width!r}")
    block, layers = {
        "resnet18": (tv.BasicBlock, [2, 2, 2, 2]),
        "resnet34": (tv.BasicBlock, [3, 4, 6, 3]),
        "resnet50": (tv.Bottleneck, [3, 4, 6, 3]),
    }[name]
    model = tv.ResNet(block, layers, num_classes=num_classes)
    if width == 1 and in_channels == 3:
        return model
    # rebuild the stages at the scaled widths (torchvision hard-codes 64/128/256/512)
    model.inplanes = _scaled(64, width)
    model.conv1 = nn.Conv2d(in_channels, model.inplanes, 7, 2, 3, bias=False)
    model.bn1 = nn.BatchNorm2d(model.inplanes)
    for i, planes in enumerate((64, 128, 256, 512)):
        stage = model._make_layer(
            block, _scaled(planes, width), layers[i], stride=1 if i == 0 else 2
        )
        setattr(model, f"layer{i + 1}", stage)
    model.fc = nn.Linear(_scaled(512, width) * block.expansion, num_classes)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def _image_shape(name: str, input_shape: tuple[int, ...], smallest: int) -> int:
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs image inputs (C, H, W), got input_shape={input_shape}")
    c, h, w = input_shape
    if h < smallest or w < smallest:
        raise ValueError(f"{name} needs inputs of at least {smallest}x{smallest}, got {h}x{w}")
    return int(c)


def build_resnet20(
    input_shape: tuple[int, ...], num_classes: int, option: str = "A", width: float = 1.0
) -> tuple[nn.Module, dict]:
    """Registry builder: ResNet-20 for `input_shape` = (C, H, W), H and W at least 4."""
    c = _image_shape("resnet20", input_shape, 4)
    model = resnet20(num_classes, in_channels=c, option=option, width=width)
    return model, {"option": option, "width": float(width)}


def build_torchvision_resnet(
    name: str, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0
) -> tuple[nn.Module, dict]:
    """Registry builder: torchvision `name` for `input_shape` = (C, H, W), H and W at least
    32 (five halvings)."""
    c = _image_shape(name, input_shape, 32)
    model = torchvision_resnet(name, num_classes, in_channels=c, width=width)
    return model, {"width": float(width)}
