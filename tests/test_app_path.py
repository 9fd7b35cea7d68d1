"""The app as a student follows it (issue 11, items 4, 7, 8): retraining that keeps the
library's pace with its live chart, a path from the first page to the last, and the 2-D demo's
decision boundaries where the student zips. Every flow here failed before the change it covers."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from app_helpers import figures, goto, load_demo, new_app, ws, zip_layer  # noqa: E402


def _subplot_titles(fig: dict) -> list[str]:
    return [a.get("text", "") for a in fig["layout"].get("annotations", [])]


def _boundaries(at) -> list[str] | None:
    """The stage titles of the Step page's decision-boundary figure (None: no such figure)."""
    for fig in figures(at):
        titles = _subplot_titles(fig)
        if any(" — task A" in t for t in titles):
            return [t.split(" — ")[0] for t in titles if " — task A" in t]
    return None


# ---------------------------------------------------------- 8. the 2-D demo on Step through


def test_step_page_draws_the_2d_boundaries_of_each_zipped_layer():
    at = new_app()
    assert _boundaries(goto(at, "step")) is None, "digits have no plane to draw"
    load_demo(at, "moons-circles")
    goto(at, "step")
    assert _boundaries(at) == ["original"]
    zip_layer(at, 8)
    assert _boundaries(at) == ["original", "after fc1 (8/16 shared)"]
    zip_layer(at, 16)
    stages = _boundaries(at)
    assert stages == ["original", "after fc1 (8/16 shared)", "after fc2 (16/16 shared)"]
    # the zip's own network is drawn: sharing every unit of fc2 moved a boundary
    fig = next(f for f in figures(at) if _boundaries_fig(f))
    contours = [t for t in fig["data"] if t["type"] == "contour" and "colorscale" in t]
    assert len(contours) == 6  # 3 stages × 2 tasks, shaded
    at.button(key="step.undo").click().run()
    assert _boundaries(at) == ["original", "after fc1 (8/16 shared)"], "undo drops its stage"


def _boundaries_fig(fig: dict) -> bool:
    return any(" — task A" in t for t in _subplot_titles(fig))


# ------------------------------------------------------ 4. retraining at the library's pace


def test_live_loss_chart_is_rebuilt_only_for_new_losses_and_not_at_every_poll():
    """The poll sent a chart rebuilt from every loss row twice a second, taking the CPU from
    the retraining it showed. Now a figure is reused until new losses arrive and
    `LIVE_REDRAW_SECONDS` have passed, and has a bounded size however long the run."""
    from explorer import ui
    from explorer.jobs import Job

    job = Job("retrain", "t", lambda j: None)
    assert ui.live_losses(job, now=0.0) is None
    for i in range(5000):
        job.add_losses(i, (1.0 / (i + 1), 2.0 / (i + 1)))
    first = ui.live_losses(job, now=100.0)
    assert first.layout.meta["rows"] == 5000
    assert all(len(t.x) <= 400 for t in first.data), "thinned: the size does not grow"
    job.add_losses(5000, (0.1, 0.1))
    assert ui.live_losses(job, now=100.0 + ui.LIVE_REDRAW_SECONDS / 2) is first
    later = ui.live_losses(job, now=100.0 + ui.LIVE_REDRAW_SECONDS)
    assert later is not first and later.layout.meta["rows"] == 5001
    assert ui.live_losses(job, now=1e6) is later, "no new losses: no new figure"
    assert ui.POLL_SECONDS >= 1.0


def test_a_job_leaves_one_core_to_the_page():
    """The job's worker runs on every core but one (the page's poll needs one), set in the
    worker thread only: the page's own computations keep every thread."""
    import torch

    from explorer.jobs import Job, worker_threads

    assert worker_threads(2) == 1 and worker_threads(1) == 1
    assert worker_threads(64) == min(63, torch.get_num_threads())
    before = torch.get_num_threads()
    job = Job("retrain", "t", lambda j: torch.get_num_threads()).start()
    assert job.wait(30) and job.status == "done"
    assert job.result == worker_threads()
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------ 7. a path for a newcomer


def _links(at) -> list[tuple[str, str]]:
    """(label, page) of every page link on the page."""
    return [(p.proto.label, p.proto.page) for p in at.get("page_link")]


def test_first_page_says_where_to_start_and_reaches_learn():
    at = new_app()
    start = [m.value for m in at.markdown if m.value.startswith("**Start here.**")]
    assert start and "pairs of neurons" in start[0]
    pages = [page for _, page in _links(at)]
    assert pages[:4] == ["costs", "step", "tradeoff", "learn"], _links(at)


def test_every_page_ends_with_a_link_to_the_next_step():
    """The student path (Load → Costs → Step through → Retrain → Trade-off → Keep → Learn): each
    page's last link names the next page; following them visits every page of the path."""
    from explorer.guide import NEXT

    at = new_app()
    page, seen = "load", []
    while page not in seen:
        seen.append(page)
        if page != "load":
            goto(at, page)
        if page == "step" and not ws(at).zip.records:
            zip_layer(at, 100)  # Retrain and Keep have something to show
        label, target = _links(at)[-1]
        assert label.startswith("Next: ") and target == NEXT[page][0], (page, _links(at))
        page = target
    assert seen == ["load", "costs", "step", "retrain", "tradeoff", "keep", "learn"]
    goto(at, "sharing")
    assert _links(at)[-1][1] == "step"


def test_a_layer_error_is_shown_with_the_accuracy_change_it_caused():
    at = goto(new_app(), "step")
    zip_layer(at, 200)
    event = ws(at).zip.events[-1]
    captions = [c.value for c in at.caption if "The layer error" in c.value]
    assert captions, "the error has a scale next to it"
    text = captions[0]
    assert f"{event['predicted_error']:.4g}" in text
    for t, x in enumerate("AB"):
        before, after = event["before"][t], event[f"acc_{x.lower()}"]
        assert f"task {x} {before:.1%} → {after:.1%} ({(after - before) * 100:+.1f} points)" in text


def test_the_server_runs_no_full_garbage_collection_after_each_poll():
    """Streamlit ran `gc.collect(2)` after every script run, the job panel's once-a-second
    fragment included: over the app's objects that held the GIL for most of a second, and the
    retraining it showed ran at a sixth of the library's speed. Off for `streamlit run` in a
    checkout (config.toml) and for `mtz-explorer` (its settings)."""
    from pathlib import Path

    import tomllib

    from explorer.launch import SETTINGS

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
    assert SETTINGS[SETTINGS.index("--runner.postScriptGC") + 1] == "false"


# --------------------------------------------------------------------------- 6. figures' page


def test_trade_off_multiselects_get_half_the_page():
    """In a quarter column the chosen shares and methods were cut off ("0.25 0.5 0…")."""
    at = goto(new_app(), "tradeoff")
    widths = {m.key: c.weight for c in at.columns for m in c.multiselect}
    assert set(widths) == {"best.grid", "sweep.shares", "sweep.methods"}, widths
    assert all(w >= 0.5 for w in widths.values()), widths
