"""Autosave: the zip in progress survives a page reload.

A reload starts a new Streamlit session with the default demo, which used to lose the work.
Each browser tab gets a random session id in the page's address (`?session=…`, which a reload
keeps); after every change the zip's recipe (`explorer.recipe`, what Keep the work exports)
and the Trade-off points are written to `<cache>/sessions/<id>.json`. A new session whose
address names a saved one offers "Restore last session" on the Load page, which rebuilds the
zip from the recipe (the same tuples and retraining runs) and brings the points back.

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
import time
from pathlib import Path
from typing import Any

import streamlit as st

from . import recipe as recipes
from . import resources
from .jobs import Job
from .workspace import Workspace

__all__ = ["PARAM", "cache_dir", "session_id", "track", "read", "restore", "describe"]

log = logging.getLogger("explorer.autosave")
PARAM = "session"
_SESSION_KEY = "mtz.session_id"
_ID = re.compile(r"[0-9a-f]{32}")


def cache_dir() -> Path:
    base = os.environ.get("MTZ_EXPLORER_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "mtz-explorer"


def _path(sid: str) -> Path:
    return cache_dir() / "sessions" / f"{sid}.json"


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
            return
        ws.restorable = None  # new work of this session replaces the offer
        body = {
            "recipe": recipes.build_recipe(ws.loaded, z),
            "points": ws.points,
            "saved_at": time.time(),
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


def restore(ws: Workspace) -> Job:
    """Rebuild the saved session's zip in the background (its demo is loaded first; models
    from files must be loaded again by hand, then restored)."""
    saved = ws.restorable
    if saved is None:
        raise ValueError("there is no saved session to restore")
    ws.require_idle("restore the last session")
    recipe = saved["recipe"]
    target = ws.loaded
    try:
        if target is None:
            raise ValueError("no models are loaded")
        recipes.check_recipe_fits(recipe, target)
    except ValueError:
        demo = recipes.recipe_demo(recipe)
        if demo is None:
            raise ValueError(
                "the last session worked on your own files; load them again with **Load these "
                f"models** ({recipes.describe_models(recipe)}), then press **Restore last "
                "session**"
            ) from None
        target = resources.demo_models(demo)
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
