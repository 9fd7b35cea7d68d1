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
    with pytest.raises(ValueError, match=r"torchvision resnet18 \(3 input channels, 7 classes"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="cannot zip yet"):
        load_checkpoint(path, architecture="lenet5", input_shape=(3, 32, 32), num_classes=7)


def test_a_vgg_checkpoint_without_a_card_gets_the_arguments_that_load_it(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(create_model("vgg11_bn", (1, 32, 32), 5, width=0.125).state_dict(), path)
    with pytest.raises(ValueError, match=r"architecture='vgg11_bn'.*width=0.125") as info:
        load_checkpoint(path)
    assert "C = 1" in str(info.value)
    model, _ = load_checkpoint(
        path, architecture=create_model("vgg11_bn", (1, 32, 32), 5, width=0.125).mtz_spec
    )
    assert sum(p.numel() for p in model.parameters()) > 0
