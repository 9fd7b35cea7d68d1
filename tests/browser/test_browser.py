"""The explorer in a real browser: Debian's Chromium driven by Playwright, against a Streamlit
server this module starts itself.

Two walks through the app, asserting on what a user sees at each stage.

The student's: the demo pair loaded (both models), the cost heatmap drawn, a layer zipped on
Step through (its shared count in the timeline), the zipped layer's pairs on Costs, every other
layer zipped with its planned share (a background job), a short retraining run to its end in
the background, the trade-off chart with its points and a small sweep, the recipe and the
zipped network downloaded on Keep the work (the network loads back with `ZippedNet.load`), and
the Learn page's worked example.

The researcher's, with small files written to tmp_path: a valid pair uploaded (a bare state
dict with its architecture picked, and a checkpoint with its card), a text file renamed .pt, a
pickle whose unpickling would run a command (refused; the command never runs), and a
mismatched pair (LeNet-300-100 and LeNet-5: loaded after the page asks before discarding the
zip, each described from its own layers, and why they cannot be zipped).

A screenshot of each student stage goes to the folder named by `MTZ_SCREENSHOTS` (default: the
test's tmp_path); `MTZ_SCREENSHOTS=docs/img` refreshes the README's pictures.

Run: `pytest -m slow tests/browser` (1.5 to 2.5 minutes on 2 busy CPU cores). Skipped, with the
reason, when /usr/bin/chromium or the `playwright` package is missing; with
MTZ_REQUIRE_BROWSER=1 (CI) that fails instead. Never run `playwright install`.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from explorer.headless import CHROMIUM, CHROMIUM_ARGS, serve

#: CI sets this: there a missing browser fails the run instead of skipping the test
REQUIRED = os.environ.get("MTZ_REQUIRE_BROWSER") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason}; MTZ_REQUIRE_BROWSER=1 needs the browser test", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if not Path(CHROMIUM).exists():
    _unavailable(f"browser test: {CHROMIUM} is missing (apt-get install chromium)")
try:
    from playwright import sync_api
except ImportError:
    _unavailable(
        "browser test: the playwright package is missing (pip install playwright; it drives "
        f"{CHROMIUM}, no `playwright install` needed)"
    )
expect = sync_api.expect

pytestmark = pytest.mark.slow

VIEWPORT = {"width": 1280, "height": 1400}  # tall: a screenshot is a clip of it
START_TIMEOUT_S = 60
STEP_TIMEOUT_MS = 60_000
RETRAIN_ITERATIONS = 10
SHOT_HEIGHT = 900  # the default height of a screenshot


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free port (a fresh server: the demo pair loads on the first session)."""
    with serve(tmp_path_factory.mktemp("streamlit") / "server.log", START_TIMEOUT_S) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("MTZ_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def settle(page, timeout: int = STEP_TIMEOUT_MS) -> None:
    """Wait until the script run is over and nothing on the page is a stale placeholder."""
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout
    )
    expect(page.locator('[data-testid="stSkeleton"]')).to_have_count(0, timeout=timeout)
    expect(page.locator('[data-stale="true"]')).to_have_count(0, timeout=timeout)


def until(check, failure: str, timeout: int = STEP_TIMEOUT_MS) -> None:
    """Poll `check()` until it is true: a click's rerun may start after `settle` has returned,
    so a chart read at once can still be the one drawn before the click. A chart replaced while
    it is read (a Playwright error) counts as not yet."""
    deadline = time.monotonic() + timeout / 1000
    while True:
        try:
            if check():
                return
        except sync_api.Error:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(failure)
        time.sleep(0.25)


