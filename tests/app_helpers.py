"""What the AppTest suites (tests/test_app.py, tests/test_app_many.py) share: starting the app,
moving between pages, waiting for its background job, and reading what a page shows."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
# the app autosaves each session (explorer/autosave.py): the tests' go to a temporary directory
os.environ.setdefault("MTZ_EXPLORER_CACHE", tempfile.mkdtemp(prefix="mtz-explorer-test-"))
WS = "mtz.workspace"
#: seconds a rerun or a background job may take on the loaded 2-core machines
TIMEOUT = 120.0


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"explorer/pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def ws(at: AppTest):
    return at.session_state[WS]


def wait_job(at: AppTest, timeout: float = TIMEOUT) -> None:
    """Poll like the page does until the background job ends, then let the page apply it."""
    job = ws(at).job
    t0 = time.perf_counter()
    while job is not None and job.running:
        assert time.perf_counter() - t0 < timeout, f"{job.title} did not finish in {timeout} s"
        time.sleep(0.05)
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def values(data) -> np.ndarray:
    """A figure's array, plain or in Plotly's typed-array encoding ({dtype, bdata, shape})."""
    if isinstance(data, dict) and "bdata" in data:
        import base64

        arr = np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
        if "shape" in data:
            arr = arr.reshape([int(v) for v in str(data["shape"]).split(",")])
        return arr
    return np.asarray(data)


def metric(at: AppTest, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return m.value
    raise AssertionError(f"no metric {label!r}; metrics: {[m.label for m in at.metric]}")


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def figure(at: AppTest, title_part: str) -> dict:
    for fig in figures(at):
        title = fig["layout"].get("title", {})
        text = title.get("text", "") if isinstance(title, dict) else str(title)
        if title_part in text:
            return fig
    titles = [f["layout"].get("title", {}).get("text") for f in figures(at)]
    raise AssertionError(f"no figure titled {title_part!r}; figures: {titles}")


def texts(at: AppTest, *, errors: bool = False) -> str:
    """The page's markdown, captions and notices (errors too with `errors`)."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.success] + [e.value for e in at.info]
    parts += [e.value for e in at.warning]
    if errors:
        parts += [e.value for e in at.error]
    return "\n".join(parts)


def zip_layer(at: AppTest, k: int) -> None:
    """On the Step page: set the next layer's share and press Zip."""
    z = ws(at).ensure_zip()
    name = z.layers[z.next_index][0]
    at.slider(key=f"plan.step.{name}").set_value(k).run()
    at.button(key="step.zip").click().run()
    assert not at.exception, [e.value for e in at.exception]


def load_demo(at: AppTest, name: str) -> None:
    """Load a demo on the Load page (confirming when the page asks before dropping work)."""
    goto(at, "load")
    at.segmented_control(key="load.source").set_value("Demo").run()
    at.selectbox(key="load.demo").set_value(name).run()
    at.button(key="load.demo_button").click().run()
    confirm = [b for b in at.button if b.key == "load.confirm"]
    if confirm:
        confirm[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
