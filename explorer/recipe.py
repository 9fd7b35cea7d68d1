"""Keeping the work: the zip recipe (JSON) and the downloads of the zipped network.

A recipe names the two models (demo name, or file names with their architecture), the two
tasks, the zip settings and, per zipped layer, the share, the exact pairs, the damping and
method used, and the retraining runs that followed. Importing it rebuilds the same network by
stepping the engine with those pairs (`ZipSession.step(pairs=...)`) and retraining the same way.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any

import numpy as np

from .jobs import Job, SubJob
from .pair import LoadedPair
from .zipper import ZipSettings, ZipState

__all__ = [
    "RECIPE_FORMAT",
    "RECIPE_VERSION",
    "build_recipe",
    "recipe_json",
    "parse_recipe",
    "check_recipe_fits",
    "rebuild",
    "zipped_bytes",
    "task_bytes",
]

RECIPE_FORMAT = "mtz-recipe"
RECIPE_VERSION = 1


def build_recipe(pair: LoadedPair, state: ZipState) -> dict[str, Any]:
    """The recipe of `state`'s zip so far."""
    layers = []
    for rec in state.records:
        k_max = min(rec.n_a, rec.n_b)
        layers.append(
            {
                "name": rec.name,
                "members": list(rec.members) or [rec.name],
                "n_a": rec.n_a,
                "n_b": rec.n_b,
                "shared": rec.k,
                "share": rec.k / k_max if k_max else 0.0,
                "pairs": rec.pairs.tolist(),
                "damping": rec.damping,
                "method": rec.method,
                "matching": rec.matching,
                "predicted_error": rec.predicted_error,
                "retraining": list(state.retrain_log.get(rec.index, [])),
            }
        )
    s = state.settings
    return {
        "format": RECIPE_FORMAT,
        "format_version": RECIPE_VERSION,
        "title": pair.title,
        "models": pair.models,
        "tasks": pair.tasks,
        "settings": {
            "method": s.method,
            "matching": s.matching,
            "damping": s.damping,
            "calib_samples": s.calib_samples,
            "batch_size": s.batch_size,
            "heldout_samples": s.heldout_samples,
            "eval_samples": s.eval_samples,
            "seed": s.seed,
        },
        "hidden_layers": [{"name": n, "n_a": a, "n_b": b} for n, a, b in state.layers],
        "layers": layers,
        "result": {
            "saved_fraction": state.saved_fraction(),
            "params": state.params(),
            "accuracy": {"a": state.accuracy[0], "b": state.accuracy[1]},
        },
    }


def recipe_json(recipe: dict[str, Any]) -> str:
    return json.dumps(recipe, indent=1, sort_keys=False) + "\n"


