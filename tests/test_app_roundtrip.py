"""Every file the app writes loads back where the app says, without extra arguments (issue 11,
item 9): each task's network in `mtz eval`, `load_checkpoint` and the Load page; the zipped
network in `mtz eval` and `ZippedNet.load`; the recipe through the engine's own API; the
Trade-off CSV in `mtz_core.sweep`. Each file is made by the app's helper that builds the
download's bytes."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")
from app_helpers import goto, new_app, texts, wait_job, ws  # noqa: E402

from explorer.loaded import demo_models  # noqa: E402
from explorer.recipe import (  # noqa: E402
    build_recipe,
    parse_recipe,
    points_csv,
    recipe_json,
    task_bytes,
    zipped_bytes,
    zipped_metadata,
)
from explorer.task_export import task_note, task_spec  # noqa: E402
from explorer.zipper import ZipSettings, ZipState  # noqa: E402
from mtz_core.checkpoints import load_checkpoint  # noqa: E402
from mtz_core.cli import main  # noqa: E402

SMALL = ZipSettings(calib_samples=256, heldout_samples=64, eval_samples=128)


def _cli(*argv: str) -> tuple[int, dict, str]:
    """`mtz ARGV --json --no-progress` in this process -> exit code, JSON printed, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--json", "--no-progress"])
    return code, (json.loads(out.getvalue()) if code == 0 else {}), err.getvalue()


@pytest.fixture(scope="module")
def zipped(tmp_path_factory):
    """The digits MLP pair with fc1 zipped (the app's ZipState) and a folder for its files."""
    state = ZipState(demo_models("digits-mlp"), SMALL)
    state.step(150)
    return state, tmp_path_factory.mktemp("downloads")


@pytest.mark.parametrize("t", [0, 1])
def test_each_task_network_is_a_checkpoint_mtz_eval_scores_without_arguments(zipped, t):
    state, folder = zipped
    path = folder / f"mtz_task_{'ab'[t]}.safetensors"
    path.write_bytes(task_bytes(state, t))
    code, result, err = _cli("eval", str(path))
    assert code == 0, err
    task = state.pair.tasks[t]
    assert result["task"] == task.name and result["samples"] == task.size("test")
    model, card = load_checkpoint(path)  # the Python API, no arguments
    assert card["model_spec"] == task_spec(state, t) == state.pair.nets[t].mtz_spec
    x = task.test[0][:64]
    with torch.no_grad():
        expected = state.session.model(x, t)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    # the CLI's accuracy is the zipped network's own on the whole test split
    net = state.session.model.eval()
    with torch.no_grad():
        acc = (net(task.test[0], t).argmax(1) == task.test[1]).float().mean().item()
    assert result["accuracy"] == pytest.approx(acc, abs=1e-6)


def test_the_load_page_takes_the_task_networks_back_as_a_pair(zipped):
    state, folder = zipped
    at = new_app()
    at.segmented_control(key="load.source").set_value("Upload checkpoints").run()
    for t, x in enumerate("ab"):
        data = task_bytes(state, t)
        at.file_uploader(key=f"load.file_{x}").set_value(
            (f"mtz_task_{x}.safetensors", data, "application/octet-stream")
        )
        at.text_input(key=f"load.task_{x}").set_value(state.pair.tasks[t].name)
        at.run()
    at.button(key="load.upload_button").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    loaded = ws(at).loaded
    assert loaded.zippable and loaded.models["a"]["name"] == "mtz_task_a.safetensors"
    x = state.pair.tasks[1].test[0][:32]
    with torch.no_grad():
        torch.testing.assert_close(loaded.nets[1](x), state.session.model(x, 1))


def test_the_keep_page_says_what_reads_each_download():
    at = goto(new_app(), "step")
    at.slider(key="plan.step.fc1").set_value(150).run()
    at.button(key="step.zip").click().run()
    goto(at, "keep")
    shown = texts(at)
    assert "`mtz eval mtz_task_a.safetensors`" in shown, shown
    assert "`mtz eval mtz_zipped.safetensors` scores every task" in shown
    assert "pandas" not in shown  # the CSV's note is on Trade-off, where it is offered
    goto(at, "tradeoff")
    assert "mtz_core.sweep" in texts(at)


def test_a_residual_task_network_says_what_loads_it_and_is_refused_with_that(tmp_path):
    state = ZipState(demo_models("digits-resnet"), SMALL)
    state.step(2)
    assert task_spec(state, 0) is None, "no registry model is a zipped ResNet's task program"
    note = task_note(state, 0, "mtz_task_a.safetensors")
    assert "mtz eval mtz_zipped.safetensors" in note and "export_task(0)" in note
    path = tmp_path / "mtz_task_a.safetensors"
    path.write_bytes(task_bytes(state, 0))
    code, _, err = _cli("eval", str(path))
    assert code == 1 and "zipped network" in err and "Traceback" not in err, err
    with pytest.raises(ValueError, match="load the zipped network it came from"):
        load_checkpoint(path)
    # and the zipped network it came from is what `mtz eval` scores
    zpath = tmp_path / "mtz_zipped.safetensors"
    zpath.write_bytes(zipped_bytes(state, zipped_metadata(state.pair, state)))
    code, result, err = _cli("eval", str(zpath))
    assert code == 0 and set(result["tasks"]) == {"a", "b"}, err


