"""Checkpoints: round trips, user .pt/.pth files, and refusing bad or dangerous files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from mtz_core.checkpoints import (
    FORMAT_NAME,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from mtz_core.models import ModelSpec, create_model


@pytest.fixture
def mlp():
    return create_model("mlp", (1, 8, 8), 5, widths=(16,), seed=0).eval()


def same_outputs(a, b, shape):
    x = torch.randn(4, *shape)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


# ------------------------------------------------------------------------------ round trips


def test_safetensors_round_trip_with_card(tmp_path, mlp):
    path = save_checkpoint(
        mlp, None, tmp_path / "sub" / "m.safetensors", task="digits:0-4", extra={"acc": 0.97}
    )
    model, card = load_checkpoint(path)
    assert same_outputs(mlp, model, (1, 8, 8))
    assert not model.training
    assert card["format"] == FORMAT_NAME and card["format_version"] == 1
    assert card["model_spec"] == mlp.mtz_spec
    assert card["task"] == "digits:0-4" and card["extra"] == {"acc": 0.97}
    assert card["source"] == "safetensors"
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_round_trip_vgg_with_batchnorm_buffers(tmp_path):
    vgg = create_model("vgg11_bn", (1, 32, 32), 3, width=0.0625, seed=0)
    vgg.train()
    with torch.no_grad():
        vgg(torch.randn(8, 1, 32, 32))  # moves the running statistics
    vgg.eval()
    path = save_checkpoint(vgg, vgg.mtz_spec, tmp_path / "v.safetensors", task="mnist")
    model, card = load_checkpoint(path)
    assert same_outputs(vgg, model, (1, 32, 32))
    assert card["model_spec"].kwargs["width"] == 0.0625


def test_pt_state_dict_with_architecture_name(tmp_path):
    lenet = create_model("lenet5", (1, 28, 28), 10, seed=0).eval()
    path = tmp_path / "lenet.pt"
    torch.save(lenet.state_dict(), path)
    model, card = load_checkpoint(path, architecture="lenet5", input_shape=(1, 28, 28))
    assert same_outputs(lenet, model, (1, 28, 28))
    assert card["model_spec"].num_classes == 10  # read from the head's weight
    assert card["source"] == "torch" and card["format"] is None


def test_pth_wrapper_dict_and_module_prefix(tmp_path, mlp):
    sd = {f"module.{k}": v for k, v in mlp.state_dict().items()}
    path = tmp_path / "run.pth"
    torch.save({"epoch": 3, "model_state_dict": sd, "optimizer": {"lr": 0.1}}, path)
    model, _ = load_checkpoint(path, architecture=mlp.mtz_spec)
    assert same_outputs(mlp, model, (1, 8, 8))
    torch.save({"state_dict": mlp.state_dict()}, tmp_path / "b.pt")
    assert same_outputs(
        mlp, load_checkpoint(tmp_path / "b.pt", architecture=mlp.mtz_spec)[0], (1, 8, 8)
    )


# ------------------------------------------------------------------------------ refusals


class Evil:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if how == "torch.save":
        torch.save({"state_dict": {"w": Evil(marker)}}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"w": Evil(marker)}, f)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, architecture="mlp", input_shape=(2,), num_classes=2)
    msg = str(info.value)
    assert "refused" in msg and "code" in msg
    assert not marker.exists()


def test_wrong_shape_names_key_expected_and_found(tmp_path):
    src = create_model("mlp", (1, 8, 8), 5, widths=(16,))
    torch.save(src.state_dict(), tmp_path / "m.pt")
    other = ModelSpec.make("mlp", (1, 8, 8), 5, widths=(12,), dropout=0.0)
    with pytest.raises(ValueError) as info:
        load_checkpoint(tmp_path / "m.pt", architecture=other)
    msg = str(info.value)
    assert "'fc1.weight' (expected (12, 64), found (16, 64))" in msg


def test_missing_and_unexpected_keys_are_listed(tmp_path, mlp):
    sd = mlp.state_dict()
    del sd["fc2.bias"]
    sd["fc9.weight"] = torch.zeros(2, 2)
    torch.save(sd, tmp_path / "m.pt")
    with pytest.raises(ValueError) as info:
        load_checkpoint(tmp_path / "m.pt", architecture=mlp.mtz_spec)
    msg = str(info.value)
    assert "missing keys 'fc2.bias'" in msg and "unexpected keys 'fc9.weight'" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_names_the_key(tmp_path, mlp, bad):
    sd = mlp.state_dict()
    sd["fc1.weight"][0, 0] = bad
    torch.save(sd, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"'fc1\.weight' contain NaN or Inf"):
        load_checkpoint(tmp_path / "m.pt", architecture=mlp.mtz_spec)
    with torch.no_grad():
        mlp.fc1.weight[0, 0] = bad
    with pytest.raises(ValueError, match=r"'fc1\.weight' contain NaN or Inf"):
        save_checkpoint(mlp, None, tmp_path / "m.safetensors")


def test_files_that_are_not_checkpoints(tmp_path):
    for name in ("notes.pt", "notes.safetensors"):
        (tmp_path / name).write_text("hello, this is not a checkpoint\n")
        with pytest.raises(ValueError, match="not a"):
            read_state_dict(tmp_path / name)
    torch.save(torch.zeros(3, 4), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match=r"single tensor of shape \(3, 4\)"):
        read_state_dict(tmp_path / "tensor.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list"):
        read_state_dict(tmp_path / "list.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="not tensors"):
        read_state_dict(tmp_path / "meta.pt")


def test_size_limit_missing_file_and_extension(tmp_path, mlp):
    path = save_checkpoint(mlp, None, tmp_path / "m.safetensors")
    size = path.stat().st_size
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, max_bytes=100)
    assert f"{size:,} bytes" in str(info.value) and "100 bytes" in str(info.value)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "m.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"accepted: \.safetensors, \.pt, \.pth"):
        load_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match=r"saved as \.safetensors"):
        save_checkpoint(mlp, None, tmp_path / "m.pt")


def test_architecture_needed_without_card_and_newer_format_refused(tmp_path, mlp):
    torch.save(mlp.state_dict(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="no model card"):
        load_checkpoint(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="pass input_shape"):
        load_checkpoint(tmp_path / "m.pt", architecture="mlp")
    save_file(
        {k: v.contiguous() for k, v in mlp.state_dict().items()},
        str(tmp_path / "new.safetensors"),
        metadata={"format": FORMAT_NAME, "format_version": "99"},
    )
    with pytest.raises(ValueError, match="format version 99"):
        load_checkpoint(tmp_path / "new.safetensors")


def test_plain_safetensors_from_elsewhere_loads_with_architecture(tmp_path, mlp):
    save_file(
        {k: v.contiguous() for k, v in mlp.state_dict().items()}, str(tmp_path / "x.safetensors")
    )
    model, card = load_checkpoint(tmp_path / "x.safetensors", architecture=mlp.mtz_spec)
    assert same_outputs(mlp, model, (1, 8, 8)) and card["format"] is None
