"""Tracing models into the layer table, and refusing what the engine cannot zip."""

from __future__ import annotations

import pytest
import torch
from conftest import ConvNet, LeNet5, make_mlp
from torch import nn

from mtz_core import ArchitectureError, trace_model, zip_models
from mtz_core.architecture import check_compatible


def test_mlp_layer_table():
    arch, weights = trace_model(make_mlp(0), (1, 8, 8))
    assert [s.name for s in arch.layers] == ["1", "3", "5"]
    assert [s.kind for s in arch.layers] == ["linear"] * 3
    assert [(s.in_units, s.out_units, s.positions) for s in arch.layers] == [
        (64, 24, 1),
        (24, 16, 1),
        (16, 10, 1),
    ]
    assert [op.kind for op in arch.layers[0].ops_before] == ["flatten"]
    assert [op.kind for op in arch.layers[1].ops_before] == ["relu"]
    assert len(arch.hidden) == 2 and len(weights) == 3


def test_conv_net_table_folds_batch_norm_and_counts_positions():
    model = ConvNet(0)
    arch, weights = trace_model(model, (1, 8, 8))
    assert [s.name for s in arch.layers] == [
        "features.0",
        "features.4",
        "classifier.0",
        "classifier.3",
    ]
    first = arch.layers[0]
    assert first.batch_norm == "features.1" and first.kernel_size == (3, 3)
    assert first.padding == (1, 1) and first.out_shape == (6, 8, 8)
    fc = arch.layers[2]
    assert (fc.in_units, fc.positions, fc.after_flatten) == (8, 4, True)
    assert [op.kind for op in fc.ops_before] == ["relu", "avg_pool2d", "flatten"]
    assert [op.kind for op in arch.layers[3].ops_before] == ["relu", "dropout"]
    # folded weights reproduce conv + BN in eval mode
    x = torch.randn(3, 1, 8, 8)
    w, b = weights[0]
    folded = nn.functional.conv2d(x, w, b, padding=1)
    with torch.no_grad():
        assert torch.allclose(folded, model.features[1](model.features[0](x)), atol=1e-5)


def test_functional_lenet5_with_view_and_log_softmax():
    arch, _ = trace_model(LeNet5(0), (1, 28, 28))
    assert [s.name for s in arch.layers] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert arch.layers[2].positions == 25
    assert [op.kind for op in arch.ops_after] == ["log_softmax"]
    assert [op.kind for op in arch.layers[3].ops_before] == ["relu"]
    assert [op.kind for op in arch.layers[4].ops_before] == ["tanh"]


@pytest.mark.parametrize("name", ["vgg11", "vgg16", "vgg11_bn", "vgg16_bn"])
def test_torchvision_vggs_trace_without_per_architecture_code(name):
    import torchvision

    model = getattr(torchvision.models, name)(weights=None, num_classes=7)
    arch, _ = trace_model(model, (3, 32, 32))
    convs = [s for s in arch.layers if s.kind == "conv"]
    assert len(convs) == (8 if name.startswith("vgg11") else 13)
    assert all(s.batch_norm is not None for s in convs) == name.endswith("_bn")
    fc6 = arch.layers[len(convs)]
    assert fc6.name == "classifier.0" and (fc6.in_units, fc6.positions) == (512, 49)
    assert arch.layers[-1].name == "classifier.6" and arch.layers[-1].out_units == 7


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.fc2(torch.relu(self.fc1(x))) + x)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.fc(self.fc(x)))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.fc, self.head = (
            nn.MultiheadAttention(4, 1),
            nn.Linear(4, 4),
            nn.Linear(4, 2),
        )

    def forward(self, x):
        return self.head(self.fc(self.attn(x, x, x)[0]))


class Branch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        self.fc1(x)
        return self.head(self.fc2(x))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Residual(), r"\['fc2'\] add into the model's input"),
        (Twice(), r"module 'fc' with weights is used twice"),
        (Attention(), r"node 'attn': unsupported module MultiheadAttention"),
        (Branch(), r"node 'fc1' is computed but never used"),
        (nn.Sequential(nn.Linear(4, 2)), r"1 weight layer"),
        (
            nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.BatchNorm1d(4), nn.Linear(4, 2)),
            r"batch norm must come right after a weight layer",
        ),
        (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)), r"LayerNorm"),
    ],
)
def test_unsupported_models_are_refused_naming_the_node(model, message):
    with pytest.raises(ArchitectureError, match=message):
        trace_model(model, (4,))


def test_mismatched_pairs_are_refused_naming_the_first_differing_layer():
    data = [torch.randn(8, 1, 8, 8)]
    a = ConvNet(0)
    b = ConvNet(1)
    b.features[4] = nn.Conv2d(6, 8, 5, padding=2)
    with pytest.raises(
        ArchitectureError,
        match=r"layer 2 .*'features.4'.*kernel_size is \(3, 3\) in A and \(5, 5\) in B",
    ):
        zip_models(a, b, data, data)
    with pytest.raises(ArchitectureError, match=r"layer counts differ"):
        zip_models(make_mlp(0, widths=(8,)), make_mlp(0, widths=(8, 8)), data, data)
    c = ConvNet(2)
    c.features[3] = nn.MaxPool2d(2, ceil_mode=True)
    with pytest.raises(ArchitectureError, match=r"ops before"):
        zip_models(a, c, data, data)
    arch1, _ = trace_model(make_mlp(0, inputs=64), (1, 8, 8))
    arch2, _ = trace_model(make_mlp(0, inputs=100), (1, 10, 10))
    with pytest.raises(ArchitectureError, match=r"input shapes differ"):
        check_compatible(arch1, arch2)


def test_model_that_rejects_the_data_shape():
    with pytest.raises(ArchitectureError, match="expects 64 input features"):
        zip_models(make_mlp(0), make_mlp(1), [torch.randn(4, 1, 9, 9)], [torch.randn(4, 1, 9, 9)])


def test_widths_may_differ_and_heads_too():
    a, b = make_mlp(0, widths=(10, 6), classes=3), make_mlp(1, widths=(7, 9), classes=4)
    data = [torch.randn(16, 1, 8, 8)]
    result = zip_models(a, b, data, data, share=1.0)
    assert [(r.n_a, r.n_b, r.k) for r in result.layers] == [(10, 7, 7), (6, 9, 6)]
    with torch.no_grad():
        assert result.model(data[0], 1).shape == (16, 4)
