"""The Streamlit app, headless (AppTest): every page and the main flows, asserting on what the
pages show (metrics, messages, figure data), not only that nothing crashed."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")
from app_helpers import (  # noqa: E402
    figure,
    figures,
    goto,
    metric,
    new_app,
    texts,
    values,
    wait_job,
    ws,
    zip_layer,
)
from streamlit.testing.v1 import AppTest  # noqa: E402

PAGES = ["load", "costs", "sharing", "step", "retrain", "tradeoff", "learn", "keep"]
DEMO = Path(__file__).resolve().parents[1] / "assets" / "demos" / "digits-mlp"
#: the demo pair's test accuracies as the Load page shows them (read from the cards)
DEMO_ACC = [
    f"{100 * json.loads((DEMO / f'{w}.json').read_text())['accuracy']['test']:.1f}%" for w in "ab"
]


# ------------------------------------------------------------------------------- start


def test_start_page_shows_the_demo_pair_ready():
    at = new_app()
    assert at.title[0].value == "Load two models"
    assert [m.value for m in at.metric if m.label.startswith("Test accuracy")] == DEMO_ACC
    assert metric(at, "Parameters A") == "50,105"
    assert any("can be zipped" in s.value and "fc1, fc2" in s.value for s in at.success)
    table = at.dataframe[0].value
    assert list(table["layer"]) == ["fc1", "fc2", "fc3"]
    assert list(table["width A"]) == [300, 100, 5]


@pytest.mark.parametrize("page", PAGES[1:])
def test_every_page_renders_on_the_demo(page):
    at = goto(new_app(), page)
    assert not at.error, [e.value for e in at.error]
    assert at.title, "every page has a title"


def test_costs_page_heatmap_curve_and_share_slider():
    at = goto(new_app(), "costs")
    heat = figure(at, "fc1: pair costs")
    meta = heat["layout"]["meta"]
    assert meta["shape"] == [300, 300]
    assert max(meta["cells"]) <= 256, "never more than 256 × 256 cells"
    assert meta["block"] == [2, 2]
    assert any(t.get("name", "").startswith("chosen pairs (150)") for t in heat["data"])
    assert metric(at, "Shared neurons") == "150 / 300"
    z = ws(at).zip
    view = z.cost_view(0)
    assert metric(at, "Predicted layer error") == f"{view.predicted(150):.4g}"
    # moving the share redraws from the cached matrix (no new Hessian)
    before = z.session._cache.copy()
    at.slider(key="plan.costs.fc1").set_value(40).run()  # speed: benchmarks/app_latency.py
    assert metric(at, "Shared neurons") == "40 / 300"
    assert ws(at).plan["fc1"] == 40
    assert z.session._cache.keys() == before.keys()
    curve = figure(at, "predicted error vs shared neurons")
    marker = [t for t in curve["data"] if t.get("name", "").startswith("share 40")]
    assert marker and list(values(marker[0]["x"])) == [40]
    # matched order and the linear scale
    at.segmented_control(key="costs.order").set_value("matched").run()
    at.segmented_control(key="costs.scale").set_value("linear").run()
    heat = figure(at, "fc1: pair costs")
    assert heat["layout"]["meta"]["order"] == "matched"
    assert heat["layout"]["meta"]["scale"] == "linear"


def test_costs_page_later_layer_needs_earlier_or_estimate():
    at = goto(new_app(), "costs")
    at.selectbox(key="costs.layer").set_value(1).run()
    assert any("depend on how the layers before it" in i.value for i in at.info)
    at.button(key="costs.estimate").click().run()
    wait_job(at)
    at.run()
    assert any("Estimate" in w.value for w in at.warning)
    assert figure(at, "fc2: pair costs")["layout"]["meta"]["shape"] == [100, 100]


# ------------------------------------------------------------------------------ stepping


def test_zip_every_layer_then_undo_and_reset():
    at = goto(new_app(), "step")
    assert metric(at, "Layers zipped") == "0 / 2"
    zip_layer(at, 150)
    z = ws(at).zip
    assert metric(at, "Layers zipped") == "1 / 2"
    assert metric(at, "Parameters saved") == f"{z.saved_fraction():.1%}"
    assert metric(at, "Task A (digits:0-4)") == f"{z.accuracy[0]:.1%}"
    assert metric(at, "Layer error of fc1") == f"{z.records[0].predicted_error:.4g}"
    assert any("Zipped fc1 with 150 shared neurons" in s.value for s in at.success)
    zip_layer(at, 100)
    assert metric(at, "Layers zipped") == "2 / 2"
    assert z.saved_fraction() == pytest.approx(z.session.result().saved_fraction)
    assert any("Every hidden layer is zipped" in m.value for m in at.markdown)
    diagram = figure(at, "The network")
    texts_in = [t["text"][0] for t in diagram["data"] if t.get("mode") == "text"]
    assert "150" in texts_in and "100" in texts_in  # shared boxes of fc1 and fc2
    history = at.dataframe[0].value
    assert list(history["step"]) == ["zip fc1", "zip fc2"]
    # the sharing page shows the counts and the matching
    goto(at, "sharing")
    bars = figure(at, "Neurons per layer")
    shared = next(t for t in bars["data"] if t["name"] == "shared")
    assert list(values(shared["y"])) == [150, 100]
    a_only = next(t for t in bars["data"] if t["name"] == "A only")
    assert list(values(a_only["y"])) == [150, 0]  # of 300 and 100 neurons
    assert figure(at, "Matching: 150 pairs")["layout"]["meta"]["pairs"] == 150
    weights = figure(at, "fc1: pair 1 of 150")
    assert len([t for t in weights["data"] if t["type"] == "heatmap"]) == 3
    # costs of a zipped layer: its applied pairs, and predicted vs measured
    goto(at, "costs")
    at.selectbox(key="costs.layer").set_value(0).run()
    assert figure(at, "fc1: pair costs")["layout"]["meta"]["pairs_shown"] > 0
    errs = figure(at, "predicted vs measured")
    assert [t["name"] for t in errs["data"]][:2] == [
        "predicted (Hessian samples)",
        "measured (held-out)",
    ]
    # undo and reset
    goto(at, "step")
    at.button(key="step.undo").click().run()
    assert metric(at, "Layers zipped") == "1 / 2"
    assert any("Undid fc2" in i.value for i in at.info)
    at.button(key="step.reset").click().run()
    assert metric(at, "Layers zipped") == "0 / 2"
    assert metric(at, "Parameters saved") == "0.0%"


def test_zip_all_remaining_runs_in_the_background():
    at = goto(new_app(), "step")
    at.button(key="step.run_all").click().run()
    wait_job(at)
    assert metric(at, "Layers zipped") == "2 / 2"
    assert any("Zipping the remaining layers: done" in s.value for s in at.success)


def test_sessions_do_not_see_each_other():
    one = goto(new_app(), "step")
    two = goto(new_app(), "step")
    zip_layer(one, 50)
    two.run()
    assert metric(one, "Layers zipped") == "1 / 2"
    assert metric(two, "Layers zipped") == "0 / 2"
    assert ws(one) is not ws(two)
    assert ws(one).pair is ws(two).pair, "the demo pair is one shared read-only resource"


# ----------------------------------------------------------------------------- retraining


def test_retrain_runs_in_a_worker_and_the_page_keeps_answering_then_cancel_restores():
    at = goto(new_app(), "step")
    zip_layer(at, 200)
    z = ws(at).zip
    before = {k: v.clone() for k, v in z.session.model.state_dict().items()}
    acc_before = z.accuracy
    goto(at, "retrain")
    at.number_input(key="retrain.iterations").set_value(1_000_000).run()
    at.button(key="retrain.start").click().run()
    job = ws(at).job
    assert job.kind == "retrain" and job.running
    # the page keeps answering while the worker runs: other pages render, figures included
    while not job.losses:
        time.sleep(0.05)
    goto(at, "costs")
    assert not at.error
    at.selectbox(key="costs.layer").set_value(0).run()
    assert figure(at, "fc1: pair costs")["layout"]["meta"]["pairs_shown"] > 0
    assert job.running, "the job was still running while the pages answered"
    goto(at, "retrain")
    assert at.get("progress"), "the running job shows a progress bar"
    assert any(f["layout"]["title"]["text"] == "Training loss" for f in figures(at))
    loss = figure(at, "Training loss")
    assert {t.get("name") for t in loss["data"]} >= {"task A loss", "task B loss"}
    assert at.button(key="retrain.start").disabled
    at.button(key="job.cancel").click().run()
    wait_job(at)
    assert any("cancelled" in w.value for w in at.warning)
    after = z.session.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "cancel restores the weights"
    assert z.accuracy == acc_before
    assert z.records[-1].retraining is None


def test_retrain_a_few_iterations_adds_a_point():
    at = goto(new_app(), "step")
    zip_layer(at, 300)
    goto(at, "retrain")
    at.number_input(key="retrain.iterations").set_value(25).run()
    at.button(key="retrain.start").click().run()
    wait_job(at)
    assert any("Retrained 25 iterations" in s.value for s in at.success)
    z = ws(at).zip
    assert z.records[-1].retraining.iterations == 25
    assert z.retrain_log[0][0]["iterations"] == 25
    assert metric(at, "Task A accuracy") == f"{z.accuracy[0]:.1%}"
    assert len(ws(at).points) == 2  # the zip, then the retraining
    (table,) = at.dataframe  # one table, in percent, before and after
    row = table.value.iloc[0]
    assert row["after layer"] == z.records[-1].name and row["iterations"] == 25
    assert row["task A before → after"].endswith(f"→ {z.accuracy[0]:.1%}")
    goto(goto(at.run(), "costs"), "retrain")  # the outcome survives reruns and pages
    assert any("Retrained 25 iterations" in s.value for s in at.success)
    at.button(key="job.dismiss").click().run()
    assert not any("Retrained 25 iterations" in s.value for s in at.success)


def test_cuda_without_a_gpu_is_an_error_and_nothing_is_lost():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    at = goto(new_app(), "step")
    zip_layer(at, 100)
    goto(at, "retrain")
    at.selectbox(key="retrain.device").set_value("cuda").run()
    at.button(key="retrain.start").click().run()
    assert any("no CUDA GPU" in e.value and "cpu" in e.value for e in at.error)
    assert len(ws(at).zip.records) == 1 and ws(at).job is None


# ------------------------------------------------------------------------------ trade-off


def test_ratio_tuning_counts_parameters_live_and_evaluates():
    at = goto(new_app(), "tradeoff")
    at.slider(key="plan.tune.fc1").set_value(120).run()
    at.slider(key="plan.tune.fc2").set_value(60).run()
    pair = ws(at).pair
    saved = 120 * (64 * 1 + 1) + 60 * (120 * 1 + 1)
    assert metric(at, "Parameters saved") == f"{saved:,}"
    assert metric(at, "Fraction of parameters saved") == f"{saved / sum(pair.params):.2%}"
    at.button(key="tune.evaluate").click().run()
    wait_job(at)
    point = ws(at).points[-1]
    assert point["series"] == "yours (evaluated plan)"
    assert point["saved_fraction"] == pytest.approx(saved / sum(pair.params))
    fig = figure(at, "Accuracy vs parameters saved")
    names = [t.get("name") for t in fig["data"]]
    assert "yours (evaluated plan)" in names and "Pareto front" in names
    # the layers ahead now have costs: the predicted error is live
    assert metric(at, "Predicted error (Σ layers)") != "–"


@pytest.mark.slow
def test_tiny_sweep_with_baselines_and_pareto_front():
    at = goto(new_app(), "tradeoff")
    at.multiselect(key="sweep.shares").set_value([0.5]).run()
    at.multiselect(key="sweep.methods").set_value(["mtz", "random"]).run()
    at.number_input(key="sweep.calib").set_value(128).run()
    at.button(key="sweep.run").click().run()
    wait_job(at, 120)
    df = ws(at).sweep
    assert list(df["method"]) == ["original", "mtz", "random"]
    fig = figure(at, "Accuracy vs parameters saved")
    names = {t.get("name") for t in fig["data"]}
    assert {"original", "mtz", "random", "Pareto front"} <= names
    mtz = next(t for t in fig["data"] if t.get("name") == "mtz")
    assert values(mtz["x"])[0] == pytest.approx(
        float(df.loc[df.method == "mtz", "saved_fraction"].iloc[0])
    )
    assert any("Sweep done: 3 configurations" in s.value for s in at.success)


def test_bad_sweep_settings_are_an_error():
    at = goto(new_app(), "tradeoff")
    at.multiselect(key="sweep.methods").set_value([]).run()
    at.button(key="sweep.run").click().run()
    assert any("at least one method" in e.value for e in at.error)
    assert ws(at).job is None


# ------------------------------------------------------------------ best plan within x points


def find_best_plan(at: AppTest, x: float, grid: list[float], calib: int = 128) -> None:
    """On the Trade-off page: set the budget, the grid and the samples, press the button."""
    at.number_input(key="best.drop").set_value(x).run()
    at.multiselect(key="best.grid").set_value(grid).run()
    at.number_input(key="best.calib").set_value(calib).run()
    at.button(key="best.run").click().run()
    assert not at.exception, [e.value for e in at.exception]


def table(at: AppTest, column: str):
    """The first dataframe on the page with `column`."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a column {column!r}")


