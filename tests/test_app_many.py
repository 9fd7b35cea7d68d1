"""The app with three models (the `digits-three` demo, or three uploaded checkpoints): loading,
costs between any two models and against the zipped network, stepping with one colour per
task, settings the engine refuses for three models, the trade-off of every task, recipes.
Headless (AppTest), asserting on what the pages show; the costs also against the engine's own
records (`LayerRecord.pair_costs`, `predicted_error`)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")
import app_helpers  # noqa: E402
from app_helpers import figure, goto, metric, new_app, wait_job, ws, zip_layer  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from explorer.figures import COLORS, TASK_COLORS  # noqa: E402
from explorer.jobs import NullJob  # noqa: E402
from explorer.loaded import demo_models  # noqa: E402
from explorer.recipe import build_recipe, parse_recipe, rebuild, recipe_json  # noqa: E402
from explorer.tuple_costs import comparisons  # noqa: E402
from explorer.zipper import ZipSettings, ZipState, plan_savings, settings_refusal  # noqa: E402

THREE = Path(__file__).resolve().parents[1] / "assets" / "demos" / "digits-three"
CARDS = [json.loads((THREE / f"{w}.json").read_text()) for w in "abc"]
SMALL = ZipSettings(calib_samples=256, heldout_samples=64, eval_samples=128)


def texts(at: AppTest) -> str:
    return app_helpers.texts(at, errors=True)


def load_three() -> AppTest:
    at = new_app()
    at.selectbox(key="load.demo").set_value("digits-three").run()
    at.button(key="load.demo_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture(scope="module")
def three():
    return demo_models("digits-three")


# ------------------------------------------------------------------------------- loading


def test_the_three_model_demo_loads_with_every_model_described():
    at = load_three()
    assert at.title[0].value == "Load three models"
    assert any("Loaded the demo set (3 models) digits-three" in s.value for s in at.success)
    loaded = ws(at).loaded
    assert loaded.accuracy == pytest.approx([c["accuracy"]["test"] for c in CARDS], abs=1e-4)
    accs = [m.value for m in at.metric if m.label.startswith("Test accuracy")]
    assert accs == [f"{a:.1%}" for a in loaded.accuracy]
    assert metric(at, "Parameters C") == f"{ws(at).loaded.params[2]:,}"
    body = texts(at)
    for x, card in zip("ABC", CARDS):
        assert f"**Model {x}** · task `{card['task']}` · demo: `digits-three`" in body
    for classes in (4, 3, 3):  # each from its own card and trace
        assert (
            f"What it is: mlp(dropout=0.0, widths=(64, 32)) on 1x8x8 -> {classes} classes" in body
        )
    assert body.count("widths 64 → 32 → 3;") == 2 and body.count("widths 64 → 32 → 4;") == 1
    assert any(
        "These three can be zipped: 2 hidden layers (fc1, fc2)" in s.value
        and "shared by all 3 models" in s.value
        for s in at.success
    )
    table = at.dataframe[0].value
    assert list(table["width C"]) == [64, 32, 3]
    assert list(table["params C"][:2]) == [64 * 64 + 64, 64 * 32 + 32]


def _checkpoint(model) -> bytes:
    from mtz_core.checkpoints import save_checkpoint

    path = Path(tempfile.mkdtemp()) / "m.safetensors"
    save_checkpoint(model, None, path)
    return path.read_bytes()


def _upload(at: AppTest, which: str, data: bytes, task: str) -> None:
    at.file_uploader(key=f"load.file_{which}").set_value(
        (f"{which}.safetensors", data, "application/octet-stream")
    )
    at.text_input(key=f"load.task_{which}").set_value(task)
    at.run()


def test_upload_three_checkpoints_each_with_its_task_then_remove_one():
    from mtz_core.demo import load_demo

    demo = load_demo("digits-three")
    at = new_app()
    at.segmented_control(key="load.source").set_value("Upload checkpoints").run()
    assert at.button(key="load.remove_model").disabled, "never fewer than two models"
    at.button(key="load.add_model").click().run()
    assert at.button(key="load.upload_button").label == "Load these three models"
    for which, model, task in zip("abc", demo.models, ("digits:0-3", "digits:4-6", "digits:7-9")):
        _upload(at, which, _checkpoint(model), task)
    at.button(key="load.upload_button").click().run()
    assert not at.error, [e.value for e in at.error]
    loaded = ws(at).loaded
    assert loaded.n_tasks == 3 and loaded.zippable
    assert [t.name for t in loaded.tasks] == ["digits:0-3", "digits:4-6", "digits:7-9"]
    assert loaded.models["c"]["name"] == "c.safetensors"
    assert loaded.title == "a.safetensors + b.safetensors + c.safetensors"
    assert any("Loaded your three models; they can be zipped" in s.value for s in at.success)
    accs = [m.value for m in at.metric if m.label.startswith("Test accuracy")]
    assert accs == [f"{a:.1%}" for a in demo_models("digits-three").accuracy]
    # a third model without its task is refused by name, and the loaded models stay
    at.text_input(key="load.task_c").set_value("").run()
    at.button(key="load.upload_button").click().run()
    # the message names the control to fill in
    assert any(
        "**Task text C**" in e.value and "give task C's text" in e.value for e in at.error
    ), [e.value for e in at.error]
    assert ws(at).loaded is loaded
    # back to two: the form drops model C, the next load is a pair
    at.button(key="load.remove_model").click().run()
    assert at.button(key="load.upload_button").label == "Load these two models"
    at.text_input(key="load.task_b").set_value("digits:4-6").run()
    at.button(key="load.upload_button").click().run()
    assert ws(at).loaded.n_tasks == 2 and at.title[0].value == "Load two models"


def test_models_that_do_not_fit_together_are_explained_by_model():
    from mtz_core.models import create_model

    at = new_app()
    at.segmented_control(key="load.source").set_value("Upload checkpoints").run()
    at.button(key="load.add_model").click().run()
    shapes = {"a": (32, 16), "b": (32, 16), "c": (32,)}
    for which, seed in zip("abc", (1, 2, 3)):
        model = create_model("mlp", (1, 8, 8), 5, seed=seed, widths=shapes[which])
        _upload(at, which, _checkpoint(model), "digits:0-4")
    at.button(key="load.upload_button").click().run()
    assert any("cannot be zipped" in e.value and "layer counts differ" in e.value for e in at.error)
    assert ws(at).loaded.n_tasks == 3 and not ws(at).loaded.zippable
    goto(at, "step")
    assert any("cannot be zipped" in e.value for e in at.error)


# --------------------------------------------------------------------------------- costs


def test_costs_of_any_two_models_and_against_the_zipped_network():
    at = goto(load_three(), "costs")
    assert not at.error, [e.value for e in at.error]
    picker = at.selectbox(key="costs.compare")
    assert picker.options == [
        "task A (digits:0-3) vs task B (digits:4-6)",
        "task A (digits:0-3) vs task C (digits:7-9)",
        "task B (digits:4-6) vs task C (digits:7-9)",
        "model C (digits:7-9) vs the zipped network (A and B merged)",
    ]
    heat = figure(at, "fc1: pair costs A vs B")
    assert heat["layout"]["meta"]["axes"] == [
        "neuron of A (digits:0-3)",
        "neuron of B (digits:4-6)",
    ]
    assert "a preview of every share covers two models" in texts(at)
    at.slider(key="plan.costs.fc1").set_value(12).run()
    z = ws(at).zip
    view = z.cost_view(0)
    assert metric(at, "Predicted layer error") == f"{view.predicted(12):.4g}"
    picker.set_value(("pair", 1, 2)).run()
    heat = figure(at, "fc1: pair costs B vs C")
    assert heat["layout"]["meta"]["shape"] == [64, 64]
    assert heat["layout"]["xaxis"]["title"]["text"] == "neuron of C (digits:7-9)"
    marks = next(t for t in heat["data"] if t.get("name", "").startswith("chosen pairs"))
    assert marks["name"] == "chosen pairs (12)"
    at.selectbox(key="costs.compare").set_value(("stage", 2, 2)).run()
    heat = figure(at, "fc1: costs of C vs the zipped network (A and B)")
    assert heat["layout"]["meta"]["shape"] == [12, 64], "the 12 merged units against C's 64"
    assert heat["layout"]["meta"]["axes"] == [
        "unit merged from A and B (in pick order)",
        "neuron of C (digits:7-9)",
    ]
    # zipping at that share records exactly the tuples and the error the page showed
    predicted = view.predicted(12)
    tuples = view.tuples.tuples(12)
    goto(at, "step")
    zip_layer(at, 12)
    rec = ws(at).zip.records[0]
    np.testing.assert_array_equal(rec.pairs, tuples)
    assert rec.predicted_error == pytest.approx(predicted, rel=1e-9)
    goto(at, "costs")
    at.selectbox(key="costs.layer").set_value(0).run()
    at.selectbox(key="costs.compare").set_value(("stage", 2, 2)).run()
    assert figure(at, "C vs the zipped network")["layout"]["meta"]["pairs_shown"] == 12
    assert "fc1 is zipped with 12 shared neurons" in texts(at)


def test_the_stage_costs_are_the_matchings_own(three):
    """Oracle: the engine records each tuple's damped cost as the sum of its stages' costs; the
    page's A–B matrix and C-vs-zipped matrix, read at the applied tuples, add up to it, and
    every pair matrix is symmetric in its two models."""
    state = ZipState(three, SMALL)
    view = state.cost_view(0)
    assert [c for c in comparisons(three.labels)] == [
        ("pair", 0, 1),
        ("pair", 0, 2),
        ("pair", 1, 2),
        ("stage", 2, 2),
    ]
    np.testing.assert_allclose(view.tuples.pair_cost(2, 0), view.tuples.pair_cost(0, 2).T)
    state.step(9)
    zipped = state.cost_view(0)
    rec = state.records[0]
    ab, pairs_ab = zipped.tuples.matrix(("pair", 0, 1), 9)
    stage, pairs_c = zipped.tuples.matrix(("stage", 2, 2), 9)
    np.testing.assert_array_equal(pairs_ab, rec.pairs[:, :2])
    np.testing.assert_array_equal(pairs_c[:, 1], rec.pairs[:, 2])
    np.testing.assert_allclose(ab, rec.cost)
    summed = ab[pairs_ab[:, 0], pairs_ab[:, 1]] + stage[pairs_c[:, 0], pairs_c[:, 1]]
    np.testing.assert_allclose(summed, rec.pair_costs, rtol=1e-9, atol=1e-12)
    assert zipped.predicted(9) == rec.predicted_error


def test_plan_savings_counts_what_the_engine_saves_for_three_models(three):
    """A shared unit is stored once instead of three times: (T − 1)·k·(s·K + 1) per layer,
    against the engine's own count."""
    state = ZipState(three, SMALL)
    ks = [24, 10]
    for k in ks:
        state.step(k)
    result = state.session.result()
    assert sum(plan_savings(three.layers, three.groups, ks)) == result.saved
    assert state.saved_fraction() == pytest.approx(result.saved_fraction)
    assert state.accuracy == state.evaluate() and len(state.accuracy) == 3


