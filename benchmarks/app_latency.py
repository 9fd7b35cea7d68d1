"""How long the explorer makes its user wait: server time of the real app's reruns.

Measured with `streamlit.testing.v1.AppTest` on `streamlit_app.py` (the script runs exactly as
under `streamlit run`; the time is the rerun's, without the browser and the websocket):

- (a) opening the app on the digits demo, a new session after the process's first cold start;
- (b) changing a layer's share on **Costs** and redrawing its heatmap, curve and metrics;
- (c) zipping one layer on **Step through** (`ZipSession.step`, the quick evaluation of both
  tasks, and the page's redraw, which computes the next layer's costs); undone between runs.

For information, also two background jobs on the digits demo, started as the pages start
them (their own time in the worker thread, the page idle meanwhile): retraining 10
iterations, and a sweep of 4 shares × every method (not in ``--smoke``). And a ratio (target
≥ 80%): the app's retraining job, polled as the page polls it, against `ZipSession.retrain` on
the same zipped net (1,500 iterations; 300 in ``--smoke``); with the browser, the same in
Chromium with the live loss chart drawn.

The same three on a synthetic pair with 4096-wide layers: two random MLPs 64 → 4096 → 4096 → 5
(registry `mlp`, tasks `digits:0-4` / `digits:5-9`), saved as safetensors to a temporary folder
and loaded through the Load page's upload form, as a user would. For it, (a) is the Load page's
rerun with the pair loaded. With /usr/bin/chromium and the `playwright` package, also the time
from clicking **Costs** in the sidebar to the heatmap drawn in a real browser (a
`streamlit run` server started here).

Run: ``python -m benchmarks.app_latency [--runs 5] [--smoke] [--no-big] [--no-browser]``.
``--smoke``: one run of the digits cases only (well under a minute; for CI). Prints a markdown
table: case, target, median, runs, met. No timing is asserted (exit status 0 unless it fails).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from explorer.headless import CHROMIUM, CHROMIUM_ARGS, serve

from ._common import machine_line

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "streamlit_app.py"
WS = "mtz.workspace"
TIMEOUT_S = 600  # one rerun; the big pair's first costs take seconds, never minutes
BIG_WIDTH = 4096
SMOKE_ARGV = ["--smoke"]

# targets (seconds); None: shown for information
OPEN_S, SHARE_S, ZIP_S, CHART_S = 3.0, 0.3, 1.5, 3.0
RETRAIN_RATIO = 0.8  # the app's retraining job at least 80% of the library's it/s
RETRAIN_ITS, RETRAIN_ITS_SMOKE = 1500, 300


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs per case (median)")
    p.add_argument("--smoke", action="store_true", help="1 run of the digits cases only (CI)")
    p.add_argument("--no-big", action="store_true", help="skip the 4096-wide pair")
    p.add_argument("--no-browser", action="store_true", help="skip the Playwright timing")
    return p


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.notes: list[str] = []

    def add(self, case: str, target: float | None, times: list[float]) -> None:
        med = statistics.median(times)
        met = "–" if target is None else ("yes" if med <= target else "**no**")
        self.rows.append(
            (case, "–" if target is None else f"≤ {_s(target)}", _s(med), str(len(times)), met)
        )
        print(f"  {case}: {_s(med)} (runs: {', '.join(_s(t) for t in times)})", file=sys.stderr)

    def add_ratio(self, case: str, target: float, ratios: list[float], detail: str) -> None:
        """A row whose value is a ratio (higher is better), e.g. app speed / library speed."""
        med = statistics.median(ratios)
        met = "yes" if med >= target else "**no**"
        self.rows.append((case, f"≥ {target:.0%}", f"{med:.0%} ({detail})", str(len(ratios)), met))
        each = ", ".join(f"{r:.0%}" for r in ratios)
        print(f"  {case}: {med:.0%} (runs: {each})", file=sys.stderr)

    def markdown(self) -> str:
        head = ("case", "target", "median", "runs", "met")
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines + ([""] + [f"- {n}" for n in self.notes] if self.notes else []))


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------- AppTest


def _check(at: Any) -> Any:
    if at.exception:
        raise RuntimeError(f"the app raised: {[e.value for e in at.exception]}")
    if at.error:
        raise RuntimeError(f"the app shows an error: {[e.value for e in at.error]}")
    return at


def new_session() -> Any:
    import logging

    from streamlit.testing.v1 import AppTest

    # AppTest's bare-mode warning ("missing ScriptRunContext"), once per session
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(
        logging.ERROR
    )
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    return _check(at.run())


def goto(at: Any, page: str) -> Any:
    return _check(at.switch_page(f"explorer/pages/{page}.py").run())


def metric(at: Any, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return m.value
    raise RuntimeError(f"no metric {label!r} on the page")


def share_and_zip(table: Table, at: Any, name: str, runs: int) -> None:
    """(b) and (c) on the session's pair: its first hidden layer's share, then zipping it."""
    from explorer import zipper
    from explorer.state import plan_key

    ws = at.session_state[WS]
    row = ws.pair.hidden[0]
    layer, m = row["layer"], min(row["width A"], row["width B"])

    first = _timed(lambda: goto(at, "costs"))
    table.add(f"{name}: first **Costs** visit (Hessians and costs of {layer})", None, [first])
    shares = [m // 3, (2 * m) // 3]
    times = []
    for r in range(runs):
        k = shares[r % 2]
        slider = at.slider(key=plan_key("costs", layer))
        times.append(_timed(lambda k=k, slider=slider: _check(slider.set_value(k).run())))
        assert metric(at, "Shared neurons") == f"{k} / {m}", metric(at, "Shared neurons")
        assert any("pair costs" in el.proto.spec for el in at.get("plotly_chart"))
    table.add(f"{name}: change {layer}'s share, redraw its heatmap (b)", SHARE_S, times)

    goto(at, "step")
    times, engine = [], []
    step = zipper.ZipState.step

    def timed_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return step(self, *args, **kwargs)
        finally:
            engine.append(time.perf_counter() - t)

    zipper.ZipState.step = timed_step  # the app runs in this process: time its zip alone
    try:
        for _ in range(runs):
            times.append(_timed(lambda: _check(at.button(key="step.zip").click().run())))
            event = ws.zip.events[-1]
            assert len(ws.zip.records) == 1 and event["layer"] == layer, event
            _check(at.button(key="step.undo").click().run())
            assert not ws.zip.records
    finally:
        zipper.ZipState.step = step
    table.add(f"{name}: zip {layer} with its quick evaluation (c)", ZIP_S, times)
    nxt = ws.pair.hidden[1] if len(ws.pair.hidden) > 1 else None
    redraw = "the page's redraw"
    if nxt is not None and nxt["width A"] * nxt["width B"] <= zipper.BIG_LAYER_CELLS:
        redraw += f", which computes {nxt['layer']}'s Hessians and costs for its share caption"
    elif nxt is not None:
        redraw += f" ({nxt['layer']} is wide: its costs wait for a click)"
    table.notes.append(
        f"{name} (c): of which `ZipState.step` (`ZipSession.step` and the quick evaluation of "
        f"both tasks) {_s(statistics.median(engine))}; the rest is {redraw}."
    )


def job_seconds(at: Any, start: Callable[[Any], Any]) -> float:
    """Run a background job the way the pages do (the page idle meanwhile); its own time."""
    ws = at.session_state[WS]
    job = start(ws)
    while job.running:
        time.sleep(0.05)
    _check(at.run())  # the page applies the results
    if job.status != "done":
        raise RuntimeError(f"{job.title}: {job.status} {job.error}")
    return job.elapsed


def polled_job_its(at: Any, iterations: int) -> float:
    """Iterations per second of the app's retraining job (`Workspace.start_retrain`, as the
    Retrain page starts it) while this thread polls it as the page's fragment does: every
    `ui.POLL_SECONDS`, `ui.job_panel` draws the progress and the live loss chart (here without
    a browser: the figure is built and serialised, not drawn), followed by the full garbage
    collection Streamlit runs after every script run unless `runner.postScriptGC` is off. The
    user's wait: the job's own time, including the evaluation after it."""
    import gc

    from streamlit import config

    from explorer import ui

    # what the server does after every script run, the panel's fragment runs included, as the
    # app's config says (.streamlit/config.toml, read from the working folder)
    post_gc = config.get_option("runner.postScriptGC")
    ws = at.session_state[WS]
    job = ws.start_retrain(iterations=iterations, lr=0.01, batch_size=32, device="cpu")
    while job.running:
        ui.job_panel(ws)
        if post_gc:
            gc.collect(2)
        time.sleep(ui.POLL_SECONDS)
    _check(at.run())  # the page applies the results
    if job.status != "done":
        raise RuntimeError(f"{job.title}: {job.status} {job.error}")
    if not job.losses:
        raise RuntimeError("the retraining job reported no losses: the live chart had nothing")
    return iterations / job.elapsed


def library_its(at: Any, iterations: int) -> float:
    """Iterations per second of `ZipSession.retrain` on the same zipped network, batch size and
    data, called directly in this thread (what a script using `mtz_core` gets)."""
    import torch

    z = at.session_state[WS].zip
    trains = [
        task.batches("calib", 32, shuffle=True, seed=7 + t) for t, task in enumerate(z.pair.tasks)
    ]
    snapshot = {k: v.detach().clone() for k, v in z.session.model.state_dict().items()}
    t0 = time.perf_counter()
    z.session.retrain(*trains, iterations=iterations, lr=0.01, device="cpu", seed=7)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        z.session.model.load_state_dict(snapshot)  # the app's job starts from the same weights
    return iterations / seconds


def retrain_speed(table: Table, at: Any, runs: int, iterations: int) -> None:
    """App retraining speed against the library's on the same zipped net (issue 11, item 4):
    the two alternate, so a load from elsewhere on the machine hits both alike."""
    library_its(at, 20)  # warm-up: the first iterations allocate
    app, lib = [], []
    for _ in range(runs):
        lib.append(library_its(at, iterations))
        app.append(polled_job_its(at, iterations))
    ratios = [a / b for a, b in zip(app, lib)]
    detail = f"app {statistics.median(app):.0f} it/s, mtz_core {statistics.median(lib):.0f} it/s"
    table.add_ratio(
        f"digits-mlp: retrain {iterations} iterations in the app (live chart polled) "
        "/ `ZipSession.retrain`",
        RETRAIN_RATIO,
        ratios,
        detail,
    )


def digits_cases(table: Table, runs: int, smoke: bool) -> None:
    cold = _timed(new_session)
    table.add("digits-mlp: first session of a cold process (imports, demo load)", None, [cold])
    times = [_timed(new_session) for _ in range(runs)]
    table.add("digits-mlp: open the app, a new session (a)", OPEN_S, times)
    at = new_session()
    share_and_zip(table, at, "digits-mlp", runs)

    # background jobs, in their worker thread: how long the user watches the progress bar
    _check(at.button(key="step.zip").click().run())

    def retrain(ws: Any) -> Any:
        return ws.start_retrain(iterations=10, lr=0.01, batch_size=32, device="cpu")

    times = [job_seconds(at, retrain) for _ in range(runs)]
    table.add("digits-mlp: retrain 10 iterations (background job)", None, times)
    retrain_speed(table, at, runs, RETRAIN_ITS_SMOKE if smoke else RETRAIN_ITS)
    if not smoke:
        from mtz_core import METHODS

        def sweep(ws: Any) -> Any:
            return ws.start_sweep(
                shares=[0.25, 0.5, 0.75, 1.0], methods=list(METHODS), calib_samples=512
            )

        times = [job_seconds(at, sweep) for _ in range(runs)]
        table.add(
            f"digits-mlp: sweep 4 shares × {len(METHODS)} methods (background job)", None, times
        )


def _big_checkpoints(folder: Path) -> list[bytes]:
    from mtz_core.checkpoints import save_checkpoint
    from mtz_core.models import create_model

    out = []
    for seed in (1, 2):
        model = create_model("mlp", (1, 8, 8), 5, seed=seed, widths=[BIG_WIDTH, BIG_WIDTH])
        path = folder / f"mlp{BIG_WIDTH}_{seed}.safetensors"
        save_checkpoint(model, None, path)
        out.append(path.read_bytes())
    return out


def big_cases(table: Table, runs: int) -> None:
    from explorer.state import K

    name = f"mlp 64→{BIG_WIDTH}→{BIG_WIDTH}→5"
    with tempfile.TemporaryDirectory(prefix="mtz-bench-") as tmp:
        data = _big_checkpoints(Path(tmp))
    at = new_session()
    _check(at.segmented_control(key=K.SOURCE).set_value("Upload checkpoints").run())
    for which, blob, task in (("a", data[0], "digits:0-4"), ("b", data[1], "digits:5-9")):
        key = K.FILE_A if which == "a" else K.FILE_B
        upload = (f"{which}.safetensors", blob, "application/octet-stream")
        at.file_uploader(key=key).set_value(upload)
        at.text_input(key=K.TASK_A if which == "a" else K.TASK_B).set_value(task)
    _check(at.run())
    del data
    load = _timed(lambda: _check(at.button(key="load.upload_button").click().run()))
    pair = at.session_state[WS].pair
    assert pair.zippable and pair.hidden[0]["width A"] == BIG_WIDTH, pair.reason
    table.add(f"{name}: load the two uploaded checkpoints (read, trace, test)", None, [load])
    times = [_timed(lambda: _check(at.run())) for _ in range(runs)]
    table.add(f"{name}: the Load page with the pair loaded (a)", OPEN_S, times)
    share_and_zip(table, at, name, runs)


# ---------------------------------------------------------------------------------- browser


def browser_cases(table: Table, runs: int) -> None:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        table.notes.append("browser: skipped (the playwright package is missing)")
        return
    if not Path(CHROMIUM).exists():
        table.notes.append(f"browser: skipped ({CHROMIUM} is missing)")
        return
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp) / "server.log") as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            ready = '[data-testid="stApp"][data-test-script-state="notRunning"]'

            def visit(title: str, done: Callable[[], None]) -> float:
                t = time.perf_counter()
                page.locator('[data-testid="stSidebarNav"] a', has_text=title).click()
                done()
                return time.perf_counter() - t

            def heatmap() -> None:
                image = page.locator(".js-plotly-plot .heatmaplayer image")
                expect(image).to_have_count(1, timeout=TIMEOUT_S * 1000)

            def load_page() -> None:
                expect(page.get_by_text("These two can be zipped")).to_be_visible(
                    timeout=TIMEOUT_S * 1000
                )
                page.wait_for_selector(ready, timeout=TIMEOUT_S * 1000)

            t = time.perf_counter()
            page.goto(url)
            load_page()
            opened = time.perf_counter() - t
            table.add("browser: first page of a fresh server (imports, demo load)", None, [opened])
            first = visit("Costs", heatmap)
            table.add("browser: first **Costs** visit until the heatmap is drawn", None, [first])
            times = []
            for _ in range(runs):
                visit("Load models", load_page)
                times.append(visit("Costs", heatmap))
            table.add("browser: click **Costs** → heatmap drawn", CHART_S, times)
            browser_retrain(table, browser, url, runs)
            browser.close()


def browser_retrain_its(page: Any, url: str, iterations: int) -> tuple[float, int]:
    """In a fresh session of the served app: zip fc1 at its planned share on Step through,
    retrain `iterations` on Retrain and wait for the end, with the browser drawing the polled
    progress and live loss chart all along. Returns the job's iterations per second (from its
    "Retrained N iterations in X s" message) and how many times the live chart was seen."""
    import re

    from playwright.sync_api import expect

    wait = TIMEOUT_S * 1000
    page.goto(url)
    expect(page.get_by_text("These two can be zipped")).to_be_visible(timeout=wait)

    def open_page(title: str) -> None:
        page.locator('[data-testid="stSidebarNav"] a', has_text=title).click()
        expect(page.get_by_role("heading", name=title).first).to_be_visible(timeout=wait)

    open_page("Step through")
    page.get_by_role("button", name="Zip fc1", exact=True).click(timeout=wait)
    expect(page.get_by_text(re.compile(r"fc1 \d+/300 shared"))).to_be_visible(timeout=wait)
    open_page("Retrain")
    box = page.get_by_label("Iterations")
    box.fill(str(iterations))
    box.press("Enter")
    page.wait_for_timeout(1500)  # the rerun that takes the new value
    page.get_by_role("button", name="Start retraining").click(timeout=wait)
    live = page.locator(".js-plotly-plot").filter(
        has=page.locator(".gtitle", has_text="Training loss")
    )
    done = page.get_by_text(re.compile(rf"Retrained {iterations} iterations in [\d.]+ s"))
    seen, t0 = 0, time.perf_counter()
    while not done.count():
        if time.perf_counter() - t0 > TIMEOUT_S:
            raise RuntimeError(f"retraining {iterations} iterations did not end in {TIMEOUT_S} s")
        seen += bool(live.count())
        page.wait_for_timeout(1000)
    text = done.first.inner_text()
    seconds = float(re.search(r"iterations in ([\d.]+) s", text).group(1))
    return iterations / seconds, seen


def zipped_library_its(iterations: int) -> float:
    """`ZipSession.retrain` it/s on the digits pair with fc1 zipped at the share the browser's
    Step page plans (150 of 300), in this process with the server idle."""
    from explorer.loaded import demo_models
    from explorer.zipper import ZipState

    z = ZipState(demo_models("digits-mlp"))
    z.step(150)
    trains = [
        task.batches("calib", 32, shuffle=True, seed=7 + t) for t, task in enumerate(z.pair.tasks)
    ]
    z.session.retrain(*trains, iterations=20, lr=0.01, device="cpu", seed=7)  # warm-up
    t0 = time.perf_counter()
    z.session.retrain(*trains, iterations=iterations, lr=0.01, device="cpu", seed=7)
    return iterations / (time.perf_counter() - t0)


def browser_retrain(table: Table, browser: Any, url: str, runs: int) -> None:
    """The issue's case in a real browser: the app's retraining job / the library's, same net
    and job, alternating (issue 11, item 4)."""
    app, lib, seen = [], [], []
    for _ in range(runs):
        lib.append(zipped_library_its(RETRAIN_ITS))
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        its, n = browser_retrain_its(page, url, RETRAIN_ITS)
        page.close()
        app.append(its)
        seen.append(n)
    ratios = [a / b for a, b in zip(app, lib)]
    table.add_ratio(
        f"browser: retrain {RETRAIN_ITS} iterations, live chart drawn / `ZipSession.retrain`",
        RETRAIN_RATIO,
        ratios,
        f"app {statistics.median(app):.0f} it/s, mtz_core {statistics.median(lib):.0f} it/s",
    )
    table.notes.append(
        f"browser retraining: the live loss chart was on screen at {min(seen)} or more of the "
        "once-a-second looks during each run."
    )


# -------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> str:
    os.chdir(ROOT)  # AppTest resolves the pages against the working folder
    runs = 1 if args.smoke else max(1, args.runs)
    table = Table()
    digits_cases(table, runs, args.smoke)
    if not args.smoke and not args.no_big:
        big_cases(table, runs)
    if not args.smoke and not args.no_browser:
        browser_cases(table, runs)
    return table.markdown()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    print(f"# App latency{' (smoke)' if args.smoke else ''}\n")
    print(f"Machine: {machine_line()}, {os.cpu_count()} CPUs\n")
    load_before = os.getloadavg()[0]
    print(run(args))
    print(
        f"\nTotal: {time.perf_counter() - t0:.1f} s; load average (1 min) "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