def trace(at: AppTest, name: str) -> dict:
    fig = figure(at, "Accuracy vs parameters saved")
    found = [t for t in fig["data"] if t.get("name") == name]
    assert found, [t.get("name") for t in fig["data"]]
    return found[0]


def test_best_plan_within_x_points_is_the_engines_in_the_sliders_and_on_the_chart():
    from explorer.zipper import plan_savings
    from mtz_core import tune_shares

    at = goto(new_app(), "tradeoff")
    sliders = {n: at.slider(key=f"plan.tune.{n}").value for n in ("fc1", "fc2")}
    find_best_plan(at, 1.0, [0.5, 1.0])
    job = ws(at).job
    assert job.kind == "tune"
    wait_job(at)
    loaded = ws(at).loaded
    # the oracle: the engine called directly with the same settings
    plan = tune_shares(
        loaded.nets, loaded.tasks, max_drop_points=1.0, grid=(0.5, 1.0), calib_samples=128
    )
    shown = table(at, "predicted error alone")
    assert dict(zip(shown["layer"], shown["share"])) == plan.shares
    for name, share, err, saved in zip(
        shown["layer"],
        shown["share"],
        shown["predicted error alone"],
        shown["parameters saved alone"],
    ):
        assert (err, saved) == pytest.approx(plan.estimates[name][share])
    tasks = table(at, "points lost")
    assert list(tasks["tuned plan (val)"]) == pytest.approx(list(plan.val_accuracy))
    assert list(tasks["original (val)"]) == pytest.approx(list(plan.original_val))
    assert list(tasks["points lost"]) == pytest.approx(list(plan.losses_points))
    assert all(loss <= 1.0 + 1e-9 for loss in tasks["points lost"])
    assert metric(at, "Saved (tuned plan)") == f"{plan.saved_fraction:.2%}"
    assert metric(at, "Plans tried") == str(len(plan.trials))
    assert any("Best plan within 1 point saves" in s.value for s in at.success)
    # the per-layer controls hold the plan's shares (a fraction of the narrowest width)
    widths = {g["group"]: min(loaded.widths(g)) for g in loaded.groups}
    want = {n: int(plan.shares[n] * widths[n]) for n in widths}
    assert {n: at.slider(key=f"plan.tune.{n}").value for n in widths} == want != sliders
    assert ws(at).plan == want
    saved = sum(plan_savings(loaded.layers, loaded.groups, [want["fc1"], want["fc2"]]))
    assert metric(at, "Parameters saved") == f"{saved:,}"
    # its own marker on the Trade-off chart, at the plan's saved fraction
    tuned = trace(at, "tuned plan")
    assert tuned["marker"]["symbol"] == "hexagram"
    assert values(tuned["x"]) == pytest.approx([plan.saved_fraction])
    assert ws(at).points[-1]["series"] == "tuned plan"
    # other zip settings: the plan is no longer shown
    goto(at, "step")
    at.number_input(key="settings.calib").set_value(1024).run()
    at.button(key="step.apply_settings").click().run()
    goto(at, "tradeoff")
    assert ws(at).settings.calib_samples == 1024 and ws(at).current_tuned is None
    assert not any(m.label == "Saved (tuned plan)" for m in at.metric)
    assert not any("Tuned plan" in m.value for m in at.markdown)


