"""What a bare state dict is, read from its keys and shapes: torchvision ResNets and VGGs.

A user uploads `resnet18.pth` without a card. Rather than a list of missing keys, say what the
file holds ("torchvision resnet18, 3 input channels, 10 classes") so the next message can be
about that network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Recognized", "recognize_state_dict"]

_RESNET_DEPTHS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}


@dataclass(frozen=True)
class Recognized:
    """A known network family found in a state dict."""

    name: str  # e.g. "resnet18", "vgg11_bn"
    family: str  # "torchvision resnet", "torchvision vgg"
    num_classes: int
    in_channels: int
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        extra = "".join(f", {k} {v}" for k, v in self.details.items())
        return (
            f"{self.family} {self.name} ({self.in_channels} input channels, "
            f"{self.num_classes} classes{extra})"
        )


def recognize_state_dict(sd: Mapping[str, torch.Tensor]) -> Recognized | None:
    """The torchvision ResNet or VGG a state dict's keys and shapes match, else None."""
    return _resnet(sd) or _vgg(sd)


def _resnet(sd: Mapping[str, torch.Tensor]) -> Recognized | None:
    needed = ("conv1.weight", "bn1.weight", "fc.weight", "layer1.0.conv1.weight")
    if not all(k in sd for k in needed):
        return None
    blocks = []
    for stage in range(1, 5):
        found = {int(m.group(1)) for k in sd if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        if not found:
            return None
        blocks.append(max(found) + 1)
    kind = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    name = _RESNET_DEPTHS.get((kind, tuple(blocks)), f"resnet ({kind} blocks {blocks})")
    stem = sd["conv1.weight"]
    details: dict[str, Any] = {}
    if stem.shape[0] != 64:
        details["width"] = round(stem.shape[0] / 64, 4)
    return Recognized(
        name, "torchvision", int(sd["fc.weight"].shape[0]), int(stem.shape[1]), details
    )


def _vgg(sd: Mapping[str, torch.Tensor]) -> Recognized | None:
    convs = sorted(
        int(m.group(1))
        for k in sd
        if (m := re.fullmatch(r"features\.(\d+)\.weight", k)) and sd[k].dim() == 4
    )
    heads = sorted(
        int(m.group(1)) for k in sd if (m := re.fullmatch(r"classifier\.(\d+)\.weight", k))
    )
    if not convs or not heads:
        return None
    bn = any(re.fullmatch(r"features\.\d+\.running_mean", k) for k in sd)
    depth = {8: 11, 10: 13, 13: 16, 16: 19}.get(len(convs))
    name = f"vgg{depth}{'_bn' if bn else ''}" if depth else f"vgg ({len(convs)} conv layers)"
    first = sd[f"features.{convs[0]}.weight"]
    details: dict[str, Any] = {}
    if first.shape[0] != 64:
        details["width"] = round(first.shape[0] / 64, 4)
    return Recognized(
        name,
        "torchvision",
        int(sd[f"classifier.{heads[-1]}.weight"].shape[0]),
        int(first.shape[1]),
        details,
    )