class _RefusingEngine:
    """An engine that refuses damping="auto" for three models or more, as the engine did
    before it learned it: how the pages show a refusal does not depend on which one."""

    REASON = "damping='auto' zips two models here (a test's engine)"

    @staticmethod
    def many(models, data, *args, config=None, **kwargs):
        from mtz_core import ZipSession

        if len(models) > 2 and config is not None and config.damping == "auto":
            raise ValueError(_RefusingEngine.REASON)
        return ZipSession.many(models, data, *args, config=config, **kwargs)


@pytest.fixture
def refusing(monkeypatch):
    monkeypatch.setattr("explorer.zipper.ZipSession", _RefusingEngine)
    return _RefusingEngine.REASON


def test_settings_three_models_refuse_are_reset_when_they_are_loaded(three, refusing):
    """Settings the engine refuses for three models go back to the defaults when three models
    are loaded (the zip would not start otherwise)."""
    from explorer.workspace import Workspace

    ws_ = Workspace()
    ws_.set_models(demo_models("digits-mlp"))
    ws_.change_settings(ZipSettings(damping="auto"))  # fine for two models
    ws_.set_models(three)
    assert ws_.settings == ZipSettings()
    with pytest.raises(ValueError, match="a test's engine"):
        ws_.change_settings(ZipSettings(damping="auto"))


