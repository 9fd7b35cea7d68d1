"""The built-in demos: small pre-trained models the app, tests and docs load offline.

A demo is two models (a pair) or more (a set, e.g. `digits-three`: one model per third of the
digits), one per task. Each is made by `build_demo` with fixed seeds (`scripts/make_assets.py`
runs it for all; rerunning reproduces the files up to float round-off, which differs between
CPUs) and stored under `assets/demos/<name>/` as `a.safetensors`, `b.safetensors`, … (checkpoints
with their model spec and task) and `a.json`, `b.json`, … (cards: architecture, task,
preprocessing, data split, accuracy, seed, format version), one letter per model
(`mtz_core.training.TASK_LETTERS`). `assets/` installs as the package `mtz_assets`, so the files
are package data, found with `importlib.resources` in a wheel as in a checkout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import load_checkpoint, save_checkpoint
from .data import Task, load_task
from .evaluation import evaluate
from .models import create_model
from .training import TASK_LETTERS, train

__all__ = [
    "DemoSpec",
    "LoadedDemo",
    "DemoPair",
    "DEMOS",
    "ASSETS_DIR",
    "list_demos",
    "build_demo",
    "load_demo",
]


def _assets_dir() -> Path:
    """The demo folder: the installed `mtz_assets` package, or a checkout's `assets/` when only
    the source tree is on the path (e.g. `PYTHONPATH=.` on a machine without the install)."""
    try:
        return Path(str(resources.files("mtz_assets") / "demos"))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "assets" / "demos"


ASSETS_DIR = _assets_dir()
CARD_FORMAT = "mtz-demo-card"
CARD_VERSION = 1


@dataclass(frozen=True)
class DemoSpec:
    name: str
    title: str
    description: str
    model: str
    task_a: str
    task_b: str
    options: dict[str, Any] = field(default_factory=dict)
    iterations: int = 1500
    lr: float = 0.05
    batch_size: int = 64
    seed_a: int = 1
    seed_b: int = 2
    data_seed: int = 0
    #: further models' tasks, after A's and B's (a demo set of three or more models); model
    #: number t (from 0) is trained with seed t + 1, so A and B keep seed_a = 1, seed_b = 2
    more_tasks: tuple[str, ...] = ()
    #: "float64" builds (initial weights included), trains and evaluates in double precision,
    #: then stores float32. For a net whose training amplifies round-off (a ResNet: hundreds of
    #: steps through batch norm), float32 ends up elsewhere on another CPU (its kernels, even the
    #: normal draws of the initial weights, differ in the last bit); in float64 they differ by
    #: about 1e-13 after training, far below float32's last bit, so a rebuild is the same
    train_dtype: str = "float32"

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every model's task, in model order (A, B, then `more_tasks`)."""
        return (self.task_a, self.task_b, *self.more_tasks)

    @property
    def seeds(self) -> tuple[int, ...]:
        """Every model's seed, in model order."""
        return (self.seed_a, self.seed_b, *range(3, 3 + len(self.more_tasks)))

    @property
    def letters(self) -> tuple[str, ...]:
        """The file letter of each model: a, b, c, …"""
        return tuple(TASK_LETTERS[: len(self.tasks)])


DEMOS: dict[str, DemoSpec] = {
    d.name: d
    for d in (
        DemoSpec(
            "digits-mlp",
            "LeNet-300-100 on 8×8 digits: 0–4 vs 5–9",
            "Two LeNet-300-100 networks, one per half of the digits, each with a 5-way head.",
            "lenet300",
            "digits:0-4",
            "digits:5-9",
        ),
        DemoSpec(
            "digits-conv",
            "Small LeNet-5 on 8×8 digits: which digit vs odd/even",
            "Two small conv nets (8 and 16 channels, 64 hidden units): all ten digits, and parity.",
            "lenet5",
            "digits",
            "digits:parity",
            options={"channels": (8, 16), "hidden": 64, "conv_relu": True},
        ),
        DemoSpec(
            "digits-resnet",
            "Small ResNet-20 on 8×8 digits: 0–4 vs 5–9",
            "Two ResNet-20s (option A shortcuts, width 0.25: 4, 8 and 16 channels), one per half "
            "of the digits: residual streams zip as groups of layers.",
            "resnet20",
            "digits:0-4",
            "digits:5-9",
            options={"option": "A", "width": 0.25},
            iterations=300,
            train_dtype="float64",
        ),
        DemoSpec(
            "moons-circles",
            "2-D teaching pair: moons vs circles",
            "Two small MLPs (16, 16) on generated 2-D points, for decision-boundary pictures.",
            "mlp",
            "moons",
            "circles",
            options={"widths": (16, 16)},
            iterations=2000,
            lr=0.1,
        ),
        DemoSpec(
            "digits-three",
            "Three MLPs on 8×8 digits: 0–3, 4–6 and 7–9",
            "Three small MLPs (64, 32), one per third of the digits: a set of three models to "
            "zip into one network with three heads.",
            "mlp",
            "digits:0-3",
            "digits:4-6",
            more_tasks=("digits:7-9",),
            options={"widths": (64, 32)},
            iterations=800,
            lr=0.05,
            train_dtype="float64",
        ),
    )
}


