"""Argument parsing for `mtz`: the parser and the value types that check each argument."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Any

#: `--nproc` of zip, sweep and tune (`commands._across_processes`)
NPROC_HELP = (
    "processes on this machine (torchrun; NCCL on GPUs, gloo on CPU): each streams its share of "
    "the calibration data and retrains on its slice of every batch"
)

__all__ = ["UsageError", "build_parser"]


class UsageError(Exception):
    """A bad argument: reported like argparse's own errors, with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)  # one line, no usage block: scripts parse stderr too


def _arg(fn, *options):
    """An argparse type from `fn(text, *options)`, keeping its ValueError's message."""

    def parse(text: str) -> Any:
        try:
            return fn(text.strip(), *options)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = fn.__name__.strip("_")
    return parse


def _num(text: str, kind: type = int, low: float = 0, high: float = math.inf, pos=False) -> Any:
    """An int or float in [low, high] (`pos`: and > 0, for a learning rate or a width)."""
    what = f"{'an int' if kind is int else 'a number'} >= {low:g}"
    what = (
        "a positive number" if pos else f"a number in [{low:g}, {high:g}]" if high < 1e9 else what
    )
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or not low <= value <= high or (pos and value <= 0):
        raise ValueError(f"{text} is out of range; expected {what}")
    return value


def _share_fraction(text: str, counts: bool = True) -> float:
    """A fraction in [0, 1], however it is written ("1" and "1.0" both mean all); `counts`:
    the command also takes --k, so a whole number above 1 points there."""
    try:
        return _num(text, float, 0, 1)
    except ValueError:
        hint = ""
        if counts and text.strip().lstrip("+").isdigit() and int(text) > 1:
            hint = f"; to share {int(text)} pairs use --k {int(text)}"
        raise ValueError(
            f"a share is a fraction of each layer in [0, 1], got {text!r}{hint}"
        ) from None


def _pair_count(text: str) -> int:
    """A number of pairs (an int >= 0)."""
    try:
        return _num(text)
    except ValueError:
        raise ValueError(
            f"--k takes a number of pairs (an int >= 0), got {text!r}; for a fraction of each "
            "layer use --share"
        ) from None


def _by_layer(text: str, value) -> Any:
    """`VALUE`, or `NAME=VALUE,NAME=VALUE` for per-layer settings."""
    if "=" not in text:
        return value(text)
    out = {}
    for item in text.split(","):
        name, _, v = item.partition("=")
        if not name.strip():
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        out[name.strip()] = value(v.strip())
    return out


def _iterations(text: str) -> Any:
    if "=" in text:
        return _by_layer(text, _num)
    values = [_num(v.strip()) for v in text.split(",")]
    return values[0] if len(values) == 1 else values


def _listed(text: str, item, allowed=None) -> list:
    values = [item(v.strip()) for v in text.split(",") if v.strip()]
    bad = [v for v in values if allowed is not None and v not in allowed]
    if not values or bad:
        raise ValueError(f"expected a comma list of {', '.join(allowed or ['values'])}: {text!r}")
    return values


def _damping(text: str) -> float | str:
    return text if text == "auto" else _num(text, float, 0)


def _task(text: str) -> str:
    from ..data import parse_task

    return str(parse_task(text))


def _tasks(text: str) -> list[str]:
    """Comma-separated tasks, one per model. A class list's own commas stay with its task:
    `digits:0,2,4,digits:1,3` is two tasks (a piece that is only a class or a range goes on
    the class list before it)."""
    items: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        goes_on = items and ":" in items[-1] and "?" not in items[-1]
        if goes_on and re.fullmatch(r"\d+(-\d+)?", piece):
            items[-1] += f",{piece}"
        else:
            items.append(piece)
    if "" in items:
        example = "digits:0-4,digits:5-9"
        raise ValueError(f"expected tasks separated by commas, e.g. {example}: {text!r}")
    return [_task(t) for t in items]


def _safetensors(text: str) -> Path:
    if not text.lower().endswith(".safetensors"):
        raise ValueError(f"the output must end in .safetensors, got {text!r}")
    return Path(text)


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE (a JSON value), got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value  # a bare word is a string option


