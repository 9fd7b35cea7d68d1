"""Autosave: the zip in progress survives a page reload.

A reload starts a new Streamlit session with the default demo, which used to lose the work.
Each browser tab gets a random session id in the page's address (`?session=…`, which a reload
keeps); after every change the zip's recipe (`explorer.recipe`, what Keep the work exports)
and the Trade-off points are written to `<cache>/sessions/<id>.json`. A new session whose
address names a saved one offers "Restore last session" on the Load page, which rebuilds the
zip from the recipe (the same tuples and retraining runs) and brings the points back.

Models from uploaded files are restored without a re-upload when their files (checkpoints and
`.npz` tasks together) are at most `KEEP_FILES_MAX_BYTES`: they are written beside the session
(`<id>.files/`) with the recipe. Larger files are not copied to disk for every tab that loads
them; the restore offer then says they must be loaded again first.

The id is random (128 bits) and only its own file is read, so the users of one server do not
see each other's work; the cache directory is `$MTZ_EXPLORER_CACHE`, else
`$XDG_CACHE_HOME/mtz-explorer` (`~/.cache/mtz-explorer`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import streamlit as st

from . import recipe as recipes
from . import resources
from .jobs import Job
from .loaded import LoadedModels
from .workspace import Workspace

__all__ = [
    "PARAM",
    "KEEP_FILES_MAX_BYTES",
    "cache_dir",
    "session_id",
    "keep_files",
    "track",
    "read",
    "restore",
    "describe",
]

log = logging.getLogger("explorer.autosave")
PARAM = "session"
_SESSION_KEY = "mtz.session_id"
_ID = re.compile(r"[0-9a-f]{32}")
#: uploaded files (all of one set of models) kept for a restore without re-upload: a demo-sized
#: set and small real ones (a LeNet or a ResNet-20 is well under 10 MB), not a VGG-16 (500 MB)
#: copied to disk for every tab that loads it
KEEP_FILES_MAX_BYTES = 64 * 2**20


def cache_dir() -> Path:
    base = os.environ.get("MTZ_EXPLORER_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "mtz-explorer"


def _path(sid: str) -> Path:
    return cache_dir() / "sessions" / f"{sid}.json"


def _files_dir(sid: str) -> Path:
    return cache_dir() / "sessions" / f"{sid}.files"


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 1024:.0f} kB"


def keep_files(loaded: LoadedModels, files: dict[str, dict[str, Any]]) -> None:
    """Remember the uploaded files `loaded` was read from ({"model": file, "npz": file or None}
    by letter; a file is an uploaded file with `name`, `size` and `getvalue()`, or a
    (name, bytes) pair), when together they are at most `KEEP_FILES_MAX_BYTES`: their bytes are
    copied only then. Their size is kept either way, for the restore offer to say."""

    def size(f: Any) -> int:
        return len(f[1]) if isinstance(f, tuple) else int(f.size)

    def pair(f: Any) -> tuple[str, bytes]:
        return f if isinstance(f, tuple) else (f.name, f.getvalue())

    total = sum(size(f["model"]) + (size(f["npz"]) if f.get("npz") else 0) for f in files.values())
    loaded.files_bytes = total
    loaded.files = (
        {
            x: {"model": pair(f["model"]), "npz": pair(f["npz"]) if f.get("npz") else None}
            for x, f in files.items()
        }
        if total <= KEEP_FILES_MAX_BYTES
        else {}
    )


def _write_files(ws: Workspace, sid: str) -> dict[str, Any]:
    """The session file's entry for the loaded models' uploaded files: where they were written
    (once per set of models), or why not."""
    loaded = ws.loaded
    if not any(m.get("source") == "file" for m in loaded.models.values()):
        return {}
    if not loaded.files:
        return {"files_bytes": loaded.files_bytes}
    folder = _files_dir(sid)
    names = {}
    for x, f in loaded.files.items():
        names[x] = {"model": f"model_{x}", "model_name": f["model"][0]}
        if f.get("npz"):
            names[x].update(npz=f"task_{x}", npz_name=f["npz"][0])
    if ws.autosaved_files is not loaded:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        for x, f in loaded.files.items():
            (folder / names[x]["model"]).write_bytes(f["model"][1])
            if f.get("npz"):
                (folder / names[x]["npz"]).write_bytes(f["npz"][1])
        ws.autosaved_files = loaded
    return {"files": names, "files_bytes": loaded.files_bytes}


def session_id() -> str:
    """This tab's id: the one in its address (kept by a reload), else a new one. Put back into
    the address on every run (moving between pages clears the query)."""
    sid = st.session_state.get(_SESSION_KEY)
    if sid is None:
        given = st.query_params.get(PARAM)
        sid = given if isinstance(given, str) and _ID.fullmatch(given) else secrets.token_hex(16)
        st.session_state[_SESSION_KEY] = sid
    if st.query_params.get(PARAM) != sid:
        st.query_params[PARAM] = sid
    return sid


def read(sid: str) -> dict[str, Any] | None:
    """The session saved under `sid` ({"recipe", "points", "saved_at"}), or None (none, or
    unreadable: an autosave never stops the app)."""
    path = _path(sid)
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved["recipe"] = recipes.parse_recipe(json.dumps(saved["recipe"]), path.name)
        return saved
    except Exception:  # noqa: BLE001 - a broken autosave is skipped, never shown as an error
        log.warning("skipped the unreadable autosave %s", path, exc_info=True)
        return None


def _mark(ws: Workspace) -> tuple[Any, ...]:
    return (ws.context(), len(ws.points))


def track(ws: Workspace, sid: str) -> None:
    """Save `ws`'s zip and points when they changed since the last save (a cheap check on
    every run); once the zip is undone to nothing, the saved file goes too."""
    mark = _mark(ws)
    if mark == ws.autosaved:
        return
    ws.autosaved = mark
    z, path = ws.zip, _path(sid)
    try:
        if ws.loaded is None or z is None or not z.records:
            if z is not None and path.exists():
                path.unlink()
                shutil.rmtree(_files_dir(sid), ignore_errors=True)
                ws.autosaved_files = None
            return
        ws.restorable = None  # new work of this session replaces the offer
        body = {
            "recipe": recipes.build_recipe(ws.loaded, z),
            "points": ws.points,
            "saved_at": time.time(),
            **_write_files(ws, sid),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, default=str), encoding="utf-8")
        tmp.replace(path)
    except Exception:  # noqa: BLE001 - the work goes on without its autosave
        log.warning("could not autosave to %s", path, exc_info=True)


def describe(saved: dict[str, Any]) -> str:
    """'digits-mlp: 2 layers zipped, saves 34.5%, 3 Trade-off points'."""
    recipe = saved["recipe"]
    n = len(recipe["layers"])
    saves = (recipe.get("result") or {}).get("saved_fraction")
    text = f"{recipe.get('title', 'your models')}: {n} layer{'s' * (n != 1)} zipped"
    if isinstance(saves, (int, float)):
        text += f", saves {saves:.1%}"
    points = len(saved.get("points") or [])
    return text + (f", {points} Trade-off point{'s' * (points != 1)}" if points else "")


def files_note(saved: dict[str, Any]) -> str:
    """What a restore of `saved` needs first, said on the restore offer ("" when nothing)."""
    recipe = saved["recipe"]
    if recipes.recipe_demo(recipe) is not None or saved.get("files"):
        return ""
    size = saved.get("files_bytes")
    over = (
        f" ({_mb(size)}, over the {_mb(KEEP_FILES_MAX_BYTES)} the app keeps for a restore)"
        if isinstance(size, int) and size > KEEP_FILES_MAX_BYTES
        else ""
    )
    return (
        f"Its files were not kept{over}: load them again with **Load these models** "
        f"({recipes.describe_models(recipe)}) before you press **Restore last session**."
    )


def _same_models(recipe: dict[str, Any], loaded: LoadedModels | None) -> bool:
    """`loaded` are the models the recipe names (same sources and names, in order): widths
    alone would let a recipe made on uploaded files rebuild on a demo of the same shape."""
    if loaded is None:
        return False
    named = [(m.get("source"), m.get("name")) for m in recipe["models"]]
    have = [loaded.models.get(x, {}) for x in loaded.letters]
    return named == [(m.get("source"), m.get("name")) for m in have]


def _from_files(saved: dict[str, Any], sid: str) -> LoadedModels:
    """The models of a saved session, read from the files written beside it (no re-upload)."""
    from . import loaded as loading
    from .tasks import load_npz_task

    recipe, folder = saved["recipe"], _files_dir(sid)
    nets, entries, tasks, files = [], {}, [], {}
    for m in recipe["models"]:
        x, kept = m["letter"], saved["files"][m["letter"]]
        npz = None
        if "npz" in kept:
            npz = (kept["npz_name"], (folder / kept["npz"]).read_bytes())
            task = load_npz_task(*npz)
        else:
            task = resources.builtin_task(m["task"]["task"])
        data = (folder / kept["model"]).read_bytes()
        spec = m.get("architecture") or {}
        model, entry = loading.load_uploaded_model(
            kept["model_name"], data, spec.get("name"), dict(spec.get("kwargs") or {}), task
        )
        nets.append(model)
        entries[x] = entry
        tasks.append(task)
        files[x] = {"model": (kept["model_name"], data), "npz": npz}
    models = loading.summarize_models(recipe.get("title", "your models"), entries, nets, tasks)
    keep_files(models, files)
    return models


def restore(ws: Workspace) -> Job:
    """Rebuild the saved session's zip in the background on the models it names: those
    loaded now, its demo, or its uploaded files kept beside it (`keep_files`); files that were
    not kept must be loaded again by hand first."""
    saved = ws.restorable
    if saved is None:
        raise ValueError("there is no saved session to restore")
    ws.require_idle("restore the last session")
    recipe = saved["recipe"]
    demo = recipes.recipe_demo(recipe)
    if _same_models(recipe, ws.loaded):
        target = ws.loaded
    elif demo is not None:
        target = resources.demo_models(demo)
    elif saved.get("files"):
        try:
            target = _from_files(saved, session_id())
        except (OSError, KeyError) as exc:
            raise ValueError(
                f"the files kept from the last session could not be read ({exc}); load them "
                f"again with **Load these models** ({recipes.describe_models(recipe)}), then "
                "press **Restore last session**"
            ) from None
    else:
        raise ValueError(
            "the last session worked on your own files. "
            + files_note(saved).replace("Its files", "They")
        )
    recipes.check_recipe_fits(recipe, target)
    if target is not ws.loaded:
        ws.set_models(target)
    loaded = ws.loaded

    def apply(job: Job) -> None:
        if ws.loaded is not loaded:
            return
        rebuilt = job.result
        ws.adopt_rebuilt(rebuilt, recipe)
        ws.points = list(saved.get("points") or []) or [rebuilt.point()]
        ws.restorable = None
        job.message = f"Restored the last session: {describe(saved)}"

    return ws.start_job(
        "rebuild",
        "Restoring the last session",
        lambda job: recipes.rebuild(job, loaded, recipe),
        apply,
    )