@dataclass
class LoadedDemo:
    """A loaded demo: its models, tasks and cards in model order (two for a pair, more for a
    set); `model_a`, `task_a`, `card_a` … name the first two."""

    spec: DemoSpec
    models: list[nn.Module]
    tasks: list[Task]
    cards: list[dict[str, Any]]

    @property
    def model_a(self) -> nn.Module:
        return self.models[0]

    @property
    def model_b(self) -> nn.Module:
        return self.models[1]

    @property
    def task_a(self) -> Task:
        return self.tasks[0]

    @property
    def task_b(self) -> Task:
        return self.tasks[1]

    @property
    def card_a(self) -> dict[str, Any]:
        return self.cards[0]

    @property
    def card_b(self) -> dict[str, Any]:
        return self.cards[1]


#: the name from when every demo was a pair
DemoPair = LoadedDemo


def list_demos() -> list[str]:
    return list(DEMOS)


def _spec(name: str) -> DemoSpec:
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; the demos are {list(DEMOS)}")
    return DEMOS[name]


def _card(demo: DemoSpec, which: str, model: nn.Module, task: Task, seed: int) -> dict[str, Any]:
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "demo": demo.name,
        "model": which,
        "architecture": model.mtz_spec.to_dict(),
        "task": task.name,
        "preprocessing": {"mean": list(task.mean), "std": list(task.std), "pad_to": task.pad_to},
        "split": {
            "seed": task.seed,
            "calib": task.size("calib"),
            "val": task.size("val"),
            "test": task.size("test"),
            "rule": "stratified 80/20, then 10 % of each class of the 80 % as val (mtz_core.data)",
        },
        "accuracy": {
            split: round(evaluate(model, task.batches(split, 512)).accuracy, 4)
            for split in ("calib", "val", "test")
        },
        "training": {
            "iterations": demo.iterations,
            "lr": demo.lr,
            "optimizer": "sgd",
            "momentum": 0.9,
            "batch_size": demo.batch_size,
            **({"dtype": demo.train_dtype} if demo.train_dtype != "float32" else {}),
        },
        "seed": seed,
    }


@contextmanager
def _default_dtype(demo: DemoSpec) -> Iterator[None]:
    """Build the demo's models in its `train_dtype` (their initial weights drawn in it)."""
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if demo.train_dtype not in dtypes:
        raise ValueError(
            f"demo {demo.name}: train_dtype must be one of {list(dtypes)}, got {demo.train_dtype!r}"
        )
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtypes[demo.train_dtype])
    try:
        yield
    finally:
        torch.set_default_dtype(before)


class _AsDouble:
    """Re-iterable (inputs, labels) batches with the inputs in float64."""

    def __init__(self, batches: Any) -> None:
        self.batches = batches

    def __iter__(self):
        for x, y in self.batches:
            yield x.double(), y


def build_demo(name: str, out_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Train demo `name` with its fixed seeds and write it (default: `ASSETS_DIR/name`); returns
    the cards by file letter."""
    demo = _spec(name)
    out = Path(out_dir) if out_dir is not None else ASSETS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    cards = {}
    for which, task_text, seed in zip(demo.letters, demo.tasks, demo.seeds):
        task = load_task(task_text, seed=demo.data_seed)
        data = task.batches("calib", demo.batch_size, shuffle=True, seed=seed)
        with _default_dtype(demo):
            model = create_model(
                demo.model, task.input_shape, task.num_classes, seed=seed, **demo.options
            )
        if demo.train_dtype == "float64":
            data = _AsDouble(data)
        train(model, data, iterations=demo.iterations, lr=demo.lr, seed=seed, device="cpu")
        model.float().eval()
        card = _card(demo, which, model, task, seed)
        save_checkpoint(model, None, out / f"{which}.safetensors", task=task.name)
        (out / f"{which}.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        cards[which] = card
    return cards


def load_demo(name: str, root: str | Path | None = None) -> LoadedDemo:
    """Load demo `name` with its tasks (offline; no download)."""
    demo = _spec(name)
    folder = Path(root) / name if root is not None else ASSETS_DIR / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"demo {name!r} is missing at {folder}; run `python scripts/make_assets.py` to make it"
        )
    models, tasks, cards = [], [], []
    for which in demo.letters:
        card = json.loads((folder / f"{which}.json").read_text())
        if card.get("format") != CARD_FORMAT or card.get("format_version") != CARD_VERSION:
            raise ValueError(f"{folder / which}.json is not a version-{CARD_VERSION} demo card")
        model, _ = load_checkpoint(folder / f"{which}.safetensors")
        models.append(model.eval())
        tasks.append(load_task(card["task"], seed=card["split"]["seed"]))
        cards.append(card)
    return LoadedDemo(demo, models, tasks, cards)
