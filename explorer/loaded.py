"""The models the user works on (two or more, one per task): where each came from, its task,
and a summary.

A `LoadedModels` is read-only once made: demos are shared by every user through
`st.cache_resource`, and the engine copies weights when a `ZipSession` is created, so nothing
the app does later changes these models (training in the app works on deep copies).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
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
from mtz_core.recognize import recognize_state_dict
from mtz_core.training import TASK_LETTERS

from .screen_errors import text_file_problem

__all__ = [
    "LoadedModels",
    "summarize",
    "summarize_models",
    "describe_model",
    "demo_models",
    "demo_pair",
    "load_uploaded_model",
    "parse_options",
    "train_pair",
    "DEMO_NAMES",
    "MAX_MODELS",
    "list_models",
    "model_options",
]

DEMO_NAMES = list(DEMOS)
EVAL_BATCH = 512
#: the most models the engine zips at once (one task letter each)
MAX_MODELS = len(TASK_LETTERS)


@dataclass
class LoadedModels:
    """Two or more models (one per task), their tasks, and what the Load page shows about them.

    Model t is named by the letter `letters[t]` ("a", "b", "c", …; shown upper case): the keys
    of `models`, the per-model columns of `layers` and `groups` ("width A", "params C", …).
    `model_a`, `task_a`, … name the first two.
    """

    title: str
    models: dict[str, dict[str, Any]]  # by letter: {"source", "name", "architecture"} (recipes)
    nets: list[nn.Module]
    tasks: list[Any]
    accuracy: tuple[float | None, ...] = ()
    params: tuple[int, ...] = ()
    layers: list[dict[str, Any]] = field(default_factory=list)  # every weight layer
    groups: list[dict[str, Any]] = field(default_factory=list)  # the zippable groups, in order
    residual: bool = False  # a residual network: a group may have several member layers
    zippable: bool = False
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    #: each model's weight layers from its own trace, by label (A, B, …; absent: it did not
    #: trace): what a model is, even when the models differ and `layers` cannot line them up
    own_layers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: the uploaded files the models and tasks were read from, by letter ({"model": (name,
    #: bytes), "npz": (name, bytes) or None}), when they are small enough to keep for a
    #: restore after a reload (`explorer.autosave`); `files_bytes` their total size, kept or not
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    files_bytes: int = 0

    @property
    def lined_up(self) -> bool:
        """Every model traced and has the same weight layers (names, kinds, in order) as A: only
        then do one table's rows describe every model's layers."""
        if len(self.own_layers) != self.n_tasks:
            return False
        first = [(r["layer"], r["kind"]) for r in self.own_layers[self.labels[0]]]
        return all(
            [(r["layer"], r["kind"]) for r in rows] == first for rows in self.own_layers.values()
        )

    @property
    def n_tasks(self) -> int:
        return len(self.nets)

    @property
    def letters(self) -> tuple[str, ...]:
        """One letter per model, in order: a, b, c, …"""
        return tuple(TASK_LETTERS[: self.n_tasks])

    @property
    def labels(self) -> tuple[str, ...]:
        """The models' names on screen: A, B, C, …"""
        return tuple(x.upper() for x in self.letters)

    @property
    def many(self) -> bool:
        """Three or more models (what some views of two models cannot show)."""
        return self.n_tasks > 2

    @property
    def model_a(self) -> nn.Module:
        return self.nets[0]

    @property
    def model_b(self) -> nn.Module:
        return self.nets[1]

    @property
    def task_a(self) -> Any:
        return self.tasks[0]

    @property
    def task_b(self) -> Any:
        return self.tasks[1]

    @property
    def kind(self) -> str:
        """What to call the set on screen: a pair, or a set of T models."""
        return "pair" if self.n_tasks == 2 else f"set of {self.n_tasks} models"

    def widths(self, row: dict[str, Any]) -> tuple[int, ...]:
        """A layer's or group's width in every model (its `width A`, `width B`, … entries)."""
        return tuple(row[f"width {x}"] for x in self.labels)

    def task_sources(self) -> dict[str, dict[str, Any]]:
        """How to get each task back (for recipes), by letter."""
        out = {}
        for key, task in zip(self.letters, self.tasks):
            if task.name.startswith("npz:"):
                out[key] = {"source": "npz", "file": task.name[4:]}
            else:
                out[key] = {"source": "builtin", "task": task.name, "seed": task.seed}
        return out

    def task_title(self, t: int) -> str:
        """'Task C (digits:7-9)'."""
        return f"Task {self.labels[t]} ({self.tasks[t].name})"

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
) -> LoadedModels:
    """Two models: `summarize_models` of the pair."""
    return summarize_models(title, models, [model_a, model_b], [task_a, task_b])


