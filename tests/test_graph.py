"""Channel groups of residual networks (mtz_core.graph) and the refusals that name the node."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtz_core.architecture import ArchitectureError, trace_model
from mtz_core.graph import trace_graph
from mtz_core.models import create_model
from mtz_core.models.resnet import resnet20, torchvision_resnet


def _streams(graph):
    return [(g.members, g.embeds) for g in graph.groups if g.residual]


def test_resnet18_streams_hold_the_stem_or_downsample_and_every_blocks_last_conv():
    g = trace_graph(torchvision_resnet("resnet18", 10, width=0.25), (3, 32, 32))
    assert g.heads == ("fc",)
    assert _streams(g) == [
        (("conv1", "layer1.0.conv2", "layer1.1.conv2"), ()),
        (("layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"), ()),
        (("layer3.0.conv2", "layer3.0.downsample.0", "layer3.1.conv2"), ()),
        (("layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2"), ()),
    ]
    # every block's first conv is a group of its own, read by the second conv
    inner = [grp for grp in g.groups if not grp.residual]
    assert [grp.members for grp in inner] == [
        (f"layer{s}.{b}.conv1",) for s in (1, 2, 3, 4) for b in (0, 1)
    ]
    assert all(grp.readers == (grp.members[0].replace("conv1", "conv2"),) for grp in inner)
    stem = g.groups[0]
    assert stem.units == 16 and dict(stem.norms)["conv1"] == "bn1"
    assert set(stem.readers) == {
        "layer1.0.conv1",
        "layer1.1.conv1",
        "layer2.0.conv1",
        "layer2.0.downsample.0",
    }
    assert len(g.groups) == 12


def test_resnet50_bottleneck_streams():
    g = trace_graph(torchvision_resnet("resnet50", 10, width=0.125), (3, 32, 32))
    streams = _streams(g)
    assert [len(m) for m, _ in streams] == [4, 5, 7, 4]  # downsample + every block's conv3
    assert streams[0][0][:2] == ("layer1.0.conv3", "layer1.0.downsample.0")
    # the stem is not in a stream: layer1.0 has a downsample (64 -> 256 channels)
    assert g.groups[0].members == ("conv1",) and not g.groups[0].residual
    assert len(g.groups) == 1 + 16 * 2 + 4


@pytest.mark.parametrize("option", ["A", "B"])
def test_resnet20_streams_with_both_shortcut_options(option):
    g = trace_graph(resnet20(10, option=option), (3, 32, 32))
    streams = _streams(g)
    assert streams[0] == (("conv1", "layers.0.conv2", "layers.1.conv2", "layers.2.conv2"), ())
    if option == "A":  # zero-padding shortcuts embed the previous stream
        assert [len(e) for _, e in streams[1:]] == [1, 1]
        assert streams[1][0] == ("layers.3.conv2", "layers.4.conv2", "layers.5.conv2")
        embed = next(n for n in g.nodes if n.kind == "embed")
        assert embed.offset == 8 and embed.width == 32
    else:
        assert streams[1][0] == (
            "layers.3.conv2",
            "layers.3.shortcut.0",
            "layers.4.conv2",
            "layers.5.conv2",
        )
    assert [grp.units for grp in g.groups if grp.residual] == [16, 32, 64]


def test_a_chain_has_one_group_per_hidden_layer_like_trace_model():
    model = create_model("vgg11_bn", (1, 32, 32), 5, width=0.125)
    g = trace_graph(model, (1, 32, 32))
    arch, _ = trace_model(model, (1, 32, 32))
    assert [grp.members for grp in g.groups] == [(s.name,) for s in arch.hidden]
    assert [grp.units for grp in g.groups] == [s.out_units for s in arch.hidden]
    assert g.heads == (arch.layers[-1].name,)


class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Linear(8 * 16, 2)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1).flatten(1))


class _Product(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.a(x) * self.b(x))


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.a(self.a(x)))


class _IntoInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(x + self.a(x))


class _Softmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(F.softmax(self.a(x), dim=1))


@pytest.mark.parametrize(
    "model, shape, match",
    [
        (_Cat(), (3, 4, 4), r"node 'cat'.*combines 2 tensors"),
        (_Product(), (4,), r"node 'mul'.*combines 2 tensors"),
        (_Twice(), (4,), r"module 'a' with weights is used twice"),
        (_IntoInput(), (4,), r"add into the model's input"),
        (_Softmax(), (4,), r"node 'softmax'.*mixes the units"),
        (
            nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(4, 2)),
            (4, 3, 3),
            r"grouped or depthwise convolution '0'",
        ),
        (
            nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)),
            (4,),
            r"unsupported module LayerNorm \('1'\)",
        ),
    ],
)
def test_unsupported_structures_are_refused_naming_the_node_and_model(model, shape, match):
    with pytest.raises(ArchitectureError, match=match) as info:
        trace_graph(model, shape, label="model B")
    assert "model B" in str(info.value)