def open_page(page, title: str, heading: str) -> None:
    """Go to a page through the sidebar (a client-side switch: the session and its zip stay)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).click()
    expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=STEP_TIMEOUT_MS)
    settle(page)


def plot_titled(page, text: str, exact: bool = False):
    """The Plotly chart whose SVG title contains `text` (is `text`, with `exact`)."""
    title = re.compile(rf"^{re.escape(text)}$") if exact else text
    return page.locator(".js-plotly-plot").filter(has=page.locator(".gtitle", has_text=title))


def metric_value(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)
    )
    return box.first.locator('[data-testid="stMetricValue"]').inner_text().strip()


def snap(page, shots: Path, name: str, *, start=None, end=None, main_only=False) -> None:
    """Save a 1280-wide clip of the page: from the page title (or `start`, scrolled to the top)
    down to the bottom of `end` (or SHOT_HEIGHT px); `main_only` leaves the sidebar out."""
    page.wait_for_timeout(400)  # let Plotly finish drawing
    if start is None:
        page.evaluate(
            """() => document.querySelectorAll('[data-testid="stMain"], '
                + '[data-testid="stAppViewContainer"]').forEach(el => { el.scrollTop = 0; })"""
        )
        page.wait_for_timeout(300)
        top = 56  # just below Streamlit's header: the title and the sidebar's links
    else:
        start.evaluate("el => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        top = max(0, start.bounding_box()["y"] - 16)
    bottom = top + SHOT_HEIGHT
    if end is not None:
        box = end.bounding_box()
        bottom = box["y"] + box["height"] + 16
    left = 0
    if main_only:
        left = page.locator('[data-testid="stSidebar"]').bounding_box()["width"]
    bottom = min(bottom, VIEWPORT["height"])
    page.screenshot(
        path=str(shots / f"{name}.png"),
        clip={"x": left, "y": top, "width": VIEWPORT["width"] - left, "height": bottom - top},
    )


PAIRS_ON_DIAGONAL = """el => {
    const [heat, marks] = el.data;
    return marks.x.length > 0 && marks.x.every(
        (x, i) => heat.x.indexOf(x) === heat.y.indexOf(marks.y[i]));
}"""


def test_load_costs_zip_retrain_tradeoff(server, browser, shots):
    t0 = time.monotonic()
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    last = [t0]

    def lap(stage: str) -> None:  # stage times, printed (pytest shows them with -s or on failure)
        now = time.monotonic()
        print(f"{stage}: {now - last[0]:.1f} s", flush=True)
        last[0] = now

    try:
        # 1. the start page: the demo pair is loaded, both models are shown
        page.goto(server)
        expect(page.get_by_role("heading", name="Load two models")).to_be_visible(
            timeout=STEP_TIMEOUT_MS
        )
        zippable = page.get_by_text("These two can be zipped")
        expect(zippable).to_be_visible(timeout=STEP_TIMEOUT_MS)
        settle(page)
        layers = re.search(r"hidden layers \(([^)]*)\)", zippable.inner_text()).group(1)
        first = layers.split(", ")[0]  # the first hidden layer (fc1 on the digits demo)
        main = page.locator('[data-testid="stMain"]')
        for which, task in (("A", "digits:0-4"), ("B", "digits:5-9")):
            card = main.locator(
                '[data-testid="stMarkdownContainer"]', has_text=f"Model {which} · task {task}"
            )
            expect(card).to_be_visible()
            acc = metric_value(page, f"Test accuracy {which}")
            assert re.fullmatch(r"\d+\.\d%", acc), acc
            assert float(acc[:-1]) > 80, f"model {which}'s demo accuracy is {acc}"
            assert metric_value(page, f"Parameters {which}") == "50,105"
        snap(page, shots, "load", end=zippable)
        lap("load")

        # 2. Costs: the pair-cost heatmap of the next layer is drawn
        open_page(page, "Costs", "Neuron-pair costs")
        expect(page.get_by_role("combobox", name="Layer")).to_have_value(
            f"{first} (300 × 300) — next to zip"
        )
        heat = plot_titled(page, f"{first}: pair costs")
        expect(heat).to_have_count(1, timeout=STEP_TIMEOUT_MS)
        image = heat.locator(".heatmaplayer image")
        expect(image).to_have_count(1, timeout=STEP_TIMEOUT_MS)
        box = image.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 300, box
        expect(heat.locator(".colorbar")).to_have_count(1)
        assert metric_value(page, "Shared neurons") == "150 / 300"
        assert float(metric_value(page, "Predicted layer error")) > 0
        expect(plot_titled(page, "Cost histogram")).to_have_count(1)
        expect(plot_titled(page, "predicted error vs shared neurons")).to_have_count(1)

        # 3. Step through: zip the first layer; the timeline shows its shared count
        open_page(page, "Step through", "Step through the zip")
        expect(plot_titled(page, "The network")).to_have_count(1)
        assert metric_value(page, "Layers zipped") == "0 / 2"
        page.get_by_role("button", name=f"Zip {first}", exact=True).click()
        shared = 150  # the planned share, shown on Costs
        # (the "Zipped …" message is shown once: a later rerun may clear it, so not asserted)
        expect(page.get_by_text(f"{first} {shared}/300 shared")).to_be_visible(
            timeout=STEP_TIMEOUT_MS
        )
        settle(page)
        assert metric_value(page, "Layers zipped") == "1 / 2"
        saved = metric_value(page, "Parameters saved")
        assert re.fullmatch(r"\d+\.\d%", saved) and float(saved[:-1]) > 0, saved
        expect(page.get_by_role("heading", name="What each step did")).to_be_visible()
        snap(page, shots, "step", end=page.get_by_role("button", name="Undo last layer"))
        lap("costs + zip")

        # the zipped layer on Costs: its applied pairs, put on the diagonal
        open_page(page, "Costs", "Neuron-pair costs")
        page.get_by_role("combobox", name="Layer").click()
        page.get_by_role("option", name=re.compile(rf"^{first} .* zipped$")).click()
        expect(page.get_by_text(f"{first} is zipped with {shared} shared neurons")).to_be_visible(
            timeout=STEP_TIMEOUT_MS
        )
        settle(page)
        page.get_by_text("pairs on diagonal", exact=True).click()
        settle(page)
        heat = plot_titled(page, f"{first}: pair costs")
        # a rerun may briefly show the stale chart beside the new one: wait for one
        expect(heat).to_have_count(1, timeout=STEP_TIMEOUT_MS)
        expect(heat.locator(".heatmaplayer image")).to_have_count(1, timeout=STEP_TIMEOUT_MS)
        expect(heat.locator(".legendtext", has_text=f"chosen pairs ({shared})")).to_have_count(1)
        until(lambda: heat.evaluate(PAIRS_ON_DIAGONAL), "the chosen pairs are not on the diagonal")
        assert metric_value(page, "Shared neurons") == f"{shared} / 300"
        errors_chart = plot_titled(page, "predicted vs measured")
        expect(errors_chart.locator(".bars path").first).to_be_attached(timeout=STEP_TIMEOUT_MS)
        snap(page, shots, "app", end=heat)
        snap(
            page,
            shots,
            "costs",
            start=plot_titled(page, "Cost histogram"),
            end=errors_chart,
            main_only=True,
        )
        lap("zipped layer on Costs")

        # 4. Step through: zip the remaining layers with their planned shares (a background job)
        open_page(page, "Step through", "Step through the zip")
        page.get_by_role("button", name=re.compile(r"^Zip all remaining layers")).click()
        expect(page.get_by_text("Every hidden layer is zipped.")).to_be_visible(
            timeout=STEP_TIMEOUT_MS
        )
        settle(page)
        n_layers = len(layers.split(", "))
        until(
            lambda: metric_value(page, "Layers zipped") == f"{n_layers} / {n_layers}",
            "the zip-all job's layers are not counted as zipped",
        )
        # the timeline: every layer zipped, the rest with their planned shares (a stale copy of
        # the timeline from before may still be on the page for a moment: this one says all)
        timeline = rf"{first} {shared}/300 shared" + "".join(
            rf".* {name} \d+/\d+ shared" for name in layers.split(", ")[1:]
        )
        expect(page.get_by_text(re.compile(timeline))).to_be_visible()
        saved_all = metric_value(page, "Parameters saved")
        assert float(saved_all[:-1]) > float(saved[:-1]), (saved, saved_all)
        lap("zip all")

        # 5. Retrain a few iterations in the background and wait for the end
        open_page(page, "Retrain", "Retrain")
        iterations = page.get_by_label("Iterations")
        iterations.fill(str(RETRAIN_ITERATIONS))
        iterations.press("Enter")
        settle(page)
        page.get_by_role("button", name="Start retraining").click()
        # drawn once the job has ended and its results are applied (the "Retrained …" message
        # is shown once and may be cleared by a later rerun, so it is not waited for)
        expect(
            page.get_by_role("heading", name="Loss curves of the last retraining")
        ).to_be_visible(timeout=STEP_TIMEOUT_MS)
        settle(page)
        expect(page.get_by_role("heading", name="Retraining so far")).to_be_visible()
        expect(page.get_by_role("button", name="Start retraining")).to_be_enabled()
        losses = plot_titled(page, "Training loss")
        expect(losses.locator(".scatterlayer .trace")).not_to_have_count(0)
        snap(page, shots, "retrain", end=losses)
        lap("retrain")

        # 6. Trade-off: the original, the two zip steps and the retraining are points on the
        #    chart; a sweep adds one line per method
        open_page(page, "Trade-off", "Trade-off: accuracy vs parameters saved")
        chart = plot_titled(page, "Accuracy vs parameters saved", exact=True)
        expect(chart).to_have_count(1, timeout=STEP_TIMEOUT_MS)
        # (any layer: Plotly draws traces with their own `zorder` outside `.scatterlayer`)
        points = chart.locator(".point")
        expect(points.first).to_be_visible()
        n_points = 4  # the original, zip fc1, zip the rest, the retraining
        until(lambda: points.count() >= n_points, f"fewer than {n_points} points are drawn")
        legend = chart.locator(".legendtext").all_text_contents()
        assert "original" in legend and "yours (step-through)" in legend, legend
        expect(page.get_by_text(f"All {n_points} points")).to_be_visible()
        # a small sweep (the tuning grid above has its own "0.25": each button in its box)
        for box, remove in (
            ("Shares", "Remove 0.25"),
            ("Shares", "Remove 0.75"),
            ("Methods", "Remove mtz-avg"),
            ("Methods", "Remove euclidean"),
        ):
            select = page.locator('[data-testid="stMultiSelect"]').filter(
                has=page.locator('[data-testid="stWidgetLabel"]', has_text=re.compile(f"^{box}$"))
            )
            select.get_by_role("button", name=remove, exact=True).click()
            settle(page)
        page.get_by_role("button", name="Run the sweep").click()
        # the sweep's original, then 2 shares × 2 methods; its own original replaces the zip's
        n_swept = 5
        expect(page.get_by_text(f"All {n_points + n_swept - 1} points")).to_be_visible(
            timeout=STEP_TIMEOUT_MS
        )
        settle(page)
        chart = plot_titled(page, "Accuracy vs parameters saved", exact=True)
        expect(chart.locator(".legendtext", has_text="Pareto front")).to_have_count(1)
        legend = chart.locator(".legendtext").all_text_contents()
        assert {"mtz", "random", "original", "yours (step-through)"} <= set(legend), legend
        until(
            lambda: chart.locator(".point").count() >= n_points - 1 + n_swept,
            "the sweep's points are not drawn",
        )
        snap(page, shots, "tradeoff", end=chart)
        lap("trade-off + sweep")

        # 7. Keep the work: the recipe names every zipped layer's pairs; the zipped network
        #    downloads and loads back with the Python API
        open_page(page, "Keep the work", "Keep the work")
        shares = re.compile(rf"{n_layers} zipped layer\(s\): {first} {shared} pairs, .*; saves ")
        expect(page.get_by_text(shares)).to_be_visible()
        assert f"saves {saved_all}" in page.get_by_text(shares).inner_text()
        with page.expect_download(timeout=STEP_TIMEOUT_MS) as download:
            page.get_by_role("button", name="Download the recipe (JSON)").click()
        recipe = json.loads(Path(download.value.path()).read_text())
        zipped = [(layer["name"], len(layer["pairs"])) for layer in recipe["layers"]]
        assert [name for name, _ in zipped] == layers.split(", "), zipped
        assert zipped[0] == (first, shared), zipped
        with page.expect_download(timeout=STEP_TIMEOUT_MS) as download:
            page.get_by_role("button", name="Zipped network (.safetensors)").click()
        from mtz_core import ZippedNet

        assert ZippedNet.load(download.value.path()).n_tasks == 2
        lap("keep")

        # 8. Learn: the worked example's decision boundaries
        open_page(page, "Learn", "How Multi-Task Zipping works")
        boundaries = page.locator(".js-plotly-plot").filter(
            has=page.locator(".annotation-text", has_text="task A: moons")
        )
        expect(boundaries).to_have_count(1, timeout=STEP_TIMEOUT_MS)
        expect(boundaries.locator(".contourlayer path").first).to_be_attached()
        example = page.get_by_role("heading", name="Worked example: moons and circles")
        snap(page, shots, "learn", start=example, end=boundaries, main_only=True)
        lap("learn")

        assert not errors, f"JavaScript errors in the page: {errors}"
        assert page.locator('[data-testid="stException"]').count() == 0
    except Exception:
        page.screenshot(path=str(shots / "failure.png"))  # what the page showed at the failure
        raise
    finally:
        context.close()
    assert time.monotonic() - t0 < 210, f"the walk took {time.monotonic() - t0:.0f} s"


# ------------------------------------------------------------------------ the researcher path


class _RunsACommand:
    """Unpickling this runs a shell command: a checkpoint must be refused before that happens."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _researcher_files(folder: Path) -> dict[str, Any]:
    """Small files of the kinds a researcher brings: a state dict saved with torch.save, a
    checkpoint saved with its card, a text file renamed .pt, a pickle that would run a command,
    and a LeNet-5 (which does not zip with the LeNet-300-100 MLP)."""
    import torch

    from mtz_core.checkpoints import save_checkpoint
    from mtz_core.demo import load_demo

    mlp, conv = load_demo("digits-mlp"), load_demo("digits-conv")
    files = {name: folder / name for name in ("mine.pt", "theirs.safetensors", "notes.pt")}
    torch.save(mlp.model_a.state_dict(), files["mine.pt"])  # no card: needs its architecture
    save_checkpoint(mlp.model_b, None, files["theirs.safetensors"])
    files["notes.pt"].write_text("fc1.weight: 0.1 0.2 0.3\nfc1.bias: 0.0\n" * 40)
    files["evil.pt"] = folder / "evil.pt"
    marker = folder / "the-pickle-ran"
    torch.save({"fc1.weight": _RunsACommand(f"touch {marker}")}, files["evil.pt"])
    assert b"system" in files["evil.pt"].read_bytes(), "the pickle must call os.system"
    files["marker"] = marker
    files["lenet5.safetensors"] = folder / "lenet5.safetensors"
    save_checkpoint(conv.model_a, None, files["lenet5.safetensors"])
    files["lenet5 task"] = conv.task_a.name
    return files


