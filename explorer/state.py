"""The one owner of `st.session_state`: the user's `Workspace` and every widget key.

Each browser session gets its own `Workspace` (so users of one server never see each other's
work); pages reach it through `workspace()` and name their widgets with the keys below, never
with ad-hoc strings.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from mtz_core.training import TASK_LETTERS

from . import autosave, resources
from .workspace import Workspace

__all__ = [
    "workspace",
    "K",
    "plan_key",
    "tune_key",
    "upload_key",
    "DEFAULT_DEMO",
    "widget",
    "keep_widgets",
]

WORKSPACE = "mtz.workspace"
DEFAULT_DEMO = "digits-mlp"


class K:
    """Widget keys (each is also its `st.session_state` entry)."""

    # Load (the upload widgets of model x are `upload_key(field, x)`: load.file_a, …)
    SOURCE = "load.source"
    DEMO = "load.demo"
    UPLOADS = "load.count"  # how many models the upload form has (2 or more)
    FILE_A, FILE_B = "load.file_a", "load.file_b"
    ARCH_A, ARCH_B = "load.arch_a", "load.arch_b"
    OPTS_A, OPTS_B = "load.opts_a", "load.opts_b"
    TASKSRC_A, TASKSRC_B = "load.tasksrc_a", "load.tasksrc_b"
    TASK_A, TASK_B = "load.task_a", "load.task_b"
    NPZ_A, NPZ_B = "load.npz_a", "load.npz_b"
    TRAIN_MODEL = "train.model"
    TRAIN_OPTS = "train.opts"
    TRAIN_TASK_A, TRAIN_TASK_B = "train.task_a", "train.task_b"
    TRAIN_ITS = "train.iterations"
    TRAIN_LR = "train.lr"
    # Costs
    COSTS_LAYER = "costs.layer"
    COSTS_SCALE = "costs.scale"
    COSTS_ORDER = "costs.order"
    COSTS_POOL = "costs.pool"
    COSTS_COMPARE = "costs.compare"  # three or more models: which two sides the heatmap shows
    # Sharing
    SHARING_LAYER = "sharing.layer"
    SHARING_PAIR = "sharing.pair"
    SHARING_TUPLE_MODEL = "sharing.model"  # three or more models: whose weights are shown
    # Step through
    SET_METHOD = "settings.method"
    SET_DAMPING = "settings.damping"
    SET_BATCH_NORM = "settings.batch_norm"
    SET_CALIB = "settings.calib"
    # Retrain
    RT_DEVICE = "retrain.device"
    RT_ITS = "retrain.iterations"
    RT_LR = "retrain.lr"
    RT_BATCH = "retrain.batch"
    # Trade-off
    TRADE_Y = "trade.y"
    SWEEP_SHARES = "sweep.shares"
    SWEEP_METHODS = "sweep.methods"
    SWEEP_ITS = "sweep.iterations"
    SWEEP_CALIB = "sweep.calib"
    TUNE_ITS = "tune.iterations"
    BEST_DROP = "best.drop"  # best plan within x points: x
    BEST_ITS = "best.iterations"
    BEST_GRID = "best.grid"
    BEST_CALIB = "best.calib"
    # Learn
    LEARN_SHARE = "learn.share"
    LEARN_ITS = "learn.iterations"
    # Keep the work
    RECIPE_FILE = "keep.recipe"


def upload_key(field: str, letter: str) -> str:
    """The key of model `letter`'s upload widget `field` (file, arch, opts, tasksrc, task, npz);
    for a and b the same as `K.FILE_A`, `K.TASK_B`, …"""
    return f"load.{field}_{letter}"


def plan_key(page: str, layer: str) -> str:
    """The key of a share widget for `layer` on `page` (all of them edit `Workspace.plan`)."""
    return f"plan.{page}.{layer}"


def tune_key(layer: str) -> str:
    return plan_key("tune", layer)


#: widgets whose values outlive their page, with the value each starts with (its page draws it
#: without a default of its own: Streamlit warns when both set one). Streamlit forgets a
#: widget's value in a run that does not draw it, so leaving Load forgot the upload mode and
#: Learn's sliders; `keep_widgets` carries them across.
WIDGET_DEFAULTS: dict[str, Any] = {
    K.SOURCE: "Demo",
    K.TRAIN_TASK_A: "digits:0-4",
    K.TRAIN_TASK_B: "digits:5-9",
    K.TRAIN_ITS: 300,
    K.TRAIN_LR: 0.05,
    K.LEARN_SHARE: 1.0,
    K.LEARN_ITS: 0,
    upload_key("task", "a"): "digits:0-4",
    upload_key("task", "b"): "digits:5-9",
}
#: widgets kept across pages once set (they start at their first choice or empty)
KEPT_WIDGETS: tuple[str, ...] = (
    K.DEMO,
    K.TRAIN_MODEL,
    K.TRAIN_OPTS,
    *(upload_key(f, x) for f in ("arch", "opts", "tasksrc", "task") for x in TASK_LETTERS),
)


def keep_widgets() -> None:
    """Keep the values of `WIDGET_DEFAULTS` and `KEPT_WIDGETS` while their pages are not
    drawn (call it on every run, before the page): a value written through
    `st.session_state` is not cleaned up with the widgets of the page left."""
    for key, default in WIDGET_DEFAULTS.items():
        st.session_state[key] = st.session_state.get(key, default)
    for key in KEPT_WIDGETS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def widget(key: str, default: Any = None) -> Any:
    """A widget's current value (its default before it is first drawn)."""
    return st.session_state.get(key, default)


def workspace() -> Workspace:
    """This browser session's workspace, with the default demo loaded the first time."""
    ws = st.session_state.get(WORKSPACE)
    if ws is None:
        ws = Workspace()
        ws.restorable = autosave.read(autosave.session_id())  # this tab's work before a reload
        try:
            ws.set_models(resources.demo_models(DEFAULT_DEMO))
        except Exception as exc:  # noqa: BLE001 - the app still opens; the Load page says why
            ws.flash("load", "error", f"The default demo could not be loaded: {exc}")
        st.session_state[WORKSPACE] = ws
    return ws
