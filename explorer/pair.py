"""The pair of models the user works on: where it came from, its tasks, and its summary.

A `LoadedPair` is read-only once made: demo pairs are shared by every user through
`st.cache_resource`, and the engine copies weights when a `ZipSession` is created, so nothing
the app does later changes these models (training in the app works on deep copies).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from mtz_core import ArchitectureError, CancelToken, evaluate, train
from mtz_core.architecture import check_compatible, trace_model
from mtz_core.checkpoints import (
    ACCEPTED_EXTENSIONS,
    load_checkpoint,
    model_from_state_dict,
    read_state_dict,
)
from mtz_core.demo import DEMOS, load_demo
from mtz_core.models import ModelSpec, create_model, get_model_spec, list_models, model_options

__all__ = [
    "LoadedPair",
    "summarize",
    "describe_model",
    "demo_pair",
    "load_uploaded_model",
    "parse_options",
    "train_pair",
    "DEMO_NAMES",
    "list_models",
    "model_options",
]

DEMO_NAMES = list(DEMOS)
EVAL_BATCH = 512


@dataclass
class LoadedPair:
    """Two models, their tasks, and what the Load page shows about them."""

    title: str
    models: dict[str, dict[str, Any]]  # "a"/"b": {"source", "name", "architecture"} (recipes)
    model_a: nn.Module
    model_b: nn.Module
    task_a: Any
    task_b: Any
    accuracy: tuple[float | None, float | None] = (None, None)
    params: tuple[int, int] = (0, 0)
    layers: list[dict[str, Any]] = field(default_factory=list)  # every weight layer
    groups: list[dict[str, Any]] = field(default_factory=list)  # the zippable groups, in order
    residual: bool = False  # a residual network: a group may have several member layers
    zippable: bool = False
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        """How to get each task back (for recipes)."""
        out = {}
        for key, task in (("a", self.task_a), ("b", self.task_b)):
            if task.name.startswith("npz:"):
                out[key] = {"source": "npz", "file": task.name[4:]}
            else:
                out[key] = {"source": "builtin", "task": task.name, "seed": task.seed}
        return out

    @property
    def hidden(self) -> list[dict[str, Any]]:
        """Every weight layer but the head: a chain's zip steps. What the app steps through is
        `groups` (for a residual network, several layers per group)."""
        return [row for row in self.layers if not row["head"]]

    @property
    def unit_name(self) -> str:
        """What one zip step zips: a hidden layer of a chain, a group of a residual network."""
        return "group" if self.residual else "layer"

    @property
    def is_image(self) -> bool:
        return len(tuple(self.task_a.input_shape)) == 3


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _accuracy(model: nn.Module, task: Any, label: str, notes: list[str]) -> float | None:
    try:
        return evaluate(model, task.batches("test", EVAL_BATCH)).accuracy
    except Exception as exc:  # noqa: BLE001 - shown to the user, the pair still loads
        notes.append(f"model {label} could not be evaluated on {task.name}: {exc}")
        return None


def summarize(
    title: str,
    models: dict[str, dict[str, Any]],
    model_a: nn.Module,
    model_b: nn.Module,
    task_a: Any,
    task_b: Any,
) -> LoadedPair:
    """Trace both models, check they can be zipped, count parameters, measure test accuracy."""
    notes: list[str] = []
    pair = LoadedPair(title, models, model_a, model_b, task_a, task_b, notes=notes)
    pair.params = (_count(model_a), _count(model_b))
    for label, model, task in (("A", model_a, task_a), ("B", model_b, task_b)):
        heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if heads and heads[-1].out_features != task.num_classes:
            notes.append(
                f"model {label} has {heads[-1].out_features} outputs but its task {task.name} "
                f"has {task.num_classes} classes"
            )
    pair.accuracy = (
        _accuracy(model_a, task_a, "A", notes),
        _accuracy(model_b, task_b, "B", notes),
    )
    traced = []
    reason = None
    if tuple(task_a.input_shape) != tuple(task_b.input_shape):
        reason = (
            f"the tasks' inputs differ: {task_a.name} has shape {tuple(task_a.input_shape)}, "
            f"{task_b.name} has {tuple(task_b.input_shape)}; both models must read the same input"
        )
    for label, model, task in (("A", model_a, task_a), ("B", model_b, task_b)):
        try:
            arch, weights = trace_model(model, tuple(task.input_shape), label=f"model {label}")
            traced.append((arch, weights))
        except ArchitectureError as exc:
            reason = reason or str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. a shape error while tracing
            reason = reason or f"model {label} does not run on {task.name}'s inputs: {exc}"
    if len(traced) == 2 and reason is None:
        try:
            check_compatible(traced[0][0], traced[1][0])
        except ArchitectureError as exc:
            reason = str(exc)
    if traced:
        _describe_layers(pair, traced)
    pair.zippable = reason is None and len(traced) == 2
    pair.reason = reason
    return pair


def _describe_layers(pair: LoadedPair, traced: list[tuple[Any, Any]]) -> None:
    """One row per weight layer (with the group it writes and the one it reads) and one per
    zippable group: a chain's hidden layers, or a residual network's channel groups (a residual
    stream's layers share one matching), in the order the session zips them."""
    arch_a, w_a = traced[0]
    arch_b, w_b = traced[1] if len(traced) == 2 else (None, None)
    groups = arch_a.zip_groups()
    writes = {m: g.name for g in groups for m in g.members}
    reads = {r: g.name for g in groups for r in g.readers}
    pair.residual = arch_a.graph is not None
    for i, spec in enumerate(arch_a.layers):
        spec_b = arch_b.layers[i] if arch_b is not None and i < len(arch_b.layers) else None
        pa = sum(t.numel() for t in w_a[i] if t is not None)
        pb = sum(t.numel() for t in w_b[i] if t is not None) if spec_b is not None else None
        pair.layers.append(
            {
                "layer": spec.name,
                "kind": spec.kind,
                "inputs": spec.in_units,
                "per_unit": spec.kernel_positions if spec.kind == "conv" else spec.positions,
                "bias": spec.bias,
                "width A": spec.out_units,
                "width B": spec_b.out_units if spec_b is not None else None,
                "params A": pa,
                "params B": pb,
                "head": i == len(arch_a.layers) - 1,
                "group": writes.get(i),  # the group of the units it writes (None: the head)
                "reads": reads.get(i),  # the group it reads (None: the model's input)
            }
        )
    for g in groups:
        first = pair.layers[g.members[0]]
        pair.groups.append(
            {
                "group": g.name,
                "members": [pair.layers[m]["layer"] for m in g.members],
                "readers": [pair.layers[r]["layer"] for r in g.readers],
                "kind": first["kind"],
                "width A": first["width A"],
                "width B": first["width B"],
            }
        )


def describe_model(entry: dict[str, Any]) -> str:
    """What a model of the pair is, and where that came from (its card, or its keys)."""
    if entry.get("recognized"):
        text = f"recognised from its keys: {entry['recognized']}"
        return text + (f"; {entry['assumed']}" if entry.get("assumed") else "")
    arch = entry.get("architecture")
    if not arch:
        return "architecture unknown"
    spec = ModelSpec.from_dict(arch)
    source = {"demo": "its demo card", "trained": "trained here"}.get(
        entry.get("source", ""), "its card or the architecture chosen"
    )
    return f"{spec.describe()} ({source})"


def demo_pair(name: str) -> LoadedPair:
    """A built-in demo pair with its summary (the caller caches it: it is read-only)."""
    demo = load_demo(name)
    models = {
        key: {
            "source": "demo",
            "name": name,
            "architecture": card["architecture"],
        }
        for key, card in (("a", demo.card_a), ("b", demo.card_b))
    }
    return summarize(demo.spec.title, models, demo.model_a, demo.model_b, demo.task_a, demo.task_b)


def parse_options(text: str) -> dict[str, Any]:
    """Model options from the text box: a JSON object such as {"widths": [300, 100]}."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f'model options must be a JSON object such as {{"widths": [300, 100]}} ({exc.msg})'
        ) from None
    if not isinstance(value, dict):
        raise ValueError('model options must be a JSON object such as {"widths": [300, 100]}')
    return value


def load_uploaded_model(
    file_name: str,
    data: bytes,
    architecture: str | None,
    options: dict[str, Any],
    task: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an uploaded checkpoint for `task` (input shape and class count from the task).

    `architecture=None` reads it from the file's card, or for a file without one (a bare
    torchvision ResNet or VGG state dict) from its keys, with the task's input shape; the entry
    then says what was recognised and assumed. Returns the model and its recipe entry.
    """
    suffix = Path(file_name).suffix.lower()
    if suffix not in ACCEPTED_EXTENSIONS:
        raise ValueError(
            f"{file_name}: checkpoints must be {', '.join(ACCEPTED_EXTENSIONS)} files, got "
            f"{suffix or 'no extension'}"
        )
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="mtz-upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        model, card = _load(tmp, architecture, options, task)
    except Exception as exc:
        # the engine names the temporary file; the user knows their own file's name
        text = str(exc).replace(Path(tmp).name, file_name).replace(tmp, file_name)
        if isinstance(exc, (ValueError, TypeError, FileNotFoundError)):
            raise type(exc)(text) from None
        raise
    finally:
        os.unlink(tmp)
    spec = card.get("model_spec")
    entry = {
        "source": "file",
        "name": file_name,
        "architecture": spec.to_dict() if isinstance(spec, ModelSpec) else None,
    }
    if card.get("recognized"):
        entry["recognized"] = card["recognized"]
        entry["assumed"] = card["assumed"]
    return model.eval(), entry


def _load(
    tmp: str, architecture: str | None, options: dict[str, Any], task: Any
) -> tuple[nn.Module, dict[str, Any]]:
    if architecture is None:
        if options:
            raise ValueError(
                f"options {sorted(options)} need an architecture: choose one, or leave the "
                "options empty to read the architecture from the file's card or its keys"
            )
        sd, card = read_state_dict(tmp)
        if card["model_spec"] is not None:
            return model_from_state_dict(sd, card)
        # no card: a torchvision ResNet or VGG is recognised by its keys, for the task's inputs
        model, card = model_from_state_dict(sd, card, input_shape=tuple(task.input_shape))
        card["assumed"] = (
            f"built as the registry's {card['model_spec'].describe()}, the input shape "
            f"{tuple(task.input_shape)} taken from task {task.name}"
        )
        return model, card
    if architecture not in list_models():
        known_models = ", ".join(list_models())
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {known_models}")
    known = model_options(architecture)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"{architecture} has no option(s) {unknown}; it accepts "
            f"{', '.join(known) or 'no options'}"
        )
    spec = ModelSpec.make(architecture, tuple(task.input_shape), int(task.num_classes), **options)
    return load_checkpoint(tmp, architecture=spec)