class Frames:
    """When the page last sent and last received a websocket frame (Streamlit's messages): a
    script run is over when the request for it went out, the server has answered since and
    has been quiet for a moment. (The run state on the page alone misses a fast run: it can
    turn from notRunning to notRunning in one redraw.)"""

    QUIET_S = 0.5

    def __init__(self, page) -> None:
        self.page = page
        self.sent = self.received = 0.0
        page.on("websocket", self._watch)

    def _watch(self, ws) -> None:
        ws.on("framesent", lambda _: setattr(self, "sent", time.monotonic()))
        ws.on("framereceived", lambda _: setattr(self, "received", time.monotonic()))

    def after_rerun(self, action) -> None:
        """Do `action()` and wait for the script run it causes to end."""
        start = time.monotonic()
        action()
        deadline = start + STEP_TIMEOUT_MS / 1000
        while not (
            self.sent > start
            and self.received > self.sent
            and time.monotonic() - self.received > self.QUIET_S
        ):
            if time.monotonic() > deadline:
                raise AssertionError("no script run followed the action")
            self.page.wait_for_timeout(100)  # (Playwright delivers the frame events meanwhile)
        settle(self.page)


def _choose_file(page, frames: Frames, label: str, path: Path) -> None:
    """Put `path` in the file uploader labelled `label`; wait until it is uploaded and the app
    has rerun with it (a click before that would load the file chosen before)."""
    uploader = page.locator('[data-testid="stFileUploader"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]', has_text=re.compile(f"^{label}$"))
    )
    frames.after_rerun(lambda: uploader.locator('input[type="file"]').set_input_files(str(path)))
    expect(uploader.get_by_text(path.name, exact=True)).to_be_visible()


