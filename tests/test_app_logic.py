"""The app's logic without Streamlit: workspace, zip state, jobs, recipes, uploaded tasks."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch

from explorer.jobs import Job, NullJob
from explorer.loaded import demo_pair, summarize
from explorer.recipe import build_recipe, parse_recipe, rebuild, recipe_json
from explorer.tasks import load_npz_task
from explorer.workspace import BusyError, Workspace
from explorer.zipper import ZipSettings, ZipState, plan_savings
from mtz_core.data import load_task
from mtz_core.models import create_model

SMALL = ZipSettings(calib_samples=256, heldout_samples=64, eval_samples=128)


@pytest.fixture(scope="module")
def mlp_pair():
    return demo_pair("digits-mlp")


@pytest.fixture(scope="module")
def conv_pair():
    return demo_pair("digits-conv")


def _resnet_pair(option: str):
    """Two untrained ResNet-20s (width 0.25: 4, 8, 16 channels) on the digits halves."""
    tasks = [load_task(t) for t in ("digits:0-4", "digits:5-9")]
    a, b = (
        create_model("resnet20", (1, 8, 8), 5, seed=s, option=option, width=0.25).eval()
        for s in (0, 1)
    )
    models = {w: {"source": "test", "name": f"resnet20 {w}"} for w in "ab"}
    return summarize(f"resnet20 option {option}", models, a, b, *tasks)


@pytest.fixture(scope="module")
def resnet_pair():
    return _resnet_pair("A")


@pytest.mark.parametrize("name", ["mlp_pair", "conv_pair", "resnet_pair", "resnet_b"])
def test_plan_savings_counts_what_the_engine_saves(name, request):
    """Counted from the sizes, for chains and residual groups (re-merged readers included);
    the engine's saved_fraction also counts the batch norm folded away even at k = 0."""
    pair = _resnet_pair("B") if name == "resnet_b" else request.getfixturevalue(name)
    state = ZipState(pair, SMALL)
    ks = [min(g["width A"], g["width B"]) * (3 + i % 2) // 4 for i, g in enumerate(pair.groups)]
    for k in ks:
        state.step(k)
    result = state.session.result()
    counted = sum(plan_savings(pair.layers, pair.groups, ks))
    assert counted == sum(r.saved_parameters() for r in result.layers)
    if not pair.residual:
        assert counted == result.saved
    assert state.saved_fraction() == pytest.approx(result.saved_fraction)


def test_a_resnet_pair_is_described_by_its_groups(resnet_pair):
    pair = resnet_pair
    assert pair.zippable and pair.residual and pair.unit_name == "group"
    assert len(pair.layers) == 20 and len(pair.groups) == 12
    first = pair.groups[0]
    assert first["group"] == "conv1 (+3)" and (first["width A"], first["width B"]) == (4, 4)
    assert first["members"] == ["conv1", "layers.0.conv2", "layers.1.conv2", "layers.2.conv2"]
    rows = {r["layer"]: r for r in pair.layers}
    assert rows["conv1"]["reads"] is None and rows["layers.0.conv2"]["group"] == "conv1 (+3)"
    assert rows["layers.0.conv2"]["reads"] == "layers.0.conv1"
    assert rows["fc"]["head"] and rows["fc"]["group"] is None
    ws = Workspace()
    ws.set_pair(pair)
    assert list(ws.plan) == [g["group"] for g in pair.groups] and ws.plan["conv1 (+3)"] == 2


def test_a_residual_group_shows_its_costs_and_why_there_is_no_curve(resnet_pair):
    """The engine previews single-layer groups only: a stream's view has its cost matrix and
    the engine's reason; the step still records its pairs and the next group has a curve."""
    state = ZipState(resnet_pair, SMALL)
    assert state.layers[0] == ("conv1 (+3)", 4, 4)
    assert state.members(0) == ["conv1", "layers.0.conv2", "layers.1.conv2", "layers.2.conv2"]
    view = state.cost_view(0)
    assert view.cost.shape == (4, 4) and view.curve is None and view.predicted(2) is None
    assert "residual stream of several layers" in view.no_curve
    np.testing.assert_allclose(view.cost, state.session.cost_matrix())
    event = state.step(2)
    assert event["layer"] == "conv1 (+3)" and event["members"] == state.members(0)
    zipped = state.cost_view(0)
    assert zipped.source == "zipped" and zipped.applied_error == event["predicted_error"]
    assert "does not cover" in zipped.no_curve
    nxt = state.cost_view(1)
    assert nxt.curve is not None and not nxt.no_curve
    predicted = nxt.predicted(3)
    assert state.remerges(1) == ["layers.0.conv2"] and state.remerges(0) == []
    event = state.step(3)
    # the preview covers the group's own merges; the step adds the re-merge of its reader
    # layers.0.conv2, whose rows conv1 (+3) shared before its inputs were
    assert list(event["remerged"]) == ["layers.0.conv2"]
    remerge = event["remerged"]["layers.0.conv2"]
    assert event["predicted_error"] == pytest.approx(predicted + remerge, rel=1e-9)
    assert [r["members"] for r in state.sharing_rows()[:2]] == [
        "conv1, layers.0.conv2, layers.1.conv2, layers.2.conv2",
        "layers.0.conv1",
    ]


def test_evaluating_a_plan_and_a_recipe_work_on_a_resnet_pair(resnet_pair):
    ws = Workspace(settings=SMALL)
    ws.set_pair(resnet_pair)
    job = ws.start_evaluate_plan()
    assert job.wait(120)
    ws.collect()
    assert job.status == "done", job.error
    assert ws.estimates[0].no_curve and ws.estimates[1].curve is not None
    assert ws.estimates[1].note.startswith("estimate from an evaluated plan with earlier groups")
    state = ZipState(resnet_pair, SMALL)
    state.step(3)
    state.step(2)
    recipe = parse_recipe(recipe_json(build_recipe(resnet_pair, state)).encode())
    assert recipe["layers"][0]["members"] == state.members(0)
    again = rebuild(NullJob(), resnet_pair, recipe)
    for r1, r2 in zip(state.records, again.records):
        np.testing.assert_array_equal(r1.pairs, r2.pairs)


@pytest.mark.parametrize("method", ["mtz", "mtz-avg", "euclidean", "random"])
def test_cost_view_predicts_what_the_step_records(mlp_pair, method):
    """Costs and Step show the engine's preview: the pairs and the predicted error the step
    then records, for every method (not a sum of damped pair costs)."""
    state = ZipState(mlp_pair, ZipSettings(method=method))
    view = state.cost_view(0)
    assert view.source == "next" and view.cost.shape == (300, 300)
    assert state.cost_view(0) is view, "cached: a redraw never recomputes"
    predicted = view.predicted(120)
    pairs = view.pairs_for(120)
    state.step(120)
    rec = state.records[0]
    np.testing.assert_array_equal(pairs, rec.pairs)
    assert predicted == pytest.approx(rec.predicted_error, rel=1e-9)
    zipped = state.cost_view(0)
    assert zipped.source == "zipped" and zipped.chosen is rec.pairs
    assert zipped.applied_error == rec.predicted_error
    assert zipped.predicted(120) == pytest.approx(rec.predicted_error, rel=1e-9)  # kept curve
    assert state.cost_view(1, compute=False) is None
    assert state.cost_view(1).source == "next"


def test_step_rejects_a_share_out_of_range(mlp_pair):
    state = ZipState(mlp_pair)
    with pytest.raises(ValueError, match="out of range for fc1: choose 0 to 300"):
        state.step(301)
    with pytest.raises(ValueError, match="whole number"):
        state.step(0.5)
    assert not state.records


def test_undo_restores_the_accuracy_and_reset_the_original(mlp_pair):
    state = ZipState(mlp_pair)
    base = state.accuracy
    state.step(300)
    state.retrain(NullJob(), iterations=5, lr=0.01, device="cpu")
    assert state.retrain_log[0][0]["iterations"] == 5
    state.step(100)
    assert state.undo() == "fc2"
    assert len(state.records) == 1
    state.reset()
    assert state.accuracy == base and not state.records and not state.retrain_log


def test_retrain_cancel_restores_the_weights_exactly(mlp_pair):
    state = ZipState(mlp_pair)
    state.step(200)
    before = {k: v.clone() for k, v in state.session.model.state_dict().items()}
    job = Job("retrain", "Retraining", lambda j: state.retrain(j, iterations=10**6, lr=0.01))
    job.start()
    while not job.losses:
        time.sleep(0.01)
    job.cancel()
    assert job.wait(30)
    assert job.status == "cancelled" and "back to what it was" in job.error
    after = state.session.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert state.records[-1].retraining is None and not state.retrain_log.get(0)


def test_retrain_refuses_bad_settings(mlp_pair):
    state = ZipState(mlp_pair)
    with pytest.raises(ValueError, match="zip a layer first"):
        state.retrain(NullJob(), iterations=5, lr=0.01)
    state.step(10)
    with pytest.raises(ValueError, match="learning rate"):
        state.retrain(NullJob(), iterations=5, lr=-1.0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            state.retrain(NullJob(), iterations=5, lr=0.01, device="cuda")


def test_job_reports_failure_as_a_message():
    def boom(job):
        raise ValueError("something the user can fix")

    job = Job("x", "Boom", boom).start()
    job.wait(5)
    assert job.status == "failed" and job.error == "something the user can fix"


def test_workspace_refuses_actions_while_a_job_runs(mlp_pair):
    ws = Workspace()
    ws.set_pair(mlp_pair)
    assert ws.plan == {"fc1": 150, "fc2": 50}
    gate = [True]

    def wait(job):
        while gate[0]:
            time.sleep(0.01)

    ws.start_job("x", "A long job", wait)
    with pytest.raises(BusyError, match="A long job is still running"):
        ws.step(10)
    gate[0] = False
    ws.job.wait(5)
    assert ws.collect() is ws.job and ws.job.message.startswith("A long job: done")
    ws.step(10)
    assert len(ws.zip.records) == 1 and ws.points[-1]["series"] == "yours (step-through)"


def test_recipe_round_trip_rebuilds_the_same_pairs(mlp_pair):
    state = ZipState(mlp_pair)
    state.step(77)
    state.retrain(NullJob(), iterations=3, lr=0.02, device="cpu")
    state.step(33)
    recipe = parse_recipe(recipe_json(build_recipe(mlp_pair, state)).encode())
    assert recipe["layers"][0]["retraining"][0]["lr"] == 0.02
    again = rebuild(NullJob(), mlp_pair, recipe)
    for r1, r2 in zip(state.records, again.records):
        np.testing.assert_array_equal(r1.pairs, r2.pairs)
    x = mlp_pair.task_a.test[0][:32]
    torch.testing.assert_close(again.session.model(x, 0), state.session.model(x, 0))


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x00\x01", "not a JSON recipe"),
        (b'{"format": "other"}', "not an MTZ Explorer recipe"),
        (b'{"format": "mtz-recipe", "format_version": 9}', "version 9"),
        (b'{"format": "mtz-recipe", "format_version": 1, "models": {}}', "no 'tasks'"),
    ],
)
def test_parse_recipe_explains_what_is_wrong(payload, match):
    with pytest.raises(ValueError, match=match):
        parse_recipe(payload, "r.json")


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_npz_task_splits_and_batches():
    x = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    task = load_npz_task("mine.npz", _npz(x=x, y=y))
    assert task.name == "npz:mine.npz" and task.num_classes == 2 and task.input_shape == (2,)
    assert (task.size("calib"), task.size("val"), task.size("test")) == (72, 8, 20)
    assert sum(b[0].shape[0] for b in task.batches("test", 8)) == 20
    with_test = load_npz_task("t.npz", _npz(x=x, y=y, x_test=x[:7], y_test=y[:7]))
    assert (with_test.size("calib"), with_test.size("val"), with_test.size("test")) == (90, 10, 7)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((20, 2))}, "no array 'y'"),
        ({"x": np.zeros((20, 2)), "y": np.zeros(19)}, "one label per input"),
        ({"x": np.zeros(20), "y": np.zeros(20)}, "sample axis first"),
        ({"x": np.full((20, 2), np.nan), "y": np.zeros(20)}, "NaN"),
        ({"x": np.zeros((20, 2)), "y": np.zeros(20)}, "single class"),
    ],
)
def test_npz_task_errors(arrays, match):
    with pytest.raises(ValueError, match=match):
        load_npz_task("bad.npz", _npz(**arrays))


def test_npz_that_is_not_npz():
    with pytest.raises(ValueError, match="not a NumPy .npz"):
        load_npz_task("bad.npz", b"hello")


def test_the_live_loss_chart_built_without_validation_is_a_valid_figure():
    """The retraining's live chart is built without plotly's validation (issue 11, item 4: for
    speed, whose effect on retraining benchmarks.app_latency measures; no time is asserted
    here): it must be the same figure a validated build gives."""
    import json

    import plotly.graph_objects as go

    from explorer.figures import loss_curves

    rng = np.random.default_rng(0)
    rows = [(i, 1 / (i + 1) + rng.random() * 0.1, np.nan if i % 7 else 0.5) for i in range(1500)]
    fig = loss_curves(rows)
    validated = go.Figure(json.loads(fig.to_json()))  # raises on any invalid property
    assert json.loads(validated.to_json()) == json.loads(fig.to_json())
    assert fig.layout.title.text == "Training loss" and fig.layout.meta["rows"] == 1500
    assert len(fig.data) == 4 and max(len(t.x) for t in fig.data) <= 400