def test_three_models_take_auto_damping_and_kept_norms(three):
    """The engine accepts damping="auto" and batch_norm="keep" for three models: nothing is
    marked refused, and a step with auto damping records the factor it chose."""
    from explorer.workspace import Workspace

    for settings in (ZipSettings(damping="auto"), ZipSettings(batch_norm="keep")):
        assert settings_refusal(three, settings) is None
    ws_ = Workspace()
    ws_.set_models(three)
    ws_.change_settings(ZipSettings(damping="auto"))
    assert ws_.settings.damping == "auto"
    at = goto(load_three(), "step")
    assert "Not available for 3 models" not in texts(at)
    at.selectbox(key="settings.damping").set_value("auto").run()
    at.button(key="step.apply_settings").click().run()
    zip_layer(at, 4)
    rec = ws(at).zip.records[0]
    assert rec.damping_scores and rec.damping == min(
        rec.damping_scores, key=lambda d: (rec.damping_scores[d], -d)
    )


# ------------------------------------------------------------------------------ stepping


def test_step_through_three_models_one_colour_per_task_undo_and_records():
    at = goto(load_three(), "step")
    assert metric(at, "Layers zipped") == "0 / 2"
    assert metric(at, "Task C (digits:7-9)") == f"{ws(at).zip.baseline[2]:.1%}"
    zip_layer(at, 20)
    z = ws(at).zip
    assert metric(at, "Layers zipped") == "1 / 2"
    assert metric(at, "Task C (digits:7-9)") == f"{z.accuracy[2]:.1%}"
    assert metric(at, "Parameters saved") == f"{z.saved_fraction():.1%}"
    assert z.records[0].pairs.shape == (20, 3), "one unit of every model per shared unit"
    diagram = figure(at, "The network")
    boxes = [t for t in diagram["data"] if t.get("mode") == "text"]
    hover = [t["hovertext"][0] for t in boxes]
    assert hover[1:5] == ["fc1: 44 A only", "fc1: 20 shared", "fc1: 44 B only", "fc1: 44 C only"]
    fills = [s["fillcolor"] for s in diagram["layout"]["shapes"]]
    assert fills[1:5] == [TASK_COLORS[0], COLORS["shared"], TASK_COLORS[1], TASK_COLORS[2]]
    assert [t["text"][0] for t in boxes][-3:] == ["head A", "head B", "head C"]
    assert fills[-3:] == list(TASK_COLORS[:3])
    legend = [t["name"] for t in diagram["data"] if t.get("name")]
    assert legend == ["shared", "A only", "B only", "C only"]
    history = at.dataframe[0].value
    assert list(history["step"]) == ["zip fc1"] and "accuracy C" in history.columns
    # the Sharing page: every model's own units, and the tuples
    goto(at, "sharing")
    bars = figure(at, "Neurons per layer")
    assert (
        next(t for t in bars["data"] if t["name"] == "C only")["marker"]["color"]
        == (TASK_COLORS[2])
    )
    assert figure(at, "Matching: 20 tuples of 64 A × 64 B × 64 C neurons")
    table = next(d.value for d in at.dataframe if "C neuron" in d.value.columns)
    assert list(table["C neuron"]) == list(z.records[0].pairs[:, 2])
    # undo, then the rest in the background with the planned shares
    goto(at, "step")
    at.button(key="step.undo").click().run()
    assert metric(at, "Layers zipped") == "0 / 2" and z.accuracy == z.baseline
    at.button(key="step.run_all").click().run()
    wait_job(at)
    assert metric(at, "Layers zipped") == "2 / 2"
    # fc1 as set on the slider, fc2 by the default plan: half of the narrowest model's units
    assert [r.k for r in z.records] == [20, 16]
    assert [r.pairs.shape[1] for r in z.records] == [3, 3]