def test_cancelling_the_search_keeps_the_best_plan_so_far():
    at = goto(new_app(), "tradeoff")
    find_best_plan(at, 1.0, [0.25, 0.5, 0.75, 1.0])
    job = ws(at).job
    t0 = time.perf_counter()
    while job.running and job.done < 1:  # the first plan is scored
        assert time.perf_counter() - t0 < 60
        time.sleep(0.02)
    at.button(key="job.cancel").click().run()
    wait_job(at)
    tuned = ws(at).current_tuned
    assert job.status == "cancelled" and tuned is not None and tuned.cancelled
    plan = tuned.plan
    kept = [t for t in plan.trials if t.accepted]
    assert kept, "the first plan tried on the demo keeps every task"
    assert plan.shares == kept[-1].shares and plan.result is not None
    assert all(loss <= 1.0 + 1e-9 for loss in plan.losses_points)
    assert any("best plan found so far" in w.value for w in at.warning)
    assert dict(zip(table(at, "share")["layer"], table(at, "share")["share"])) == plan.shares
    assert {n: at.slider(key=f"plan.tune.{n}").value for n in plan.shares} == tuned.ks
    assert values(trace(at, "tuned plan")["x"]) == pytest.approx([plan.saved_fraction])


def _tune_stand_in(*, cancelled: bool):
    """A stand-in for `mtz_core.tune_shares` with no plan: the budget admits no share (one
    rejected trial), or (`cancelled`) it reads validation data until the job's cancel reaches
    it, as the engine does while it measures the originals."""
    from mtz_core import TunePlan
    from mtz_core.tune import TuneTrial

    def stand_in(models, tasks, *, max_drop_points, cancel, **_):
        original = (0.99,) * len(models)
        trials = [TuneTrial({"fc1": 0.0, "fc2": 0.5}, 0.1, (0.99, 0.95), 0.001, False, 0.1)]
        if cancelled:
            t0 = time.perf_counter()
            while not cancel.cancelled:
                assert time.perf_counter() - t0 < 60, "the job's cancel never reached the search"
                for t in tasks:
                    t.batches("val", 256)
                time.sleep(0.01)
            trials = []
        shares = {"fc1": 0.0, "fc2": 0.0}
        return TunePlan(
            shares, 0.0, original, original, 0.0, max_drop_points, trials, 0.5, None, cancelled
        )

    return stand_in