def _choose(page, frames: Frames, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    frames.after_rerun(lambda: page.get_by_role("option", name=option, exact=True).click())


def _error(page, text: str):
    """The red box saying `text`."""
    box = page.locator('[data-testid="stAlertContentError"]').filter(has_text=text)
    expect(box).to_have_count(1, timeout=STEP_TIMEOUT_MS)
    return box


def test_upload_a_pair_a_text_file_a_pickle_and_a_mismatched_pair(server, browser, shots, tmp_path):
    t0 = time.monotonic()
    files = _researcher_files(tmp_path)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    frames = Frames(page)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    main = page.locator('[data-testid="stMain"]')
    load = page.get_by_role("button", name="Load these two models")
    try:
        page.goto(server)
        expect(page.get_by_role("heading", name="Load two models")).to_be_visible(
            timeout=STEP_TIMEOUT_MS
        )
        settle(page)
        page.get_by_role("radiogroup", name="Where do the models come from?").get_by_role(
            "radio", name="Upload checkpoints"
        ).click()
        expect(load).to_be_visible(timeout=STEP_TIMEOUT_MS)
        settle(page)

        # 1. a valid pair: a bare state dict with its architecture picked, and a checkpoint
        #    whose card names its own
        _choose_file(page, frames, "Checkpoint A", files["mine.pt"])
        _choose(page, frames, "Architecture A", "lenet300")
        _choose_file(page, frames, "Checkpoint B", files["theirs.safetensors"])
        load.click()
        expect(
            page.locator('[data-testid="stAlertContentSuccess"]').filter(
                has_text="Loaded your two models; they can be zipped."
            )
        ).to_be_visible(timeout=STEP_TIMEOUT_MS)
        settle(page)
        expect(page.get_by_text("These two can be zipped")).to_be_visible()
        for which, name in (("A", "mine.pt"), ("B", "theirs.safetensors")):
            card = main.locator('[data-testid="stMarkdownContainer"]', has_text=f"Model {which} ·")
            expect(card.filter(has_text=name)).to_have_count(1)
            acc = metric_value(page, f"Test accuracy {which}")
            assert float(acc[:-1]) > 80, f"uploaded model {which}'s accuracy is {acc}"
            assert metric_value(page, f"Parameters {which}") == "50,105"

        # some work on it: one zipped layer, which a later load must not drop unasked
        open_page(page, "Step through", "Step through the zip")
        page.get_by_role("button", name="Zip fc1", exact=True).click()
        expect(page.get_by_text("fc1 150/300 shared")).to_be_visible(timeout=STEP_TIMEOUT_MS)
        settle(page)
        open_page(page, "Load models", "Load two models")
        # the upload form is as it was left: its mode, its files, its architecture
        expect(load).to_be_visible()
        expect(page.get_by_text("Kept from before: mine.pt")).to_be_visible()
        expect(page.get_by_role("combobox", name="Architecture A")).to_have_value("lenet300")

        # 2. a text file renamed .pt: called a text file, with the control to change named; the
        #    models before it stay loaded (and no green box says they can be zipped)
        _choose_file(page, frames, "Checkpoint A", files["notes.pt"])
        load.click()
        said = _error(page, "notes.pt is a text file").inner_text()
        assert "Checkpoint A" in said, said
        assert "IndexError" not in said and "pickled" not in said, said
        settle(page)
        expect(page.get_by_role("heading", name=re.compile("^Still loaded: "))).to_be_visible()
        expect(page.locator('[data-testid="stAlertContentSuccess"]')).to_have_count(0)
        expect(page.get_by_text("would be discarded")).to_have_count(0)

        # 3. a pickle whose unpickling runs a command: refused, and the command never ran
        _choose_file(page, frames, "Checkpoint A", files["evil.pt"])
        load.click()
        said = _error(page, "refused to load evil.pt").inner_text()
        assert "state dict" in said, said
        settle(page)
        assert not files["marker"].exists(), "loading the pickle ran its command"
        expect(page.get_by_role("heading", name=re.compile("^Still loaded: "))).to_be_visible()
        # the failed loads kept the zip (the sidebar's summary of the work)
        sidebar = page.locator('[data-testid="stSidebar"]')
        expect(sidebar.get_by_text(re.compile(r"^Zipped 1/2 layers"))).to_be_visible()

        # 4. a mismatched pair (LeNet-300-100 and LeNet-5): the page asks before discarding the
        #    zip, then loads them, describes each from its own layers, and says why they
        #    cannot be zipped
        _choose_file(page, frames, "Checkpoint A", files["mine.pt"])
        _choose_file(page, frames, "Checkpoint B", files["lenet5.safetensors"])
        task_b = page.get_by_role("textbox", name="Task text B")
        task_b.fill(files["lenet5 task"])
        frames.after_rerun(lambda: task_b.press("Enter"))
        load.click()
        expect(page.get_by_text("would be discarded")).to_be_visible(timeout=STEP_TIMEOUT_MS)
        settle(page)
        page.get_by_role("button", name=re.compile("^Discard the zip and load ")).click()
        expect(
            page.locator('[data-testid="stAlertContentWarning"]').filter(
                has_text="Loaded your two models, but they cannot be zipped"
            )
        ).to_be_visible(timeout=STEP_TIMEOUT_MS)
        settle(page)
        said = _error(page, "These models cannot be zipped").inner_text()
        assert "layer counts differ" in said, said
        expect(sidebar.get_by_text(re.compile(r"^Zipped "))).to_have_count(0)  # discarded
        for which in ("A", "B"):
            expect(page.get_by_text(f"Weight layers of model {which}")).to_be_visible()
        expect(
            page.get_by_text(re.compile(r"^3 weight layers, widths 300 → 100 → 5;"))
        ).to_be_visible()
        expect(page.get_by_text(re.compile(r"^4 weight layers, widths "))).to_be_visible()
        open_page(page, "Costs", "Neuron-pair costs")
        said = _error(page, "cannot be zipped").inner_text()
        assert "layer counts differ" in said, said

        assert not errors, f"JavaScript errors in the page: {errors}"
        assert page.locator('[data-testid="stException"]').count() == 0
    except Exception:
        page.screenshot(path=str(shots / "failure-researcher.png"))
        raise
    finally:
        context.close()
    print(f"researcher path: {time.monotonic() - t0:.1f} s", flush=True)
