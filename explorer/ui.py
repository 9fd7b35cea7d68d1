"""Streamlit helpers the pages share: error handling, messages, the job panel, guards."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from . import figures, state
from .workspace import Workspace

log = logging.getLogger("explorer")

PLOTLY_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
#: the running job's panel reruns this often (a fragment); each rerun takes the GIL and a core
#: from the job, so it is no more often than a reader follows a progress bar
POLL_SECONDS = 1.0
#: the live loss chart is rebuilt at most this often (the polls in between send the same
#: figure again: the chart stays, the worker keeps its CPU; issue 11, item 4)
LIVE_REDRAW_SECONDS = 2.0


def message(exc: BaseException) -> str:
    """What the user reads about an error: its message, never a traceback."""
    text = str(exc).strip()
    if isinstance(exc, (ValueError, TypeError, FileNotFoundError, RuntimeError, KeyError)) and text:
        return text.strip("'\"") if isinstance(exc, KeyError) else text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def guard(area: str, ws: Workspace | None = None) -> Iterator[None]:
    """Turn any error inside into a message for `area` (the page shows it); nothing crashes."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001
        log.info("handled error in %s:\n%s", area, traceback.format_exc())
        (ws or state.workspace()).flash(area, "error", message(exc))


def callback(area: str, fn: Callable[..., Any]) -> Callable[..., None]:
    """An `on_click` callback running `fn(*args)` under `guard(area)`."""

    def run(*args: Any, **kwargs: Any) -> None:
        with guard(area):
            fn(*args, **kwargs)

    return run


def show_flashes(area: str, ws: Workspace | None = None) -> None:
    # one container, messages or none: the widgets below keep their place in the page (a file
    # uploader that moved when a message came or went was redrawn empty, dropping its new file)
    show = {"error": st.error, "warning": st.warning, "info": st.info, "success": st.success}
    with st.container():
        for f in (ws or state.workspace()).take_flashes(area):
            show[f.level](f.text)


def plot(fig: Any, key: str | None = None) -> None:
    st.plotly_chart(fig, key=key, config=PLOTLY_CONFIG)


def require_models(ws: Workspace):
    """The loaded models; stops the page with a message when there are none."""
    if ws.loaded is None:
        st.info("No models are loaded. Open **Load models** to pick a demo or your own.")
        st.page_link("explorer/pages/load.py", label="Load models", icon=":material/upload_file:")
        st.stop()
    return ws.loaded


require_pair = require_models  # the two-model name


def require_zip(ws: Workspace, area: str):
    """The zip in progress (started if needed); stops the page with a message if impossible."""
    loaded = require_models(ws)
    if not loaded.zippable:
        st.error(f"These models cannot be zipped: {loaded.reason}")
        st.page_link(
            "explorer/pages/load.py", label="Load other models", icon=":material/upload_file:"
        )
        st.stop()
    if ws.zip is None:
        if ws.busy:
            st.info("A job is running; the zip starts when it ends.")
            st.stop()
        try:
            with st.spinner("Preparing the zip (tracing the models, measuring them)…"):
                ws.ensure_zip()
        except Exception as exc:  # noqa: BLE001
            st.error(f"The zip could not start: {message(exc)}")
            st.stop()
    return ws.zip


def job_panel(ws: Workspace, page: str = "") -> None:
    """Progress of the running job (polled), or the outcome of the last one where it belongs
    (`Workspace.shows`: its models and zip, and for some jobs their own `page`)."""
    ws.collect()
    job = ws.job
    if job is None:
        return

    @st.fragment(run_every=POLL_SECONDS if job.running else None)
    def panel() -> None:
        current = ws.job
        if current is None:
            return
        if current.running:
            with st.container(border=True):
                cols = st.columns([5, 1])
                cols[0].progress(
                    current.fraction,
                    text=f"**{current.title}** — {current.text or 'starting'} "
                    f"({current.fraction:.0%}, {current.elapsed:.0f} s)",
                )
                cols[1].button(
                    "Cancel",
                    key="job.cancel",
                    on_click=current.cancel,
                    disabled=current.token.cancelled,
                    width="stretch",
                )
                fig = live_losses(current)
                if fig is not None:
                    plot(fig, key="job.losses")
            return
        if not getattr(current, "applied", True):
            st.rerun(scope="app")  # the job just ended: redraw the whole page with its results
        if not current.dismissed and ws.shows(current, page):
            # The outcome stays until dismissed, the next job starts, or its models or zip
            # change: a message shown only once vanished on the next rerun, before anyone had
            # read it; one shown everywhere told about another pair.
            text = current.message or current.title
            show = {"done": st.success, "cancelled": st.warning}.get(current.status, st.error)
            cols = st.columns([10, 2], vertical_alignment="center")
            with cols[0]:
                show(text)
            cols[1].button(
                "Dismiss",  # the accessible name; the icon alone gave the button none
                icon=":material/close:",
                key="job.dismiss",
                help="Dismiss this message",
                on_click=lambda: setattr(current, "dismissed", True),
            )

    panel()


def live_losses(job: Any, now: float | None = None) -> Any:
    """The running job's loss chart, or None before its first loss. Rebuilt only when new
    losses came in and `LIVE_REDRAW_SECONDS` have passed since the last build (and thinned to
    `figures.training.LOSS_POINTS` per line): a chart rebuilt from every row at every poll cost
    the retraining it showed most of its speed. The built figure is kept on the job."""
    now = time.perf_counter() if now is None else now
    cached = getattr(job, "_live_chart", None)  # (rows drawn, built at, figure)
    n = len(job.losses)
    if n == 0:
        return None
    if cached is not None and (cached[0] == n or now - cached[1] < LIVE_REDRAW_SECONDS):
        return cached[2]
    fig = figures.loss_curves(job.loss_rows())
    job._live_chart = (n, now, fig)
    return fig


def busy_note(ws: Workspace) -> bool:
    """True (and a note) while a job runs: buttons that change the network are disabled."""
    if ws.busy:
        st.caption(
            f":material/hourglass_top: {ws.job.title} is running: actions that change the "
            "network wait for it."
        )
        return True
    return False


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def delta(value: float, baseline: float) -> str | None:
    """An accuracy change against the original models, for `st.metric` (None when unchanged)."""
    d = (value - baseline) * 100
    return None if abs(d) < 0.05 else f"{d:+.1f} pts vs original"


def task_metrics(ws: Workspace, z: Any, label: str = "Task {x} ({task})") -> None:
    """One accuracy metric per task (in columns of up to four), with the change against the
    original models. `label` may use {x} (the task's letter) and {task} (its name)."""
    loaded = ws.loaded
    n = loaded.n_tasks
    cols = st.columns(min(n, 4))
    for t, (x, acc, base) in enumerate(zip(loaded.labels, z.accuracy, z.baseline)):
        cols[t % len(cols)].metric(
            label.format(x=x, task=loaded.tasks[t].name), pct(acc), delta=delta(acc, base)
        )
