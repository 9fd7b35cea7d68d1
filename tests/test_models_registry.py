"""Model registry: every model builds and runs, specs round-trip, VGG matches torchvision."""

from __future__ import annotations

import json

import pytest
import torch
import torch.fx
from torch import nn

from mtz_core.models import (
    VGG_VARIANTS,
    ModelSpec,
    build_model,
    create_model,
    get_model_spec,
    list_models,
    model_options,
)

ALLOWED = (
    nn.Linear,
    nn.Conv2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.Flatten,
    nn.BatchNorm2d,
    nn.Dropout,
    nn.AdaptiveAvgPool2d,
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cases():
    yield "mlp", (2,), {"widths": (16, 16)}
    yield "mlp", (1, 8, 8), {}
    yield "lenet300", (1, 28, 28), {}
    yield "lenet5", (1, 28, 28), {}
    yield "lenet5", (1, 8, 8), {}
    for name in VGG_VARIANTS:
        yield name, (3, 32, 32), {"width": 0.125}


@pytest.mark.parametrize(("name", "shape", "kwargs"), list(cases()))
def test_every_model_builds_runs_and_is_a_traceable_chain(name, shape, kwargs):
    model = create_model(name, shape, 7, seed=0, **kwargs)
    model.eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 7)
    leaves = [m for m in model.modules() if not list(m.children())]
    assert all(isinstance(m, ALLOWED) for m in leaves), {type(m).__name__ for m in leaves}
    assert not any(getattr(m, "inplace", False) for m in leaves)
    traced = torch.fx.symbolic_trace(model)
    ops = {n.op for n in traced.graph.nodes}
    assert ops == {"placeholder", "call_module", "output"}  # one chain of modules
    with torch.no_grad():
        assert torch.allclose(traced(x), out)


def residual_cases():
    yield "resnet20", (1, 28, 28), {"option": "A", "width": 0.25}
    yield "resnet20", (3, 8, 8), {"option": "B", "width": 0.25}
    for name in ("resnet18", "resnet34", "resnet50"):
        yield name, (3, 32, 32), {"width": 0.0625}


@pytest.mark.parametrize(("name", "shape", "kwargs"), list(residual_cases()))
def test_every_resnet_builds_runs_and_traces_as_a_graph(name, shape, kwargs):
    from mtz_core.architecture import trace_model

    model = create_model(name, shape, 7, seed=0, **kwargs).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert model(x).shape == (3, 7)
    arch, weights = trace_model(model, shape, batch_norm="keep")
    assert arch.graph is not None and len(weights) == len(arch.layers)
    assert arch.layers[-1].name == "fc"
    spec = get_model_spec(model)
    assert spec.kwargs["width"] == kwargs["width"]
    rebuilt = build_model(ModelSpec.from_json(spec.to_json()))
    rebuilt.load_state_dict(model.state_dict())  # strict: raises on any key or shape mismatch
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))


def test_all_registry_names_are_covered():
    names = {name for name, _, _ in (*cases(), *residual_cases())}
    assert names == set(list_models())


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError) as info:
        create_model("resnet152", (3, 32, 32), 10)
    msg = str(info.value)
    assert "resnet18" in msg
    for name in ("mlp", "lenet300", "lenet5", "vgg11", "vgg16_bn"):
        assert name in msg


def test_unknown_option_is_a_type_error_naming_accepted_ones():
    with pytest.raises(TypeError, match="accepts: widths, dropout"):
        create_model("mlp", (2,), 2, width=3)
    assert model_options("lenet5") == {
        "padding": None,
        "channels": (20, 50),
        "hidden": 500,
        "conv_relu": False,
    }


@pytest.mark.parametrize(
    ("shape", "classes", "fragment"),
    [((), 10, "input_shape"), ((1, 0, 28), 10, "input_shape"), ((2,), 0, "num_classes")],
)
def test_bad_shape_or_classes(shape, classes, fragment):
    with pytest.raises(ValueError, match=fragment):
        create_model("mlp", shape, classes)


def test_paper_parameter_counts():
    assert n_params(create_model("lenet300", (1, 28, 28), 10)) == 266_610
    lenet5 = create_model("lenet5", (1, 28, 28), 10)
    assert n_params(lenet5) == 431_080  # Caffe's LeNet-5
    assert lenet5.fc1.in_features == 800 and lenet5.conv1.padding == (0, 0)