def test_a_budget_no_share_fits_is_explained_with_the_control_to_change(monkeypatch):
    import explorer.tuning

    monkeypatch.setattr(explorer.tuning, "tune_shares", _tune_stand_in(cancelled=False))
    at = goto(new_app(), "tradeoff")
    before = dict(ws(at).plan)
    find_best_plan(at, 0.5, [0.5])
    wait_job(at)
    assert ws(at).job.status == "failed"
    errors = " ".join(e.value for e in at.error)
    assert "No share fits within 0.5 points" in errors
    assert "4.0 points of validation accuracy on task B" in errors
    assert "Most points lost per task" in errors and "Shares tried per group" in errors
    assert ws(at).plan == before, "the per-layer plan is unchanged"
    assert not any(p["series"] == "tuned plan" for p in ws(at).points)


def test_a_search_cancelled_before_any_plan_says_none_was_found(monkeypatch):
    import explorer.tuning

    monkeypatch.setattr(explorer.tuning, "tune_shares", _tune_stand_in(cancelled=True))
    at = goto(new_app(), "tradeoff")
    before = dict(ws(at).plan)
    find_best_plan(at, 1.0, [0.5])
    assert ws(at).job.running
    at.button(key="job.cancel").click().run()
    wait_job(at)
    assert ws(at).job.status == "cancelled"
    said = texts(at) + " ".join(e.value for e in at.error)
    assert "Cancelled before a plan within 1 point was found" in said
    assert "Find the best plan" in said
    assert ws(at).plan == before


