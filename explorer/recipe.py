"""Keeping the work: the zip recipe (JSON) and the downloads of the zipped network.

A recipe lists the models (demo name, or file names with their architecture), each with its
task, the zip settings and, per zipped layer, the share, the exact unit tuples (one column per
model), the damping and method used, and the retraining runs that followed. Importing it
rebuilds the same network by stepping the engine with those tuples
(`ZipSession.step(pairs=...)`) and retraining the same way.

Version 2 (this app's) holds any number of models: `models` is a list, `hidden_layers` and
`layers` give one width per model. Version-1 recipes (two models, `models` and `tasks` as dicts
by "a"/"b", widths as `n_a`/`n_b`) are read and upgraded to version 2.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any

import numpy as np

from mtz_core.training import TASK_LETTERS

from . import task_export
from .jobs import Job, SubJob
from .loaded import LoadedModels
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
    "zipped_metadata",
    "task_bytes",
]

RECIPE_FORMAT = "mtz-recipe"
RECIPE_VERSION = 2
#: the versions `parse_recipe` reads (older ones are upgraded)
READABLE_VERSIONS = (1, 2)


def build_recipe(loaded: LoadedModels, state: ZipState) -> dict[str, Any]:
    """The recipe of `state`'s zip so far (version 2)."""
    layers = []
    for rec in state.records:
        widths = list(state.layers[rec.index][1:])
        k_max = min(widths)
        layers.append(
            {
                "name": rec.name,
                "members": list(rec.members) or [rec.name],
                "widths": widths,
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
    tasks = loaded.task_sources()
    return {
        "format": RECIPE_FORMAT,
        "format_version": RECIPE_VERSION,
        "title": loaded.title,
        "models": [
            {"letter": x, **loaded.models.get(x, {}), "task": tasks[x]} for x in loaded.letters
        ],
        "settings": {
            "method": s.method,
            "matching": s.matching,
            "damping": s.damping,
            "calib_samples": s.calib_samples,
            "batch_size": s.batch_size,
            "heldout_samples": s.heldout_samples,
            "eval_samples": s.eval_samples,
            "seed": s.seed,
            "batch_norm": s.batch_norm,
        },
        "hidden_layers": [{"name": n, "widths": list(w)} for n, *w in state.layers],
        "layers": layers,
        "result": {
            "saved_fraction": state.saved_fraction(),
            "params": state.params(),
            "accuracy": dict(zip(loaded.letters, state.accuracy)),
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
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{file_name} is recipe version {version!r}; this app reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    needed = ("models", "tasks", "settings", "layers") if version == 1 else ("models", "settings")
    for key in (*needed, "layers"):
        if key not in recipe:
            raise ValueError(f"{file_name} has no {key!r} entry; the recipe is incomplete")
    if version == 1:
        recipe = _upgrade_v1(recipe, file_name)
    if not isinstance(recipe["models"], list) or not all(
        isinstance(m, dict) for m in recipe["models"]
    ):
        raise ValueError(f"{file_name}: 'models' must be a list of model entries")
    n_models = len(recipe["models"])
    if not isinstance(recipe["layers"], list):
        raise ValueError(f"{file_name}: 'layers' must be a list")
    for i, layer in enumerate(recipe["layers"]):
        if not isinstance(layer, dict) or "name" not in layer or "pairs" not in layer:
            raise ValueError(f"{file_name}: layer entry {i} needs a name and pairs")
        pairs = np.asarray(layer["pairs"], dtype=np.int64)
        if pairs.size and (pairs.ndim != 2 or pairs.shape[1] != n_models):
            raise ValueError(
                f"{file_name}: layer {layer['name']!r} pairs must be a list of tuples of "
                f"{n_models} units, one per model"
            )
    try:
        settings_from(recipe)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file_name}: bad settings ({exc})") from None
    return recipe


def _upgrade_v1(recipe: dict[str, Any], file_name: str) -> dict[str, Any]:
    """A version-1 recipe (two models; models and tasks by "a"/"b"; n_a, n_b) as version 2."""
    models, tasks = recipe.get("models") or {}, recipe.get("tasks") or {}
    if not isinstance(models, dict) or not isinstance(tasks, dict):
        raise ValueError(f"{file_name}: a version-1 recipe has 'models' and 'tasks' by a and b")
    out = {k: v for k, v in recipe.items() if k != "tasks"}
    out["format_version"] = RECIPE_VERSION
    out["models"] = [
        {"letter": x, **(models.get(x) or {}), "task": tasks.get(x) or {}} for x in "ab"
    ]
    if recipe.get("hidden_layers") is not None:
        out["hidden_layers"] = [
            {"name": h.get("name"), "widths": [h.get("n_a"), h.get("n_b")]}
            for h in recipe["hidden_layers"]
        ]
    out["layers"] = [
        {**layer, "widths": [layer.get("n_a"), layer.get("n_b")]}
        if isinstance(layer, dict) and "n_a" in layer
        else layer
        for layer in recipe["layers"]
    ]
    return out


def settings_from(recipe: dict[str, Any]) -> ZipSettings:
    s = dict(recipe.get("settings") or {})
    known = set(ZipSettings.__dataclass_fields__)
    settings = ZipSettings(**{k: v for k, v in s.items() if k in known})
    from mtz_core import ZipConfig

    ZipConfig(**settings.config())  # validates method, damping, seed
    return settings


def recipe_demo(recipe: dict[str, Any]) -> str | None:
    """The demo a recipe was made on, if every model comes from one demo."""
    models = recipe.get("models") or []
    if not models or not all(isinstance(m, dict) and m.get("source") == "demo" for m in models):
        return None
    names = {m.get("name") for m in models}
    return names.pop() if len(names) == 1 else None


def _widths_text(rows: list[tuple[Any, ...]]) -> str:
    return ", ".join(f"{n} ({'/'.join(str(w) for w in ws)})" for n, *ws in rows)


def check_recipe_fits(recipe: dict[str, Any], loaded: LoadedModels) -> None:
    """Refuse a recipe made for other models (their number, layer names and widths, and the
    tasks must agree)."""
    models = recipe.get("models") or []
    if len(models) != loaded.n_tasks:
        raise ValueError(
            f"this recipe is for {len(models)} models, {loaded.n_tasks} are loaded. Load the "
            f"models it names first: {describe_models(recipe)}"
        )
    hidden = [(g["group"], *loaded.widths(g)) for g in loaded.groups]
    names = [h[0] for h in hidden]
    wanted = recipe.get("hidden_layers")
    if wanted is not None:
        theirs = [(h.get("name"), *(h.get("widths") or ())) for h in wanted]
        if theirs != hidden:
            raise ValueError(
                f"this recipe is for other models: its hidden layers are {_widths_text(theirs)}, "
                f"the loaded models have {_widths_text(hidden)}. Load the models it names "
                f"first: {describe_models(recipe)}"
            )
    seen = []
    for layer in recipe["layers"]:
        if layer["name"] not in names:
            raise ValueError(
                f"the recipe zips layer {layer['name']!r}, which the loaded models do not have "
                f"(their hidden layers: {names})"
            )
        seen.append(layer["name"])
    if seen != names[: len(seen)]:
        raise ValueError(
            f"the recipe's layers {seen} are not the first layers in order {names}; "
            "layers are zipped bottom-up"
        )
    have = loaded.task_sources()
    for x, label, entry in zip(loaded.letters, loaded.labels, models):
        want = entry.get("task") or {}
        if want.get("task") and have[x].get("task") and want["task"] != have[x]["task"]:
            raise ValueError(
                f"the recipe's task {label} is {want['task']}, the loaded models' is "
                f"{have[x]['task']}; load the models the recipe names"
            )


def describe_models(recipe: dict[str, Any]) -> str:
    parts = []
    for t, m in enumerate(recipe.get("models") or []):
        task = m.get("task") or {}
        letter = str(m.get("letter") or TASK_LETTERS[t]).upper()
        what = task.get("task") or task.get("file") or "?"
        parts.append(f"{letter}: {m.get('source', '?')} {m.get('name', '?')} on {what}")
    return "; ".join(parts)


def rebuild(job: Job, loaded: LoadedModels, recipe: dict[str, Any]) -> ZipState:
    """Rebuild the recipe's zip on `loaded` (a job): same tuples, same retraining runs."""
    check_recipe_fits(recipe, loaded)
    state = ZipState(loaded, settings_from(recipe))
    layers = recipe["layers"]
    total = len(layers) + sum(
        int(run.get("iterations", 0)) for layer in layers for run in layer.get("retraining", [])
    )
    done = 0
    for layer in layers:
        job.check()
        pairs = np.asarray(layer["pairs"], dtype=np.int64).reshape(-1, loaded.n_tasks)
        state.step(pairs=pairs)
        done += 1
        job.progress(done, total, f"zipped {layer['name']} with {len(pairs)} shared units")
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


def zipped_metadata(loaded: LoadedModels, state: ZipState) -> dict[str, Any]:
    """The metadata of the zipped download, in the layout `mtz zip` writes and `mtz eval`
    reads: `tasks` (one task text per model) and `data` (each task's split seed and padding),
    plus `task_a`/`task_b`/`data_a`/`data_b` for two models (older readers know only these).
    The app's own task sources (uploaded .npz files included) go under `sources`: a file that
    `mtz eval` cannot read without `--task-a` is no download at all."""
    data = [{"data_seed": int(t.seed), "pad_to": t.pad_to} for t in loaded.tasks]
    meta: dict[str, Any] = {"title": loaded.title}
    if loaded.n_tasks == 2:
        meta.update(task_a=loaded.tasks[0].name, task_b=loaded.tasks[1].name)
        meta.update(data_a=data[0], data_b=data[1])
    meta.update(tasks=[t.name for t in loaded.tasks], data=data)
    meta.update(sources=loaded.task_sources(), shares=state.shares())
    return meta


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
    """Task `task`'s own network as .safetensors bytes, with its model card when a registry
    model describes it (`explorer.task_export`)."""
    return task_export.task_bytes(state, task)


def points_csv(df: Any) -> bytes:
    """The Trade-off points as CSV with every column of `mtz sweep`'s CSV first (empty where a
    point has no value, e.g. a step's `share`), then the app's own (`series`, `label`, …): the
    file reads back with `pandas.read_csv` into `mtz_core.sweep.pareto_front` and
    `sweep_figure`, like a sweep the CLI wrote."""
    from mtz_core.sweep import sweep_columns, sweep_tasks

    n = len(sweep_tasks(df))
    if n >= 2:
        first = list(sweep_columns(n))
        df = df.reindex(columns=first + [c for c in df.columns if c not in first])
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")