def train_pair(
    model_name: str,
    options: dict[str, Any],
    task_a: Any,
    task_b: Any,
    *,
    iterations: int,
    lr: float,
    batch_size: int = 64,
    seed: int = 0,
    progress: Callable[[int, int, str, tuple[float, ...] | None], None] | None = None,
    cancel: CancelToken | None = None,
) -> LoadedPair:
    """Train a fresh pair (one model per task, different seeds) on the built-in tasks.

    Runs in a worker thread; `progress(done, total, text, losses)` reports each iteration.
    """
    if tuple(task_a.input_shape) != tuple(task_b.input_shape):
        raise ValueError(
            f"the tasks' inputs differ ({task_a.name}: {tuple(task_a.input_shape)}, "
            f"{task_b.name}: {tuple(task_b.input_shape)}); pick two tasks of one dataset"
        )
    models, entries = [], {}
    for t, (key, task) in enumerate((("a", task_a), ("b", task_b))):
        model = create_model(
            model_name, tuple(task.input_shape), int(task.num_classes), seed=seed + t + 1, **options
        )

        def report(p, t=t, task=task):
            if progress is not None:
                progress(
                    t * iterations + p.iteration,
                    2 * iterations,
                    f"training model {'AB'[t]} on {task.name}: {p.iteration}/{p.total}",
                    (t, *p.losses),
                )

        rep = train(
            model,
            task.batches("calib", batch_size, shuffle=True, seed=seed + t + 1),
            iterations=iterations,
            lr=lr,
            seed=seed + t + 1,
            device="cpu",
            progress=report,
            cancel=cancel,
        )
        if rep.cancelled:
            raise InterruptedError("training was cancelled; the pair you had is kept")
        models.append(model.eval())
        entries[key] = {
            "source": "trained",
            "name": f"{model_name} trained on {task.name}",
            "architecture": get_model_spec(model).to_dict(),
            "training": {"iterations": iterations, "lr": lr, "seed": seed + t + 1},
        }
    title = f"{model_name} trained here: {task_a.name} vs {task_b.name}"
    return summarize(title, entries, models[0], models[1], task_a, task_b)