def test_bad_best_plan_settings_name_the_control():
    at = goto(new_app(), "tradeoff")
    at.multiselect(key="best.grid").set_value([]).run()
    at.button(key="best.run").click().run()
    assert any("Shares tried per group" in e.value for e in at.error)
    assert ws(at).job is None


# ------------------------------------------------------------------------------ keep / learn


def test_recipe_export_and_reimport_rebuilds_the_same_network():
    from explorer.recipe import build_recipe, recipe_json, task_bytes, zipped_bytes
    from mtz_core import ZippedNet

    at = goto(new_app(), "step")
    zip_layer(at, 120)
    at.number_input(key="step.rt_its").set_value(15).run()
    at.button(key="step.retrain").click().run()
    wait_job(at)
    zip_layer(at, 40)
    z = ws(at).zip
    goto(at, "keep")
    assert at.get("download_button"), "recipe and model downloads are offered"
    text = recipe_json(build_recipe(ws(at).pair, z))
    # the downloads: the zipped network loads back, each task's network is safetensors
    blob = zipped_bytes(z)
    path = Path(__import__("tempfile").mkdtemp()) / "z.safetensors"
    path.write_bytes(blob)
    net = ZippedNet.load(path)
    x = ws(at).pair.task_a.test[0][:8]
    assert torch.allclose(net(x, 0), z.session.model(x, 0), atol=1e-6)
    from safetensors.torch import load

    assert load(task_bytes(z, 1))

    other = goto(new_app(), "keep")
    other.file_uploader(key="keep.recipe").set_value(
        ("mtz_recipe.json", text.encode(), "application/json")
    ).run()
    other.button(key="keep.import").click().run()
    wait_job(other)
    z2 = ws(other).zip
    assert [r.name for r in z2.records] == ["fc1", "fc2"]
    for r1, r2 in zip(z.records, z2.records):
        assert np.array_equal(r1.pairs, r2.pairs)
    assert z2.retrain_log[0][0]["iterations"] == 15
    x = ws(other).pair.task_b.test[0][:16]
    assert torch.allclose(z2.session.model(x, 1), z.session.model(x, 1), atol=1e-5)
    assert any("Rebuilt 2 layer(s)" in s.value for s in other.success)


def test_bad_recipe_is_an_error_and_keeps_the_work():
    at = goto(new_app(), "step")
    zip_layer(at, 30)
    goto(at, "keep")
    at.file_uploader(key="keep.recipe").set_value(("x.json", b"{not json", "application/json"))
    at.run()
    at.button(key="keep.import").click().run()
    assert any("not a JSON recipe" in e.value for e in at.error)
    wrong = {"format": "mtz-recipe", "format_version": 1, "models": {}, "tasks": {},
             "settings": {}, "hidden_layers": [{"name": "fc1", "n_a": 9, "n_b": 9}],
             "layers": []}  # fmt: skip
    at.file_uploader(key="keep.recipe").set_value(
        ("w.json", json.dumps(wrong).encode(), "application/json")
    )
    at.run()
    at.button(key="keep.import").click().run()
    assert any("for other models" in e.value for e in at.error)
    assert len(ws(at).zip.records) == 1
    # a recipe for another demo never replaces work in progress
    other = {**wrong, "models": {k: {"source": "demo", "name": "digits-conv"} for k in "ab"}}
    at.file_uploader(key="keep.recipe").set_value(
        ("c.json", json.dumps(other).encode(), "application/json")
    )
    at.run()
    at.button(key="keep.import").click().run()
    assert any("Load digits-conv on Load models first" in e.value for e in at.error)
    assert len(ws(at).zip.records) == 1 and ws(at).pair.title.startswith("LeNet-300-100")