def test_a_registry_family_with_other_widths_is_described_by_its_card():
    """A method that changes a task's widths (a narrower LeNet-300-100): the card names the
    `mlp` with those widths, and the registry model computes the exported network."""
    from explorer.task_export import _as_registry_model, _candidates
    from mtz_core.models import ModelSpec

    lenet = ModelSpec.make("lenet300", (1, 8, 8), 5)
    spec = _candidates(lenet, [200, 50])[-1]
    assert spec.name == "mlp" and spec.kwargs["widths"] == (200, 50)
    net = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 200),
        torch.nn.ReLU(),
        torch.nn.Linear(200, 50),
        torch.nn.ReLU(),
        torch.nn.Linear(50, 5),
    )
    model = _as_registry_model(spec, net)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(model(x), net(x))
    with pytest.raises(ValueError, match="do not line up"):
        _as_registry_model(lenet, net)


def test_the_zipped_download_scores_in_mtz_eval_without_task_arguments(zipped):
    state, folder = zipped
    path = folder / "mtz_zipped.safetensors"
    path.write_bytes(zipped_bytes(state, zipped_metadata(state.pair, state)))
    code, result, err = _cli("eval", str(path))
    assert code == 0, err
    assert [result["tasks"][x]["task"] for x in "ab"] == [t.name for t in state.pair.tasks]


def test_the_recipe_replays_with_the_engine_api_alone(zipped):
    """The recipe's settings and pairs are all the Python API needs to make the same network."""
    from mtz_core import ZipConfig, ZipSession
    from mtz_core.demo import load_demo

    state, _ = zipped
    recipe = parse_recipe(recipe_json(build_recipe(state.pair, state)).encode())
    s, demo = recipe["settings"], load_demo(recipe["models"][0]["name"])
    keys = ("method", "matching", "damping", "seed", "batch_norm")
    session = ZipSession.many(
        demo.models,
        [t.batches("calib", s["batch_size"], limit=s["calib_samples"]) for t in demo.tasks],
        config=ZipConfig(**{k: s[k] for k in keys}),
    )
    for layer in recipe["layers"]:
        session.step(pairs=np.asarray(layer["pairs"]))
    x = state.pair.tasks[0].test[0][:32]
    with torch.no_grad():
        torch.testing.assert_close(session.model(x, 0), state.session.model(x, 0))


def test_the_tradeoff_csv_reads_back_into_the_sweep_tools():
    import pandas as pd

    from mtz_core.sweep import pareto_front, sweep_figure

    at = goto(new_app(), "step")
    at.slider(key="plan.step.fc1").set_value(150).run()
    at.button(key="step.zip").click().run()
    wait_job(at)
    df = pd.read_csv(io.BytesIO(points_csv(ws(at).points_frame())))
    assert len(df) >= 2 and pareto_front(df).any()
    fig = sweep_figure(df)
    assert len(fig.data) >= 2


def test_a_task_network_on_your_own_npz_has_a_card_without_a_task(tmp_path):
    """The card cannot name an uploaded .npz (the CLI has no such task): the file still loads
    with the Python API and the caption says to load it on Load models with the .npz."""
    from explorer.loaded import summarize_models
    from explorer.tasks import load_npz_task
    from mtz_core.demo import load_demo

    demo = load_demo("digits-mlp")
    tasks = []
    for t, task in enumerate(demo.tasks):
        buf = io.BytesIO()
        np.savez(buf, x=task.calib[0].numpy(), y=task.calib[1].numpy())
        tasks.append(load_npz_task(f"mine_{t}.npz", buf.getvalue()))
    entries = {x: {"source": "demo", "name": "digits-mlp"} for x in "ab"}
    state = ZipState(summarize_models("npz pair", entries, demo.models, tasks), SMALL)
    state.step(100)
    path = tmp_path / "mtz_task_a.safetensors"
    path.write_bytes(task_bytes(state, 0))
    model, card = load_checkpoint(path)
    assert card["task"] is None and card["model_spec"] == demo.models[0].mtz_spec
    x = tasks[0].test[0][:16]
    with torch.no_grad():
        torch.testing.assert_close(model(x), state.session.model(x, 0))
    note = task_note(state, 0, "mtz_task_a.safetensors")
    assert "your own .npz" in note and "**Load models**" in note
    code, _, err = _cli("eval", str(path))
    assert code == 1 and "records no task" in err, err