def test_settings_the_engine_refuses_for_three_models_are_shown_with_its_reason(three, refusing):
    """The page asks the engine (`ZipSession.many`), so it shows whatever the engine refuses
    for three models, in its words (here a test's engine refusing damping="auto": the real
    one refuses nothing today)."""
    auto = settings_refusal(three, ZipSettings(damping="auto"))
    assert auto == refusing
    assert settings_refusal(three, ZipSettings(batch_norm="keep")) is None
    at = goto(load_three(), "step")
    body = texts(at)
    assert "Not available for 3 models (the engine's reasons)" in body
    assert f"**damping auto**: {auto}" in body
    assert "auto — not for 3 models" in at.selectbox(key="settings.damping").options
    norms = at.selectbox(key="settings.batch_norm").options
    assert "keep" in norms and "batch norm keep" not in body
    at.selectbox(key="settings.damping").set_value("auto — not for 3 models").run()
    at.button(key="step.apply_settings").click().run()
    assert any(auto in e.value for e in at.error)
    assert ws(at).settings == ZipSettings(), "the refused setting is not applied"
    zip_layer(at, 4)  # the zip goes on with the settings it had
    assert len(ws(at).zip.records) == 1
    # the same choices are fine for two models
    at2 = goto(new_app(), "step")
    assert "Not available" not in texts(at2)
    assert "auto" in at2.selectbox(key="settings.damping").options