def test_learn_page_uses_the_loaded_pairs_numbers():
    at = goto(new_app(), "learn")
    assert len(at.latex) >= 4
    body = texts(at)
    assert "digits:0-4" in body and "50,105" in body
    assert "**65** entries" in body  # fc1: 64 inputs + 1
    view = ws(at).zip.cost_view(0)
    i, j = np.unravel_index(int(np.argmin(view.cost)), view.cost.shape)
    assert f"d[{i}, {j}] = {view.cost[i, j]:.4g}" in body
    assert "300 · (64 · 1 + 1) = **19,500**" in body
    bounds = figures(at)[-1]
    contours = [t for t in bounds["data"] if t["type"] == "contour"]
    assert len(contours) == 3 * 2 * 2  # 3 stages × 2 tasks × (shading + boundary)
    titles = [a["text"] for a in bounds["layout"]["annotations"]]
    assert "after fc2 (16/16 shared) — task B: circles" in titles


# ------------------------------------------------------------------------------- loading


def _checkpoint_bytes(model) -> bytes:
    import tempfile

    from mtz_core.checkpoints import save_checkpoint

    path = Path(tempfile.mkdtemp()) / "m.safetensors"
    save_checkpoint(model, None, path)
    return path.read_bytes()


def _upload(at, which, name, data, task="digits:0-4", arch="(from the file's card)", opts=""):
    at.segmented_control(key="load.source").set_value("Upload checkpoints").run()
    at.file_uploader(key=f"load.file_{which}").set_value((name, data, "application/octet-stream"))
    at.selectbox(key=f"load.arch_{which}").set_value(arch)
    at.text_input(key=f"load.opts_{which}").set_value(opts)
    at.text_input(key=f"load.task_{which}").set_value(task)
    at.run()


def test_upload_two_checkpoints_with_tasks():
    from mtz_core.demo import load_demo

    demo = load_demo("digits-mlp")
    at = new_app()
    _upload(at, "a", "a.safetensors", _checkpoint_bytes(demo.model_a), "digits:0-4")
    _upload(at, "b", "b.pt", _state_dict_bytes(demo.model_b), "digits:5-9", "lenet300")
    at.button(key="load.upload_button").click().run()
    assert not at.error, [e.value for e in at.error]
    pair = ws(at).pair
    assert pair.models["a"]["name"] == "a.safetensors" and pair.zippable
    assert [m.value for m in at.metric if m.label.startswith("Test accuracy")] == DEMO_ACC


def _state_dict_bytes(model) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def test_wrong_file_and_incompatible_models_are_explained():
    from mtz_core.models import create_model

    at = new_app()
    title = ws(at).pair.title
    _upload(at, "a", "a.pt", b"this is not a checkpoint")
    _upload(at, "b", "b.pt", b"nor this", "digits:5-9")
    at.button(key="load.upload_button").click().run()
    assert any(
        "model A (a.pt)" in e.value and "not a PyTorch checkpoint" in e.value for e in at.error
    )
    assert ws(at).pair.title == title, "a failed load keeps the loaded pair"
    # two models that load but cannot be zipped: different depths
    a = create_model("mlp", (1, 8, 8), 5, seed=1, widths=(32, 16))
    b = create_model("mlp", (1, 8, 8), 5, seed=2, widths=(32,))
    _upload(at, "a", "a.safetensors", _checkpoint_bytes(a))
    _upload(at, "b", "b.safetensors", _checkpoint_bytes(b), "digits:5-9")
    at.button(key="load.upload_button").click().run()
    assert any("cannot be zipped" in e.value and "layer counts differ" in e.value for e in at.error)
    goto(at, "step")
    assert any("cannot be zipped" in e.value for e in at.error)


def test_own_npz_task_and_option_errors():
    from mtz_core.demo import load_demo

    demo = load_demo("digits-mlp")
    x, y = demo.task_a.calib
    buf = io.BytesIO()
    np.savez(buf, x=x.numpy(), y=y.numpy())
    at = new_app()
    _upload(at, "a", "a.safetensors", _checkpoint_bytes(demo.model_a))
    at.radio(key="load.tasksrc_a").set_value("my .npz").run()
    at.file_uploader(key="load.npz_a").set_value(("mine.npz", buf.getvalue(), "application/zip"))
    at.run()
    _upload(at, "b", "b.safetensors", _checkpoint_bytes(demo.model_b), "digits:5-9")
    at.button(key="load.upload_button").click().run()
    assert not at.error, [e.value for e in at.error]
    assert ws(at).pair.task_a.name == "npz:mine.npz"
    # an option the architecture does not have
    _upload(at, "b", "b.pt", _state_dict_bytes(demo.model_b), "digits:5-9", "lenet300", '{"w": 3}')
    at.button(key="load.upload_button").click().run()
    assert any("has no option(s) ['w']" in e.value for e in at.error)


