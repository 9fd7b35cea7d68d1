"""The explorer in a real browser: Debian's Chromium driven by Playwright, against a Streamlit
server this module starts itself.

One walk through the app, asserting on what a user sees at each stage: the demo pair loaded
(both models), the cost heatmap drawn, a layer zipped on Step through (its shared count in the
timeline), a short retraining run to its end in the background, the trade-off chart with its
points, and the Learn page's worked example. A screenshot of each stage goes to the folder named
by `MTZ_SCREENSHOTS` (default: the test's tmp_path); `MTZ_SCREENSHOTS=docs/img` refreshes the
README's pictures.

Run: `pytest -m slow tests/browser` (about a minute on 2 CPU cores). Skipped, with the reason,
when /usr/bin/chromium or the `playwright` package is missing; with MTZ_REQUIRE_BROWSER=1 (CI)
that fails instead. Never run `playwright install`.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

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

        # 4. Retrain a few iterations in the background and wait for the end
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

        # 5. Trade-off: the original, the zip step and the retraining are points on the chart;
        #    a sweep adds one line per method
        open_page(page, "Trade-off", "Trade-off: accuracy vs parameters saved")
        chart = plot_titled(page, "Accuracy vs parameters saved", exact=True)
        expect(chart).to_have_count(1, timeout=STEP_TIMEOUT_MS)
        expect(chart.locator(".scatterlayer .point").first).to_be_visible()
        assert chart.locator(".scatterlayer .point").count() >= 3
        legend = chart.locator(".legendtext").all_text_contents()
        assert "original" in legend and "yours (step-through)" in legend, legend
        expect(page.get_by_text("All 3 points")).to_be_visible()
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
        expect(page.get_by_text(f"All {3 + n_swept - 1} points")).to_be_visible(
            timeout=STEP_TIMEOUT_MS
        )
        settle(page)
        chart = plot_titled(page, "Accuracy vs parameters saved", exact=True)
        expect(chart.locator(".legendtext", has_text="Pareto front")).to_have_count(1)
        legend = chart.locator(".legendtext").all_text_contents()
        assert {"mtz", "random", "original", "yours (step-through)"} <= set(legend), legend
        assert chart.locator(".scatterlayer .point").count() >= 2 + n_swept
        snap(page, shots, "tradeoff", end=chart)
        lap("trade-off + sweep")

        # 6. Learn: the worked example's decision boundaries
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
    assert time.monotonic() - t0 < 150, f"the walk took {time.monotonic() - t0:.0f} s"