def parse_recipe(data: bytes | str, file_name: str = "recipe") -> dict[str, Any]:
    """Read and check a recipe; the errors say what is wrong with the file."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        recipe = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file_name} is not a JSON recipe ({exc})") from None
    if not isinstance(recipe, dict) or recipe.get("format") != RECIPE_FORMAT:
        raise ValueError(
            f'{file_name} is JSON but not an MTZ Explorer recipe (no "format": '
            f'"{RECIPE_FORMAT}"); export one from this page'
        )
    version = recipe.get("format_version")
    if version != RECIPE_VERSION:
        raise ValueError(
            f"{file_name} is recipe version {version!r}; this app reads version {RECIPE_VERSION}"
        )
    for key in ("models", "tasks", "settings", "layers"):
        if key not in recipe:
            raise ValueError(f"{file_name} has no {key!r} entry; the recipe is incomplete")
    if not isinstance(recipe["layers"], list):
        raise ValueError(f"{file_name}: 'layers' must be a list")
    for i, layer in enumerate(recipe["layers"]):
        if not isinstance(layer, dict) or "name" not in layer or "pairs" not in layer:
            raise ValueError(f"{file_name}: layer entry {i} needs a name and pairs")
        pairs = np.asarray(layer["pairs"], dtype=np.int64)
        if pairs.size and (pairs.ndim != 2 or pairs.shape[1] != 2):
            raise ValueError(
                f"{file_name}: layer {layer['name']!r} pairs must be a list of [i, j] pairs"
            )
    try:
        settings_from(recipe)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file_name}: bad settings ({exc})") from None
    return recipe


def settings_from(recipe: dict[str, Any]) -> ZipSettings:
    s = dict(recipe.get("settings") or {})
    known = set(ZipSettings.__dataclass_fields__)
    settings = ZipSettings(**{k: v for k, v in s.items() if k in known})
    from mtz_core import ZipConfig

    ZipConfig(**settings.config())  # validates method, damping, seed
    return settings


def recipe_demo(recipe: dict[str, Any]) -> str | None:
    """The demo pair a recipe was made on, if both models come from one demo."""
    models = recipe.get("models") or {}
    names = {
        m.get("name") for m in models.values() if isinstance(m, dict) and m.get("source") == "demo"
    }
    if len(names) == 1 and all(
        isinstance(m, dict) and m.get("source") == "demo" for m in models.values()
    ):
        return names.pop()
    return None


def check_recipe_fits(recipe: dict[str, Any], pair: LoadedPair) -> None:
    """Refuse a recipe made for other models (layer names and widths must agree)."""
    hidden = [(g["group"], g["width A"], g["width B"]) for g in pair.groups]
    names = [h[0] for h in hidden]
    wanted = recipe.get("hidden_layers")
    if wanted is not None:
        theirs = [(h.get("name"), h.get("n_a"), h.get("n_b")) for h in wanted]
        if theirs != hidden:
            raise ValueError(
                "this recipe is for other models: its hidden layers are "
                f"{', '.join(f'{n} ({a}/{b})' for n, a, b in theirs)}, the loaded pair has "
                f"{', '.join(f'{n} ({a}/{b})' for n, a, b in hidden)}. Load the models it names "
                f"first: {describe_models(recipe)}"
            )
    seen = []
    for layer in recipe["layers"]:
        if layer["name"] not in names:
            raise ValueError(
                f"the recipe zips layer {layer['name']!r}, which the loaded pair does not have "
                f"(its hidden layers: {names})"
            )
        seen.append(layer["name"])
    if seen != names[: len(seen)]:
        raise ValueError(
            f"the recipe's layers {seen} are not the first layers in order {names}; "
            "layers are zipped bottom-up"
        )
    for key in ("a", "b"):
        want = (recipe.get("tasks") or {}).get(key) or {}
        have = pair.tasks[key]
        if want.get("task") and have.get("task") and want["task"] != have["task"]:
            raise ValueError(
                f"the recipe's task {key.upper()} is {want['task']}, the loaded pair's is "
                f"{have['task']}; load the pair the recipe names"
            )


def describe_models(recipe: dict[str, Any]) -> str:
    parts = []
    for key in ("a", "b"):
        m = (recipe.get("models") or {}).get(key) or {}
        t = (recipe.get("tasks") or {}).get(key) or {}
        task = t.get("task") or t.get("file") or "?"
        parts.append(f"{key.upper()}: {m.get('source', '?')} {m.get('name', '?')} on {task}")
    return "; ".join(parts)


def rebuild(job: Job, pair: LoadedPair, recipe: dict[str, Any]) -> ZipState:
    """Rebuild the recipe's zip on `pair` (a job): same pairs, same retraining runs."""
    check_recipe_fits(recipe, pair)
    state = ZipState(pair, settings_from(recipe))
    layers = recipe["layers"]
    total = len(layers) + sum(
        int(run.get("iterations", 0)) for layer in layers for run in layer.get("retraining", [])
    )
    done = 0
    for layer in layers:
        job.check()
        pairs = np.asarray(layer["pairs"], dtype=np.int64).reshape(-1, 2)
        state.step(pairs=pairs)
        done += 1
        job.progress(done, total, f"zipped {layer['name']} with {len(pairs)} pairs")
        for run in layer.get("retraining", []):
            state.retrain(
                SubJob(job, done, total, loss_offset=done),  # type: ignore[arg-type]
                iterations=int(run["iterations"]),
                lr=float(run["lr"]),
                batch_size=int(run.get("batch_size", 32)),
                device="cpu" if run.get("device", "cpu") == "cpu" else "auto",
                optimizer=run.get("optimizer", "sgd"),
            )
            done += int(run["iterations"])
    job.progress(total, total, "rebuilt")
    return state


def zipped_bytes(state: ZipState, metadata: dict[str, Any] | None = None) -> bytes:
    """The zipped network as a safetensors file (`ZippedNet.save`), as bytes."""
    fd, path = tempfile.mkstemp(suffix=".safetensors", prefix="mtz-zipped-")
    os.close(fd)
    try:
        state.session.model.save(path, metadata=metadata)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def task_bytes(state: ZipState, task: int) -> bytes:
    """Task `task`'s own network (`ZippedNet.export_task`) as safetensors bytes."""
    from safetensors.torch import save

    net = state.session.model.export_task(task)
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    task_obj = state.pair.task_a if task == 0 else state.pair.task_b
    meta = {
        "format": "mtz-exported-task",
        "task": task_obj.name,
        "modules": repr(net),
    }
    return save(tensors, metadata=meta)


def points_csv(df: Any) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")