@pytest.mark.slow
def test_train_a_pair_in_the_app():
    at = new_app()
    at.segmented_control(key="load.source").set_value("Train in the app").run()
    at.text_input(key="train.opts").set_value('{"widths": [16]}')
    at.text_input(key="train.task_a").set_value("moons")
    at.text_input(key="train.task_b").set_value("circles")
    at.number_input(key="train.iterations").set_value(40)
    at.run()
    at.button(key="load.train_button").click().run()
    wait_job(at)
    pair = ws(at).pair
    assert pair.task_a.name == "moons" and pair.models["b"]["source"] == "trained"
    assert any("Trained the pair" in s.value for s in at.success)
    assert pair.zippable


def test_bad_task_text_for_training_is_an_error():
    at = new_app()
    at.segmented_control(key="load.source").set_value("Train in the app").run()
    at.text_input(key="train.task_a").set_value("digits:0-12").run()
    at.button(key="load.train_button").click().run()
    assert any("out of range" in e.value for e in at.error)


def test_conv_demo_zips_and_shows_kernels():
    at = new_app()
    at.selectbox(key="load.demo").set_value("digits-conv").run()
    at.button(key="load.demo_button").click().run()
    assert any("Loaded the demo pair digits-conv" in s.value for s in at.success)
    assert [r for r in at.dataframe[0].value["layer"]] == ["conv1", "conv2", "fc1", "fc2"]
    goto(at, "step")
    for k in (6, 12, 48):
        zip_layer(at, k)
    assert metric(at, "Layers zipped") == "3 / 3"
    z = ws(at).zip
    assert z.saved_fraction() == pytest.approx(z.session.result().saved_fraction)
    goto(at, "sharing")
    weights = figure(at, "conv1: pair 1 of 6")
    kernels = [values(t["z"]) for t in weights["data"] if t["type"] == "heatmap"]
    assert [k.shape for k in kernels] == [(5, 5)] * 3  # one input channel, 5×5 kernels
    goto(at, "costs")
    at.selectbox(key="costs.layer").set_value(2).run()
    assert figure(at, "fc1: pair costs")["layout"]["meta"]["shape"] == [64, 64]
    goto(at, "learn")
    assert "**26** entries" in texts(at)  # conv1: 1 channel × 25 kernel positions + 1


def test_zip_settings_keep_batch_norm_per_task():
    at = goto(new_app(), "step")
    at.selectbox(key="settings.batch_norm").set_value("keep").run()
    at.button(key="step.apply_settings").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert ws(at).settings.batch_norm == "keep"
    assert any("batch norm keep" in c.value for c in at.caption)
    zip_layer(at, 10)
    assert ws(at).zip.session.config.batch_norm == "keep"


# ------------------------------------------------------------------------ residual networks


def _load_resnet_demo() -> AppTest:
    at = new_app()
    at.selectbox(key="load.demo").set_value("digits-resnet").run()
    at.button(key="load.demo_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Loaded the demo pair digits-resnet" in s.value for s in at.success)
    return at


def test_resnet_demo_loads_as_groups_and_steps_one():
    at = _load_resnet_demo()
    assert any(
        "12 zippable groups" in s.value and "conv1 (+3), layers.0.conv1" in s.value
        for s in at.success
    )
    assert "What it is: resnet20(option=A, width=0.25) on 1x8x8 -> 5 classes" in texts(at)
    groups = next(d.value for d in at.dataframe if "members" in d.value.columns)
    assert groups["group"][0] == "conv1 (+3)" and groups["layers"][0] == 4
    assert groups["members"][0] == "conv1, layers.0.conv2, layers.1.conv2, layers.2.conv2"
    goto(at, "step")
    assert not at.error, [e.value for e in at.error]
    body = texts(at)
    assert "Next: the group **conv1 (+3)**, 4 layers" in body
    assert "No prediction before the zip" in body
    assert metric(at, "Groups zipped") == "0 / 12"
    zip_layer(at, 3)
    assert metric(at, "Groups zipped") == "1 / 12"
    assert any("Zipped conv1 (+3) with 3 shared neurons" in s.value for s in at.success)
    assert any("**conv1 (+3)** 3/4 shared" in m.value for m in at.markdown)
    assert ws(at).zip.records[0].members[1] == "layers.0.conv2"
    zip_layer(at, 2)  # layers.0.conv1: its reader's rows are re-merged
    assert "re-merged the already-shared rows of layers.0.conv2" in texts(at)


