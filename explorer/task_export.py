"""Each task's own network as a file the CLI, the Python API and the Load page read back.

`ZippedNet.export_task(t)` gives task t's network as plain modules (an `nn.Sequential` with
numbered children for a chain). Its state dict alone says nothing about the architecture or the
task, so `mtz eval` could not score it. A chain's per-task network is a registry model: the
original one when every width is the original's (MTZ keeps a task's width: shared units plus its
own), or the same family with other widths (`mlp` widths, `lenet5` channels and hidden) when a
method changed them. That network is written with `save_checkpoint`, the writer `mtz train`
uses, so the file carries the same card: the `ModelSpec`, the task and its split seed and
padding. Before writing, the registry model's output is checked against the exported one on
random inputs, so a card never describes a network it does not compute.

A residual network's per-task network (a program over folded convolutions) and a chain whose
widths no registry option expresses (a VGG with per-layer widths) have no card: the file keeps
the exported state dict under the format name `EXPORTED_TASK_FORMAT`, and `task_note` says what
loads the work instead (the zipped network download).
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mtz_core.checkpoints import EXPORTED_TASK_FORMAT, save_checkpoint
from mtz_core.data import parse_task
from mtz_core.models import ModelSpec, build_model, get_model_spec

if TYPE_CHECKING:
    from .zipper import ZipState

__all__ = ["task_spec", "task_bytes", "task_note"]

#: registry families whose per-layer widths are builder options: spec -> spec with widths
_WIDTH_OPTIONS = {
    "mlp": lambda s, w: {"widths": tuple(w), "dropout": s.kwargs.get("dropout", 0.0)},
    "lenet300": lambda s, w: {"widths": tuple(w), "dropout": 0.0},
    "lenet5": lambda s, w: (
        {**s.kwargs, "channels": (w[0], w[1]), "hidden": w[2]} if len(w) == 3 else None
    ),
}


def _weight_layers(model: nn.Module) -> list[int | str]:
    """Output units of every Linear/Conv2d and "norm" for every batch norm, in order."""
    return [
        m.out_features
        if isinstance(m, nn.Linear)
        else m.out_channels
        if isinstance(m, nn.Conv2d)
        else "norm"
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.modules.batchnorm._BatchNorm))
    ]


def _candidates(original: ModelSpec, hidden: list[int]) -> list[ModelSpec]:
    """The original spec, then the same family with `hidden` as its widths (when it has such
    options: `lenet300` becomes the identical `mlp` with other widths)."""
    out = [original]
    make = _WIDTH_OPTIONS.get(original.name)
    options = make(original, hidden) if make is not None else None
    if options is not None:
        name = "mlp" if original.name == "lenet300" else original.name
        out.append(ModelSpec.make(name, original.input_shape, original.num_classes, **options))
    return out


def task_spec(state: ZipState, task: int) -> ModelSpec | None:
    """The registry spec of task `task`'s network in `state`'s zip, or None when no registry
    model has its form. Only shapes are compared (models built on the meta device): cheap on
    every page run, even for a VGG."""
    net = state.session.model
    original = get_model_spec(state.pair.nets[task])
    if original is None or net.architecture.graph is not None:
        return None
    widths = [layer.out_width(task) for layer in net.layers]
    layers: list[int | str] = []  # as `export_task` writes them: a norm only where kept
    for layer, width in zip(net.layers, widths):
        layers += [width, "norm"] if layer.norm is not None else [width]
    for spec in _candidates(original, widths[:-1]):
        with torch.device("meta"):
            built = build_model(spec)
        if _weight_layers(built) == layers:
            return spec
    return None


def _as_registry_model(spec: ModelSpec, exported: nn.Module) -> nn.Module:
    """The registry model of `spec` holding `exported`'s tensors (entries matched in order by
    shape and kind), checked to compute the same outputs; ValueError when it does not."""
    model = build_model(spec).to(next(exported.parameters()).dtype).eval()
    ours, theirs = model.state_dict(), exported.state_dict()
    pairs = list(zip(ours.items(), theirs.items()))
    if len(ours) != len(theirs) or any(
        k.rsplit(".", 1)[-1] != j.rsplit(".", 1)[-1] or a.shape != b.shape
        for (k, a), (j, b) in pairs
    ):
        raise ValueError(f"the exported network's tensors do not line up with {spec.describe()}")
    model.load_state_dict({k: b for (k, _), (_, b) in pairs})
    exported = exported.eval()
    x = torch.randn(8, *spec.input_shape, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        same = torch.allclose(model(x), exported(x), rtol=1e-4, atol=1e-5)
    if not same:
        raise ValueError(f"{spec.describe()} does not compute the exported network")
    return model


def _card_task(task: Any) -> tuple[str | None, dict[str, Any]]:
    """The task text the card records (None for the user's own .npz, which the CLI cannot
    read) and the split seed and padding `mtz eval` reloads it with."""
    extra = {"data_seed": int(getattr(task, "seed", 0)), "pad_to": getattr(task, "pad_to", None)}
    try:
        return str(parse_task(task.name)), extra
    except (ValueError, TypeError):
        return None, extra


def task_bytes(state: ZipState, task: int) -> bytes:
    """Task `task`'s network as .safetensors bytes: with the model card `mtz train` writes when
    a registry model describes it (`task_spec`), else the exported state dict alone."""
    from safetensors.torch import save

    exported = state.session.model.export_task(task)
    spec = task_spec(state, task)
    if spec is not None:
        try:
            model = _as_registry_model(spec, exported)
        except ValueError:  # the oracle disagrees: never write a card that does not fit
            spec = None
    if spec is not None:
        text, extra = _card_task(state.pair.tasks[task])
        extra.update(exported_from="mtz explorer", task_index=task, shares=state.shares())
        fd, path = tempfile.mkstemp(suffix=".safetensors", prefix="mtz-task-")
        os.close(fd)
        try:
            save_checkpoint(model, spec, path, task=text, extra=extra)
            with open(path, "rb") as fh:
                return fh.read()
        finally:
            os.unlink(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in exported.state_dict().items()}
    meta = {
        "format": EXPORTED_TASK_FORMAT,
        "task": state.pair.tasks[task].name,
        "modules": repr(exported),
    }
    return save(tensors, metadata=meta)


def task_note(state: ZipState, task: int, file_name: str) -> str:
    """What reads the per-task download back, for its caption."""
    spec = task_spec(state, task)
    if spec is None:
        kind = "residual network" if state.pair.residual else "network with these widths"
        return (
            f"`{file_name}` holds the weights alone: no registry model is this zipped {kind}, "
            "so the file has no model card and neither `mtz eval` nor **Load models** reads "
            "it. To evaluate or reload the work, use the zipped network "
            "(`mtz eval mtz_zipped.safetensors`); in Python, "
            f"`ZippedNet.load('mtz_zipped.safetensors').export_task({task})` rebuilds this "
            "network."
        )
    text, _ = _card_task(state.pair.tasks[task])
    said = (
        f"`{file_name}`: a {spec.name} checkpoint with its model card ({spec.describe()}) "
        f"and task; `mtz eval {file_name}`, `mtz_core.checkpoints.load_checkpoint"
        f"('{file_name}')` and **Load models** (Architecture: from the file's card) read it."
    )
    if text is None:
        said = (
            f"`{file_name}`: a {spec.name} checkpoint with its model card ({spec.describe()}); "
            "the card cannot name your own .npz task, so load it on **Load models** "
            "(Architecture: from the file's card) with your .npz, or in Python with "
            f"`mtz_core.checkpoints.load_checkpoint('{file_name}')`."
        )
    return said