def summarize_models(
    title: str,
    models: dict[str, dict[str, Any]],
    nets: Sequence[nn.Module],
    tasks: Sequence[Any],
) -> LoadedModels:
    """Trace every model, check they can be zipped, count parameters, measure test accuracy.

    `models`: each model's recipe entry by letter (a, b, c, …); `nets[t]` is trained for
    `tasks[t]`. Every model is described from its own trace."""
    nets, tasks = list(nets), list(tasks)
    if len(nets) != len(tasks):
        raise ValueError(f"give one task per model: {len(nets)} models, {len(tasks)} tasks")
    if not 2 <= len(nets) <= MAX_MODELS:
        raise ValueError(f"load 2 to {MAX_MODELS} models, got {len(nets)}")
    notes: list[str] = []
    loaded = LoadedModels(title, dict(models), nets, tasks, notes=notes)
    labels = loaded.labels
    loaded.params = tuple(_count(m) for m in nets)
    for label, model, task in zip(labels, nets, tasks):
        heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if heads and heads[-1].out_features != task.num_classes:
            notes.append(
                f"model {label} has {heads[-1].out_features} outputs but its task {task.name} "
                f"has {task.num_classes} classes"
            )
    loaded.accuracy = tuple(
        _accuracy(model, task, label, notes) for label, model, task in zip(labels, nets, tasks)
    )
    traced: list[tuple[Any, Any] | None] = []
    reason = None
    first = tuple(tasks[0].input_shape)
    for label, task in zip(labels[1:], tasks[1:]):
        if tuple(task.input_shape) != first and reason is None:
            reason = (
                f"the tasks' inputs differ: {tasks[0].name} has shape {first}, {task.name} "
                f"(model {label}) has {tuple(task.input_shape)}; every model must read the "
                "same input"
            )
    for label, model, task in zip(labels, nets, tasks):
        try:
            traced.append(trace_model(model, tuple(task.input_shape), label=f"model {label}"))
        except ArchitectureError as exc:
            traced.append(None)
            reason = reason or str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. a shape error while tracing
            traced.append(None)
            reason = reason or f"model {label} does not run on {task.name}'s inputs: {exc}"
    complete = all(t is not None for t in traced)
    if complete and reason is None:
        for t in traced[1:]:
            try:
                check_compatible(traced[0][0], t[0])
            except ArchitectureError as exc:
                reason = str(exc)
                break
    for label, tr in zip(labels, traced):
        if tr is not None:
            loaded.own_layers[label] = _own_rows(*tr)
    if traced[0] is not None:
        _describe_layers(loaded, traced)
    loaded.zippable = reason is None and complete
    loaded.reason = reason
    return loaded


def _own_rows(arch: Any, weights: Any) -> list[dict[str, Any]]:
    """One model's weight layers as its own trace has them (name, kind, inputs, width,
    parameters, role): the last is its head."""
    last = len(arch.layers) - 1
    return [
        {
            "layer": spec.name,
            "kind": spec.kind,
            "role": "head" if i == last else "hidden",
            "inputs": spec.in_units,
            "width": spec.out_units,
            "params": sum(t.numel() for t in weights[i] if t is not None),
        }
        for i, spec in enumerate(arch.layers)
    ]


def _same_layer(a: Any, b: Any) -> bool:
    return a.name == b.name and a.kind == b.kind


def _describe_layers(loaded: LoadedModels, traced: list[tuple[Any, Any] | None]) -> None:
    """One row per weight layer (with the group it writes and the one it reads) and one per
    zippable group: a chain's hidden layers, or a residual network's channel groups (a residual
    stream's layers share one matching), in the order the session zips them. Each model's
    columns come from its own trace (None where it has no such layer or did not trace)."""
    arch_a, _ = traced[0]
    groups = arch_a.zip_groups()
    writes = {m: g.name for g in groups for m in g.members}
    reads = {r: g.name for g in groups for r in g.readers}
    loaded.residual = arch_a.graph is not None
    for i, spec in enumerate(arch_a.layers):
        row: dict[str, Any] = {
            "layer": spec.name,
            "kind": spec.kind,
            "inputs": spec.in_units,
            "per_unit": spec.kernel_positions if spec.kind == "conv" else spec.positions,
            "bias": spec.bias,
        }
        for label, tr in zip(loaded.labels, traced):
            arch, weights = tr if tr is not None else (None, None)
            own = arch.layers[i] if arch is not None and i < len(arch.layers) else None
            if own is not None and not (
                len(arch.layers) == len(arch_a.layers) and _same_layer(own, spec)
            ):
                own = None  # another model's layer i is another layer: never under A's name
            row[f"width {label}"] = own.out_units if own is not None else None
            row[f"params {label}"] = (
                sum(t.numel() for t in weights[i] if t is not None) if own is not None else None
            )
        row["head"] = i == len(arch_a.layers) - 1
        row["group"] = writes.get(i)  # the group of the units it writes (None: the head)
        row["reads"] = reads.get(i)  # the group it reads (None: the model's input)
        loaded.layers.append(row)
    for g in groups:
        first = loaded.layers[g.members[0]]
        row = {
            "group": g.name,
            "members": [loaded.layers[m]["layer"] for m in g.members],
            "readers": [loaded.layers[r]["layer"] for r in g.readers],
            "kind": first["kind"],
        }
        for label in loaded.labels:
            row[f"width {label}"] = first[f"width {label}"]
        loaded.groups.append(row)


def describe_model(entry: dict[str, Any]) -> str:
    """What a loaded model is, and where that came from (its card, or its keys)."""
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


def demo_models(name: str) -> LoadedModels:
    """A built-in demo (a pair, or a set of three or more models) with its summary (the caller
    caches it: it is read-only)."""
    demo = load_demo(name)
    entries = {
        key: {"source": "demo", "name": name, "architecture": card["architecture"]}
        for key, card in zip(demo.spec.letters, demo.cards)
    }
    return summarize_models(demo.spec.title, entries, demo.models, demo.tasks)


#: the two-model demos load the same way
demo_pair = demo_models


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
    text_file = text_file_problem(file_name, data)
    if text_file:
        raise ValueError(text_file)
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
        try:
            model, card = model_from_state_dict(sd, card, input_shape=tuple(task.input_shape))
        except ValueError as exc:
            raise ValueError(_named(sd, str(exc))) from None
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


def _named(sd: dict[str, Any], text: str) -> str:
    """An error about a bare state dict, starting with what its keys say it is (a torchvision
    resnet18, …) when the engine's message does not say so already: "resnet18 needs inputs of
    at least 32x32" alone leaves the user guessing what was recognised."""
    found = recognize_state_dict(sd)
    if found is None or "its keys are those of" in text:
        return text
    return f"its keys are those of a {found.describe()} state dict, but {text}"


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
) -> LoadedModels:
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