def build_parser() -> argparse.ArgumentParser:
    """The `mtz` argument parser; errors raise `UsageError` instead of exiting."""
    from .. import __version__
    from ..config import BATCH_NORMS, CONV_HESSIANS, FLATTEN_HESSIANS, MATCHINGS, METHODS
    from ..models import list_models
    from ..training import OPTIMIZERS, RETRAIN_LR

    int0, int1, pos = _arg(_num), _arg(_num, int, 1), _arg(_num, float, 0, math.inf, True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    common.add_argument("--seed", type=int0, default=0, help="init, shuffling, random pairs")
    root, root_help = os.environ.get("MTZ_DATA_ROOT"), "MNIST etc. (default: $MTZ_DATA_ROOT)"
    common.add_argument("--data-root", default=root, help=root_help)
    common.add_argument("--data-seed", type=int0, help="split seed (default: checkpoint's or 0)")
    common.add_argument("--json", action="store_true", help="print a JSON result on stdout")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser = _Parser(prog="mtz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"mtz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text)

    def tasks(p: argparse.ArgumentParser, which: str) -> None:
        """--tasks for any number of models, --task-a/--task-b for exactly two."""
        tasks_help = f"the tasks of {which}, one each, comma-separated (default: the cards')"
        p.add_argument("--tasks", type=_arg(_tasks), help=tasks_help)
        for w in "ab":
            text = f"with two models: task of {w.upper()} (default: as recorded)"
            p.add_argument(f"--task-{w}", type=_arg(_task), help=text)

    def models(p: argparse.ArgumentParser) -> None:
        models_help = "checkpoints of the models, one per task: 2 or more (.safetensors, .pt, .pth)"
        p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help=models_help)
        tasks(p, "the checkpoints")
        p.add_argument("--calib-samples", type=int1, default=512, help="per task, for Hessians")
        p.add_argument(
            "--heldout-samples", type=int1, default=512, help="validation inputs, layer error"
        )
        p.add_argument("--batch-size", type=int1, default=64)
        p.add_argument("--lr", type=pos, default=RETRAIN_LR, help="retraining learning rate")
        p.add_argument("--damping", type=_arg(_damping), help="a number >= 0 or auto (1.0)")
        p.add_argument("--matching", choices=MATCHINGS, default="greedy")
        p.add_argument("--hessian", choices=CONV_HESSIANS, default="exact")
        p.add_argument("--flatten-hessian", choices=FLATTEN_HESSIANS, default="auto")
        p.add_argument(
            "--batch-norm",
            choices=BATCH_NORMS,
            default="fold",
            help="fold batch norm into the layers, or keep it per task",
        )
        p.add_argument(
            "--recalibrate",
            action="store_true",
            help="with --batch-norm keep: re-estimate each zipped layer's norm statistics",
        )
        frac = _arg(_num, float, 0, 1)
        p.add_argument("--zipit-alpha", type=frac, default=0.3, help="method zipit: its α")
        p.add_argument("--zipit-beta", type=frac, default=0.125, help="method zipit: its β")
        architecture(p, "every checkpoint, where a file has no card")

    def architecture(p: argparse.ArgumentParser, which: str) -> None:
        """For a .pt/.pth state dict with no card: the registry model to load it into."""
        p.add_argument(
            "--model",
            choices=list_models(),
            help=f"architecture of {which} (else the card's); the task gives shape and classes",
        )
        p.add_argument(
            "--option",
            type=_arg(_option),
            action="append",
            default=[],
            help="with --model: a model option, KEY=JSON (e.g. width=0.125)",
        )
        p.add_argument(
            "--pad-to",
            type=int1,
            help="with --model: zero-pad images to this side (VGG on 28x28: 32, the default)",
        )

    p = command("train", "train a registry model on a task and save a checkpoint")
    p.add_argument("--model", required=True, choices=list_models())
    p.add_argument("--task", required=True, type=_arg(_task), help="e.g. digits:0-4")
    p.add_argument("--iterations", type=int0, default=2000)
    p.add_argument("--lr", type=pos, default=0.05)
    p.add_argument("--batch-size", type=int1, default=64)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--pad-to", type=int1, help="zero-pad images to this side (VGG: 32)")
    p.add_argument("--widths", type=_arg(_listed, int1), help="mlp: hidden widths, e.g. 300,100")
    p.add_argument("--width", type=pos, help="vgg: width multiplier, e.g. 0.25")
    p.add_argument("--channels", type=_arg(_listed, int1), help="lenet5: e.g. 8,16")
    p.add_argument("--hidden", type=int1, help="lenet5: fully connected units")
    p.add_argument("--dropout", type=_arg(_num, float, 0, 1), help="mlp / vgg")
    p.add_argument("--option", type=_arg(_option), action="append", default=[], help="KEY=JSON")
    p.add_argument("--out", required=True, type=_arg(_safetensors))

    p = command("eval", "accuracy and loss of a checkpoint or a zipped network")
    p.add_argument("checkpoint")
    p.add_argument("--task", type=_arg(_task), help="a checkpoint's task (default: its card's)")
    tasks(p, "a zipped network")
    p.add_argument("--split", choices=("test", "val", "calib"), default="test")
    architecture(p, "a checkpoint without a card")

    p = command("zip", "zip 2 or more checkpoints into one multi-task network, with a JSON report")
    models(p)
    how_much = p.add_mutually_exclusive_group()
    share_help = "a fraction of each layer: 0.5 half, 1 (or 1.0) all; per layer fc1=0.5,fc2=1"
    share_help += " (default 0.5)"
    how_much.add_argument("--share", type=_arg(_by_layer, _share_fraction), help=share_help)
    k_help = "a number of pairs instead: 3 in every layer, or per layer fc1=3,fc2=5"
    how_much.add_argument("--k", type=_arg(_by_layer, _pair_count), help=k_help)
    p.add_argument("--method", choices=METHODS, default="mtz")
    within_help = "method mtz: a unit may also merge with a unit of its own model"
    p.add_argument("--within-model", action="store_true", help=within_help)
    weighted_help = "rank pairs by the layer error weighted by the loss's sensitivity (research)"
    p.add_argument("--output-weighted", action="store_true", help=weighted_help)
    subsets_help = "three or more models: units may be shared by a subset of the tasks (the paper)"
    p.add_argument("--subsets", action="store_true", help=subsets_help)
    its_help = "after each layer: 100, or per layer 100,50 or fc1=100"
    p.add_argument("--retrain-iterations", type=_arg(_iterations), default=0, help=its_help)
    p.add_argument("--out", type=_arg(_safetensors), help="zipped network to write")
    p.add_argument("--report", type=Path, help="JSON report to write")
    p.add_argument("--nproc", type=int1, default=1, help=NPROC_HELP)
    ckpt_help = "folder for the run's state after every zipped layer: the same command again "
    ckpt_help += "resumes from it"
    p.add_argument("--checkpoint-dir", type=Path, help=ckpt_help)
    every_help = "with --checkpoint-dir: also every N retraining iterations (0: never)"
    p.add_argument("--checkpoint-every", type=int0, default=0, help=every_help)

    p = command(
        "sweep",
        "zip at many shares and methods: table, CSV, HTML (and PNG) plot (needs the sweep extra: "
        "pip install 'mtz-explorer[sweep]')",
    )
    models(p)
    shares = _arg(_listed, lambda text: _share_fraction(text, counts=False))
    p.add_argument("--shares", type=shares, default=[0.25, 0.5, 0.75, 1])
    p.add_argument("--methods", type=_arg(_listed, str, METHODS), default=["mtz"])
    its_help = "budgets to compare, each per layer: e.g. 0,100"
    p.add_argument("--retrain-iterations", type=_arg(_listed, _num), default=[0], help=its_help)
    p.add_argument("--out", help="prefix of the files: PREFIX.csv, PREFIX.html (PREFIX.png)")
    p.add_argument("--nproc", type=int1, default=1, help=NPROC_HELP + " (in every zip)")

    p = command(
        "tune",
        "choose each layer's share: the most parameters saved with every task within "
        "--max-drop points of its accuracy on the validation split (never the test split)",
    )
    models(p)
    drop = _arg(_num, float, 0, 100)
    p.add_argument("--max-drop", type=drop, default=1.0, help="points of accuracy (default 1)")
    p.add_argument("--grid", type=shares, default=[0.25, 0.5, 0.75, 1], help="shares to try")
    p.add_argument("--method", choices=METHODS, default="mtz")
    within_help = "method mtz: a unit may also merge with a unit of its own model"
    p.add_argument("--within-model", action="store_true", help=within_help)
    its_help = "retraining after each layer of every tried plan (default 0)"
    p.add_argument("--retrain-iterations", type=int0, default=0, help=its_help)
    p.add_argument("--out", type=_arg(_safetensors), help="the chosen plan's zipped network")
    p.add_argument("--report", type=Path, help="JSON report to write (plan and every trial)")
    p.add_argument("--nproc", type=int1, default=1, help=NPROC_HELP + " (in every trial)")

    p = command("demo", "list the demo pairs, or write one's checkpoints to try the CLI")
    p.add_argument("name", nargs="?")
    p.add_argument("--out", type=Path, help="folder to write a.safetensors, b.safetensors to")
    return parser