def test_retraining_three_tasks_reports_every_task():
    at = goto(load_three(), "step")
    zip_layer(at, 64)
    goto(at, "retrain")
    at.number_input(key="retrain.iterations").set_value(10).run()
    at.button(key="retrain.start").click().run()
    wait_job(at)
    z = ws(at).zip
    assert z.records[-1].retraining.iterations == 10
    assert any("Retrained 10 iterations" in s.value and "task C" in s.value for s in at.success)
    assert metric(at, "Task C accuracy") == f"{z.accuracy[2]:.1%}"
    (table,) = at.dataframe
    assert table.value.iloc[0]["task C before → after"].endswith(f"→ {z.accuracy[2]:.1%}")
    losses = ws(at).last_losses["retrain"]
    assert len(losses[0]) == 1 + 3, "(iteration, loss A, loss B, loss C)"


# ------------------------------------------------------------------------------ trade-off


def test_tradeoff_of_three_models_counts_tunes_and_sweeps():
    at = goto(load_three(), "tradeoff")
    assert at.segmented_control(key="trade.y").options == [
        "mean of A, B and C",
        "task A (digits:0-3)",
        "task B (digits:4-6)",
        "task C (digits:7-9)",
    ]
    at.slider(key="plan.tune.fc1").set_value(10).run()
    at.slider(key="plan.tune.fc2").set_value(4).run()
    loaded = ws(at).loaded
    # every shared unit is stored once instead of three times
    saved = 2 * (10 * (64 + 1) + 4 * (10 + 1))
    assert metric(at, "Parameters saved") == f"{saved:,}"
    assert sum(plan_savings(loaded.layers, loaded.groups, [10, 4])) == saved
    at.button(key="tune.evaluate").click().run()
    wait_job(at)
    point = ws(at).points[-1]
    assert point["saved_fraction"] == pytest.approx(saved / sum(loaded.params))
    assert point["mean_acc"] == pytest.approx(
        (point["acc_a"] + point["acc_b"] + point["acc_c"]) / 3
    )
    # a small sweep through mtz_core.sweep.sweep_many
    at.multiselect(key="sweep.shares").set_value([0.5]).run()
    at.multiselect(key="sweep.methods").set_value(["mtz"]).run()
    at.number_input(key="sweep.calib").set_value(128).run()
    at.button(key="sweep.run").click().run()
    wait_job(at, 240)
    df = ws(at).sweep
    assert list(df["method"]) == ["original", "mtz"]
    assert {"acc_c", "params_c"} <= set(df.columns)
    at.segmented_control(key="trade.y").set_value("acc_c").run()
    fig = figure(at, "Accuracy vs parameters saved")
    assert fig["layout"]["yaxis"]["title"]["text"] == "accuracy task C"
    assert {"original", "mtz", "Pareto front", "yours (evaluated plan)"} <= {
        t.get("name") for t in fig["data"]
    }


def test_best_plan_within_x_points_for_three_models_then_other_models_drop_it():
    from mtz_core import tune_shares

    at = goto(load_three(), "tradeoff")
    at.number_input(key="best.drop").set_value(1.0).run()
    at.multiselect(key="best.grid").set_value([0.5, 1.0]).run()
    at.number_input(key="best.calib").set_value(128).run()
    at.button(key="best.run").click().run()
    wait_job(at)
    loaded = ws(at).loaded
    plan = tune_shares(
        loaded.nets, loaded.tasks, max_drop_points=1.0, grid=(0.5, 1.0), calib_samples=128
    )
    assert plan.saved_fraction > 0
    shown = next(df.value for df in at.dataframe if "predicted error alone" in df.value.columns)
    assert dict(zip(shown["layer"], shown["share"])) == plan.shares
    tasks = next(df.value for df in at.dataframe if "points lost" in df.value.columns)
    assert len(tasks) == 3
    assert list(tasks["points lost"]) == pytest.approx(list(plan.losses_points))
    assert all(loss <= 1.0 + 1e-9 for loss in tasks["points lost"])
    assert [m.label for m in at.metric if m.label.startswith("Validation")] == [
        f"Validation {x} (tuned plan)" for x in "ABC"
    ]
    assert metric(at, "Saved (tuned plan)") == f"{plan.saved_fraction:.2%}"
    widths = {g["group"]: min(loaded.widths(g)) for g in loaded.groups}
    want = {n: int(plan.shares[n] * widths[n]) for n in widths}
    assert {n: at.slider(key=f"plan.tune.{n}").value for n in widths} == want
    fig = figure(at, "Accuracy vs parameters saved")
    tuned = next(t for t in fig["data"] if t.get("name") == "tuned plan")
    assert tuned["marker"]["symbol"] == "hexagram"
    point = ws(at).points[-1]
    assert point["series"] == "tuned plan" and point["saved_fraction"] == plan.saved_fraction
    assert {"acc_a", "acc_b", "acc_c"} <= set(point)
    # other models: the plan (and its point) is gone
    goto(at, "load")
    at.selectbox(key="load.demo").set_value("digits-mlp").run()
    at.button(key="load.demo_button").click().run()
    goto(at, "tradeoff")
    assert ws(at).tuned is None
    assert not any(m.label == "Saved (tuned plan)" for m in at.metric)
    fig = figure(at, "Accuracy vs parameters saved")
    assert "tuned plan" not in {t.get("name") for t in fig["data"]}