def test_lenet5_padding_choice_for_small_inputs():
    assert create_model("lenet5", (1, 8, 8), 10).mtz_spec.kwargs["padding"] == 2
    assert create_model("lenet5", (1, 12, 12), 10).mtz_spec.kwargs["padding"] == 1
    assert create_model("lenet5", (1, 16, 16), 10).mtz_spec.kwargs["padding"] == 0
    with pytest.raises(ValueError, match="shrinks a 8x8 input to nothing"):
        create_model("lenet5", (1, 8, 8), 10, padding=0)
    with pytest.raises(ValueError, match="image inputs"):
        create_model("lenet5", (2,), 2)


def test_width_multiplier_changes_parameter_count():
    counts = [
        n_params(create_model("vgg11", (3, 32, 32), 10, width=w, avgpool_size=1))
        for w in (0.0625, 0.125, 0.25)
    ]
    assert counts[0] < counts[1] < counts[2]
    small = create_model("vgg11", (3, 32, 32), 10, width=0.125)
    convs = [m.out_channels for m in small.features if isinstance(m, nn.Conv2d)]
    assert convs == [8, 16, 32, 32, 64, 64, 64, 64]
    assert small.classifier[0].out_features == 512
    assert small.classifier[0].in_features == 64 * 7 * 7


def test_vgg_refuses_small_inputs_and_says_to_pad():
    with pytest.raises(ValueError) as info:
        create_model("vgg11", (1, 28, 28), 10, width=0.125)
    assert "32x32" in str(info.value) and "pad_to=32" in str(info.value)
    model = create_model("vgg11", (1, 32, 32), 10, width=0.125)  # grey-scale after padding
    assert model.features[0].in_channels == 1


@pytest.mark.parametrize("name", ["vgg11", "vgg16_bn"])
def test_vgg_matches_torchvision_state_dict_at_width_one(name):
    import torchvision

    with torch.device("meta"):  # no memory, no init cost
        theirs = getattr(torchvision.models, name)(weights=None, num_classes=10)
        ours = create_model(name, (3, 32, 32), 10)
    a = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert a == b


def test_vgg_forward_matches_torchvision_forward():
    import torchvision

    ours = create_model("vgg11_bn", (3, 32, 32), 10, width=0.125, seed=0).eval()
    with torch.device("meta"):
        theirs = torchvision.models.vgg11_bn(weights=None, num_classes=10)
    theirs.features, theirs.avgpool, theirs.classifier = (
        ours.features,
        ours.avgpool,
        ours.classifier,
    )
    theirs.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(theirs(x), ours(x))


def test_spec_is_recorded_and_round_trips_through_json():
    model = create_model("mlp", (1, 8, 8), 5, widths=[32, 16])
    spec = get_model_spec(model)
    assert spec == ModelSpec.make("mlp", (1, 8, 8), 5, widths=(32, 16), dropout=0.0)
    data = json.loads(json.dumps(spec.to_dict()))
    assert data == {
        "name": "mlp",
        "input_shape": [1, 8, 8],
        "num_classes": 5,
        "kwargs": {"dropout": 0.0, "widths": [32, 16]},
    }
    again = ModelSpec.from_dict(data)
    assert again == spec and hash(again) == hash(spec)
    assert ModelSpec.from_json(spec.to_json()) == spec
    rebuilt = build_model(again)
    assert [tuple(p.shape) for p in rebuilt.parameters()] == [
        tuple(p.shape) for p in model.parameters()
    ]
    assert get_model_spec(nn.Linear(2, 2)) is None


def test_spec_rejects_non_json_options():
    with pytest.raises(TypeError, match="JSON"):
        ModelSpec.make("mlp", (2,), 2, widths=object())
    with pytest.raises(ValueError, match="missing"):
        ModelSpec.from_dict({"name": "mlp"})


def test_seed_makes_weights_reproducible_without_touching_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_model("lenet5", (1, 8, 8), 10, seed=1)
    after = torch.rand(1)
    b = create_model("lenet5", (1, 8, 8), 10, seed=1)
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