def test_resnet_costs_page_shows_why_a_stream_has_no_curve():
    at = goto(_load_resnet_demo(), "costs")
    assert not at.error, [e.value for e in at.error]
    assert any(
        "No preview of every share for conv1 (+3)" in i.value
        and "residual stream of several layers" in i.value
        for i in at.info
    )
    assert figure(at, "conv1 (+3): pair costs")["layout"]["meta"]["shape"] == [4, 4]
    assert metric(at, "Predicted layer error") == "–"


@pytest.mark.parametrize("page", ["sharing", "tradeoff", "learn", "keep", "retrain"])
def test_every_page_renders_on_the_resnet_demo_after_a_step(page):
    at = goto(_load_resnet_demo(), "step")
    zip_layer(at, 2)
    goto(at, page)
    assert not at.error, [e.value for e in at.error]
    if page == "sharing":
        table = next(d.value for d in at.dataframe if "members" in d.value.columns)
        assert list(table["layer"][:2]) == ["conv1 (+3)", "layers.0.conv1"]
    if page == "tradeoff":
        assert at.slider(key="plan.tune.conv1 (+3)").value == 2


def _npz_bytes(n: int, shape: tuple[int, ...], classes: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, x=rng.normal(size=(n, *shape)).astype(np.float32), y=np.arange(n) % classes)
    return buf.getvalue()


def _upload_with_npz(at, which, name, data, npz):
    _upload(at, which, name, data)
    at.radio(key=f"load.tasksrc_{which}").set_value("my .npz").run()
    at.file_uploader(key=f"load.npz_{which}").set_value((f"{which}.npz", npz, "application/zip"))
    at.run()


def test_uploaded_bare_resnet_state_dicts_are_recognised():
    """Two torchvision resnet18 state dicts (width 0.125, one input channel, 3 classes), no
    card, no architecture: recognised by their keys, built for the tasks' 1×32×32 inputs."""
    from mtz_core.models.resnet import torchvision_resnet

    at = new_app()
    for which, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        model = torchvision_resnet("resnet18", 3, in_channels=1, width=0.125).eval()
        npz = _npz_bytes(90, (1, 32, 32), 3, seed)
        _upload_with_npz(at, which, f"{which}.pth", _state_dict_bytes(model), npz)
    at.button(key="load.upload_button").click().run()
    assert not at.error, [e.value for e in at.error]
    said = "torchvision resnet18 (1 input channels, 3 classes, width 0.125)"
    assert any(
        f"Model A (a.pth) has no card: recognised from its keys: {said}" in i.value for i in at.info
    )
    assert "the input shape (1, 32, 32) taken from task npz:a.npz" in texts(at)
    pair = ws(at).pair
    assert pair.zippable and pair.residual and len(pair.groups) == 12
    assert pair.models["b"]["recognized"] == said
    assert pair.models["a"]["architecture"]["kwargs"] == {"width": 0.125}
    assert any("12 zippable groups" in s.value for s in at.success)
    # the same file for an 8×8 task: the error says what it is and what it needs
    at.radio(key="load.tasksrc_a").set_value("built-in task").run()
    _upload(at, "a", "a.pth", _state_dict_bytes(model), "digits:0-4")
    at.button(key="load.upload_button").click().run()
    assert any(
        "model A (a.pth)" in e.value and "at least 32x32, got 8x8" in e.value for e in at.error
    )


def test_uploaded_bare_vgg_bn_state_dicts_are_recognised_and_zip():
    from mtz_core.models import create_model

    at = new_app()
    for which, seed in (("a", 0), ("b", 1)):
        model = create_model("vgg11_bn", (1, 32, 32), 3, seed=seed, width=0.125, avgpool_size=1)
        npz = _npz_bytes(90, (1, 32, 32), 3, seed)
        _upload_with_npz(at, which, f"{which}.pt", _state_dict_bytes(model), npz)
    at.button(key="load.upload_button").click().run()
    assert not at.error, [e.value for e in at.error]
    said = "torchvision vgg11_bn (1 input channels, 3 classes, width 0.125)"
    assert any(
        f"Model B (b.pt) has no card: recognised from its keys: {said}" in i.value for i in at.info
    )
    pair = ws(at).pair
    assert pair.zippable and not pair.residual and len(pair.groups) == 10
    assert pair.models["a"]["architecture"]["kwargs"]["avgpool_size"] == 1
    assert any("can be zipped: 10 hidden layers" in s.value for s in at.success)
    goto(at, "step")
    zip_layer(at, 4)
    assert metric(at, "Layers zipped") == "1 / 10"