# --------------------------------------------------------------------------------- recipes


def test_a_three_model_recipe_round_trips_through_the_app():
    at = goto(load_three(), "step")
    zip_layer(at, 7)
    zip_layer(at, 5)
    z = ws(at).zip
    recipe = build_recipe(ws(at).loaded, z)
    assert recipe["format_version"] == 2
    assert [m["task"]["task"] for m in recipe["models"]] == [c["task"] for c in CARDS]
    assert recipe["hidden_layers"] == [
        {"name": "fc1", "widths": [64, 64, 64]},
        {"name": "fc2", "widths": [32, 32, 32]},
    ]
    other = goto(new_app(), "keep")  # a fresh session on the default pair
    other.file_uploader(key="keep.recipe").set_value(
        ("mtz_recipe.json", recipe_json(recipe).encode(), "application/json")
    ).run()
    other.button(key="keep.import").click().run()
    assert any("Loaded the demo digits-three" in i.value for i in other.info)
    wait_job(other)
    z2 = ws(other).zip
    assert ws(other).loaded.n_tasks == 3
    for r1, r2 in zip(z.records, z2.records):
        np.testing.assert_array_equal(r1.pairs, r2.pairs)
    x = ws(other).loaded.tasks[2].test[0][:16]
    torch.testing.assert_close(z2.session.model(x, 2), z.session.model(x, 2))
    assert any("Rebuilt 2 layer(s)" in s.value and "task C" in s.value for s in other.success)
    labels = [b.label for b in other.get("download_button")]
    assert "Task C network (digits:7-9)" in labels


def test_a_version_1_recipe_of_two_models_still_loads(three):
    """A recipe as the app wrote it before three models (models and tasks by a/b, n_a/n_b)."""
    pair = demo_models("digits-mlp")
    old = {
        "format": "mtz-recipe",
        "format_version": 1,
        "title": pair.title,
        "models": {x: {"source": "demo", "name": "digits-mlp"} for x in "ab"},
        "tasks": {
            "a": {"source": "builtin", "task": "digits:0-4", "seed": 0},
            "b": {"source": "builtin", "task": "digits:5-9", "seed": 0},
        },
        "settings": {"method": "mtz", "damping": 1.0, "calib_samples": 256},
        "hidden_layers": [{"name": "fc1", "n_a": 300, "n_b": 300},
                          {"name": "fc2", "n_a": 100, "n_b": 100}],
        "layers": [{"name": "fc1", "n_a": 300, "n_b": 300, "pairs": [[3, 5], [7, 1]]}],
    }  # fmt: skip
    recipe = parse_recipe(json.dumps(old))
    assert recipe["format_version"] == 2 and len(recipe["models"]) == 2
    assert recipe["models"][1]["task"]["task"] == "digits:5-9"
    state = rebuild(NullJob(), pair, recipe)
    np.testing.assert_array_equal(state.records[0].pairs, [[3, 5], [7, 1]])
    with pytest.raises(ValueError, match="this recipe is for 2 models, 3 are loaded"):
        rebuild(NullJob(), three, recipe)


# ------------------------------------------------------------------- what needs two models


def test_pages_say_what_needs_two_models():
    at = goto(load_three(), "learn")
    assert not at.error, [e.value for e in at.error]
    body = texts(at)
    assert "The formulas below are written for two models" in body
    assert "6 · The other 1 model" in [h.value for h in at.subheader]
    assert "not your set of 3 models" in body and "(1, 8, 8)" in body
    assert "**C** on `digits:7-9`" in body
    goto(at, "step")
    assert "No preview" not in texts(at), "the predicted error is computed for the share set"
    assert at.slider(key="plan.step.fc1").max == 64
