"""A bare state dict says what it is: torchvision ResNets and VGGs by their keys."""

import pytest
import torch

from mtz_core.checkpoints import load_checkpoint
from mtz_core.models import create_model
from mtz_core.models.resnet import torchvision_resnet
from mtz_core.recognize import recognize_state_dict


@pytest.mark.parametrize(
    "name, width, expected",
    [
        ("resnet18", 1.0, "torchvision resnet18 (3 input channels, 10 classes)"),
        ("resnet34", 0.125, "torchvision resnet34 (3 input channels, 10 classes, width 0.125)"),
        ("resnet50", 0.125, "torchvision resnet50 (3 input channels, 10 classes, width 0.125)"),
    ],
)
def test_torchvision_resnets_are_recognised(name, width, expected):
    sd = torchvision_resnet(name, 10, width=width).state_dict()
    assert recognize_state_dict(sd).describe() == expected


def test_our_vgg_is_recognised_as_torchvisions_layout_and_others_are_not():
    sd = create_model("vgg11_bn", (1, 32, 32), 5, width=0.125).state_dict()
    found = recognize_state_dict(sd)
    assert (found.name, found.num_classes, found.in_channels) == ("vgg11_bn", 5, 1)
    assert found.details == {"width": 0.125}
    assert recognize_state_dict(create_model("lenet300", (1, 28, 28), 10).state_dict()) is None


def test_a_resnet_checkpoint_without_a_card_is_named_in_the_error(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet("resnet18", 7, width=0.25).state_dict(), path)
    with pytest.raises(
        ValueError, match=r"torchvision resnet18 \(3 input channels, 7 classes"
    ) as e:
        load_checkpoint(path)
    assert "pass input_shape=(C, H, W) with C = 3" in str(e.value)
    with pytest.raises(ValueError, match=r"architecture='resnet18'.*width=0.25"):
        load_checkpoint(path, architecture="lenet5", input_shape=(3, 32, 32), num_classes=7)


@pytest.mark.parametrize(
    "name, width, shape",
    [("resnet18", 0.25, (3, 32, 32)), ("resnet34", 0.3, (1, 40, 40)), ("resnet50", 0.125, None)],
)
def test_a_bare_resnet_loads_as_the_registry_model_it_is(tmp_path, name, width, shape):
    """No card, no architecture: the keys name the network, the channel counts its width (0.3
    rounds stage by stage, so the stem alone would say 0.2969), the caller the input shape."""
    shape = shape or (3, 32, 32)
    original = create_model(name, shape, 6, width=width, seed=0).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(original.state_dict(), path)
    model, card = load_checkpoint(path, input_shape=shape)
    spec = card["model_spec"]
    assert (spec.name, spec.input_shape, spec.num_classes) == (name, shape, 6)
    assert spec.kwargs == {"width": width}
    assert card["recognized"].startswith(f"torchvision {name} ({shape[0]} input channels, 6")
    assert f"the input shape {shape} was given" in card["assumed"]
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x))


def test_a_bare_resnet_is_refused_when_the_input_or_classes_contradict_it(tmp_path):
    path = tmp_path / "r.pth"
    torch.save(torchvision_resnet("resnet18", 4, width=0.125).state_dict(), path)
    with pytest.raises(ValueError, match=r"input_shape=\(1, 32, 32\).*reads 3 channel"):
        load_checkpoint(path, input_shape=(1, 32, 32))
    with pytest.raises(ValueError, match="num_classes=5 contradicts r.pth: its head has 4"):
        load_checkpoint(path, input_shape=(3, 32, 32), num_classes=5)
    with pytest.raises(ValueError, match="at least 32x32, got 8x8"):
        load_checkpoint(path, input_shape=(3, 8, 8))


def test_a_resnet_the_registry_cannot_build_is_named_with_the_ones_it_can(tmp_path):
    sd = torchvision_resnet("resnet18", 4, width=0.125).state_dict()
    sd["layer2.0.conv1.weight"] = torch.zeros(5, 8, 3, 3)  # 16 at this width
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"no width multiplier .* layer2.0.conv1.weight 5"):
        load_checkpoint(path, input_shape=(3, 32, 32))
    deep = tmp_path / "deep.pth"
    torch.save({**sd, **{f"layer3.{i}.conv1.weight": torch.zeros(1) for i in range(2, 23)}}, deep)
    with pytest.raises(ValueError, match=r"does not build 'resnet \(basic blocks"):
        load_checkpoint(deep, input_shape=(3, 32, 32))


def test_a_vgg_checkpoint_without_a_card_loads_given_its_input_shape(tmp_path):
    path = tmp_path / "vgg.pth"
    original = create_model("vgg11_bn", (1, 32, 32), 5, width=0.125, avgpool_size=1).eval()
    torch.save(original.state_dict(), path)
    with pytest.raises(ValueError, match=r"architecture='vgg11_bn'.*width=0.125") as info:
        load_checkpoint(path)
    assert "C = 1" in str(info.value)
    model, card = load_checkpoint(path, input_shape=(1, 32, 32))
    assert card["model_spec"] == original.mtz_spec
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x))
