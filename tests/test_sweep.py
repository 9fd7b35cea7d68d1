"""`mtz_core.sweep`: the table of a sweep, its Pareto front, its figure and its files.

The sweep runs once per module on the tiny moons/circles demo pair (2 hidden layers of 16) with
two shares, two methods and two retraining budgets, so every test reads a real table quickly.
`sweep_many` runs on three small MLPs trained here on digit subsets (0-3, 4-6, 7-9).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mtz_core import CancelToken, evaluate, evaluate_zipped, zip_many, zip_models
from mtz_core.data import load_task
from mtz_core.demo import load_demo
from mtz_core.models import create_model
from mtz_core.sweep import (
    COLUMNS,
    pareto_front,
    save_sweep,
    sweep,
    sweep_columns,
    sweep_figure,
    sweep_many,
)
from mtz_core.training import train

SHARES = (0.5, 1.0)
METHODS = ("mtz", "random")
BUDGETS = (0, 3)
CALIB, BATCH = 128, 64


@pytest.fixture(scope="module")
def pair():
    return load_demo("moons-circles")


@pytest.fixture(scope="module")
def table(pair):
    calls = []
    df = sweep(
        pair.model_a,
        pair.model_b,
        pair.task_a,
        pair.task_b,
        shares=SHARES,
        methods=METHODS,
        retrain_iterations=BUDGETS,
        calib_samples=CALIB,
        batch_size=BATCH,
        progress=lambda done, total, text: calls.append((done, total, text)),
    )
    df.attrs["calls"] = calls
    return df


def test_rows_and_columns(table, pair):
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 1 + len(SHARES) * len(METHODS) * len(BUDGETS)
    assert not table.attrs["cancelled"]
    assert table.attrs["task_a"] == "moons" and table.attrs["task_b"] == "circles"
    orig = table.iloc[0]
    assert orig["method"] == "original" and orig["share"] == 0 and orig["saved"] == 0
    assert (
        orig["saved_fraction"] == 0 and orig["params_zipped"] == orig["params_a"] + orig["params_b"]
    )
    acc_a = evaluate(pair.model_a, pair.task_a.batches("test", 256)).accuracy
    acc_b = evaluate(pair.model_b, pair.task_b.batches("test", 256)).accuracy
    assert (orig["acc_a"], orig["acc_b"]) == (acc_a, acc_b)
    zipped = table.iloc[1:]
    assert set(zipped["method"]) == set(METHODS)
    assert set(zipped["retrain_iterations"]) == set(BUDGETS)
    assert np.allclose(table["mean_acc"], (table["acc_a"] + table["acc_b"]) / 2)
    a, b = table["params_a"], table["params_b"]
    assert (table["saved"] == a + b - table["params_zipped"]).all()
    assert np.allclose(table["saved_fraction"], table["saved"] / (a + b))
    assert (table["seconds"] >= 0).all() and table["heldout_error"].notna().all()


def test_saved_fraction_grows_with_share(table):
    for _, group in table.iloc[1:].groupby(["method", "retrain_iterations"]):
        group = group.sort_values("share")
        assert list(group["share"]) == list(SHARES)
        assert (np.diff(group["saved_fraction"]) > 0).all()
        assert (group["saved_fraction"] > 0).all()
    # equal shares save the same parameters whatever the method or retraining
    assert table.iloc[1:].groupby("share")["saved"].nunique().eq(1).all()


def test_retraining_rows_count_their_samples(table):
    retrained = table[table["retrain_iterations"] > 0]
    plain = table[table["retrain_iterations"] == 0]
    assert len(retrained) == len(SHARES) * len(METHODS)
    # 3 iterations after each of the 2 hidden layers, one full batch of each task per iteration
    assert (retrained["retrain_samples"] == 3 * 2 * 2 * BATCH).all()
    assert (plain["retrain_samples"] == 0).all()


def test_a_row_is_the_zip_models_result(table, pair):
    """The oracle: the sweep's mtz/0.5/no-retraining row is what zip_models gives directly."""
    calib_a = [x for x, _ in pair.task_a.batches("calib", BATCH, limit=CALIB)]
    calib_b = [x for x, _ in pair.task_b.batches("calib", BATCH, limit=CALIB)]
    result = zip_models(pair.model_a, pair.model_b, calib_a, calib_b, share=0.5)
    score_a, score_b = evaluate_zipped(
        result.model, pair.task_a.batches("test", 256), pair.task_b.batches("test", 256)
    )
    row = table[
        (table["method"] == "mtz") & (table["share"] == 0.5) & (table["retrain_iterations"] == 0)
    ].iloc[0]
    assert row["saved"] == result.saved and row["saved_fraction"] == result.saved_fraction
    assert (row["acc_a"], row["acc_b"]) == (score_a.accuracy, score_b.accuracy)
    predicted = sum(r.predicted_error for r in result.layers)
    assert row["predicted_error"] == pytest.approx(predicted)


def test_progress_reports_every_configuration(table):
    calls = table.attrs["calls"]
    total = len(table)
    assert [c[0] for c in calls] == list(range(total)) + [total]
    assert all(c[1] == total for c in calls)
    assert calls[0][2] == "original models" and "share 0.5" in calls[1][2]


def _dominated_oracle(x, y):
    on = []
    for i in range(len(x)):
        dominated = any(
            x[j] >= x[i] and y[j] >= y[i] and (x[j] > x[i] or y[j] > y[i])
            for j in range(len(x))
            if not (np.isnan(x[j]) or np.isnan(y[j]))
        )
        on.append(not dominated and not (np.isnan(x[i]) or np.isnan(y[i])))
    return on


def test_pareto_front_on_a_hand_made_table():
    df = pd.DataFrame(
        {
            "saved_fraction": [0.0, 0.1, 0.1, 0.2, 0.3, 0.3, 0.4, np.nan],
            "mean_acc": [0.99, 0.95, 0.97, 0.97, 0.90, 0.90, 0.80, 1.0],
        },
        index=list("abcdefgh"),
    )
    front = pareto_front(df)
    # b loses to c (same saving, less accurate), c to d (more saved, as accurate); the two equal
    # rows e and f do not dominate each other; h has no saving figure
    assert front.to_dict() == dict(
        a=True, b=False, c=False, d=True, e=True, f=True, g=True, h=False
    )
    assert list(front.index) == list(df.index)
    rng = np.random.default_rng(0)
    rand = pd.DataFrame(
        {"saved_fraction": rng.integers(0, 6, 60) / 10, "mean_acc": rng.integers(0, 6, 60) / 5}
    )
    x, y = rand["saved_fraction"].to_numpy(), rand["mean_acc"].to_numpy()
    assert pareto_front(rand).tolist() == _dominated_oracle(x, y)
    with pytest.raises(ValueError, match="mean_acc"):
        pareto_front(df.drop(columns="mean_acc"))


def test_figure_has_one_trace_per_series(table):
    fig = sweep_figure(table)
    series = [t for t in fig.data if t.meta["kind"] == "series"]
    assert len(series) == 3 * len(METHODS) * len(BUDGETS)  # panels A, B, mean
    column = {"a": "acc_a", "b": "acc_b", "mean": "mean_acc"}
    for t in series:
        m = t.meta
        rows = table[
            (table["method"] == m["method"]) & (table["retrain_iterations"] == m["retrain"])
        ]
        rows = rows.sort_values("saved_fraction")
        assert np.allclose(t.x, rows["saved_fraction"])
        assert np.allclose(t.y, rows[column[m["panel"]]])
        assert t.line.dash == ("dash" if m["retrain"] == 0 else "solid")
        assert "share" in t.hovertemplate and "acc A" in t.hovertemplate
    originals = [t for t in fig.data if t.meta["kind"] == "original"]
    assert len(originals) == 3 and all(list(t.x) == [0.0] for t in originals)
    (front,) = [t for t in fig.data if t.meta["kind"] == "pareto"]
    assert sorted(front.x) == sorted(table.loc[pareto_front(table), "saved_fraction"])
    assert "%" in fig.layout.xaxis.title.text and "%" in fig.layout.yaxis.title.text
    assert len(fig.layout.shapes) == 3  # the originals' reference lines


def test_save_sweep_writes_csv_and_offline_html(table, tmp_path, monkeypatch, caplog):
    import mtz_core.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "image_engine_problem", lambda: "no engine (test)")
    with caplog.at_level(logging.INFO, logger="mtz_core.sweep"):
        files = save_sweep(table, tmp_path / "out" / "run.csv")  # a known suffix is dropped
    assert [f.name for f in files] == ["run.csv", "run.html"]
    assert all(f.is_file() for f in files) and not (tmp_path / "out" / "run.png").exists()
    assert "no engine (test)" in caplog.text
    back = pd.read_csv(files[0])
    assert list(back.columns) == list(COLUMNS) and len(back) == len(table)
    assert np.allclose(back["saved_fraction"], table["saved_fraction"])
    html = files[1].read_text()
    assert re.search(r"<script[^>]*\ssrc=", html) is None  # nothing fetched: plotly.js inlined
    assert len(html) > 1_000_000  # plotly.js is inlined, so the page works offline


def test_cancel_returns_the_rows_done(pair):
    token = CancelToken()

    def progress(done, total, text):
        if done == 2:  # the second zip is starting: stop it from inside
            token.cancel()

    df = sweep(
        pair.model_a,
        pair.model_b,
        pair.task_a,
        pair.task_b,
        shares=(0.25, 0.5, 1.0),
        calib_samples=64,
        progress=progress,
        cancel=token,
    )
    assert df.attrs["cancelled"] is True
    assert list(df["method"]) == ["original", "mtz"] and list(df["share"]) == [0.0, 0.25]
    assert tuple(df.columns) == COLUMNS
    sweep_figure(df)  # a partial table still draws


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shares=(0.5, 1.5)), "share 1.5 is out of range"),
        (dict(shares=()), "shares must be a non-empty list"),
        (dict(methods=("mtz", "magic")), "unknown method 'magic'"),
        (dict(retrain_iterations=(0, -1)), "entry -1 must be an int >= 0"),
        (dict(calib_samples=0), "calib_samples must be an int >= 1"),
        (dict(lr=0.0, retrain_iterations=(5,)), "lr must be a positive number"),
        (dict(damping=-1.0), "damping must be a finite number >= 0"),
        (dict(matching="best"), "unknown matching 'best'"),
    ],
)
def test_bad_settings_are_refused_before_any_work(pair, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sweep(pair.model_a, pair.model_b, pair.task_a, pair.task_b, **kwargs)


def test_import_needs_no_pandas_or_plotly():
    code = (
        "import sys, mtz_core, mtz_core.sweep, mtz_core.cli; "
        "bad = [m for m in ('pandas', 'plotly') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_sweep_passes_batch_norm_and_refuses_recalibration_without_it():
    demo = load_demo("digits-mlp")
    args = (demo.model_a, demo.model_b, demo.task_a, demo.task_b)
    df = sweep(*args, shares=(1.0,), calib_samples=64, heldout_samples=None, batch_norm="keep")
    assert df.attrs["batch_norm"] == "keep" and len(df) == 2
    with pytest.raises(ValueError, match="needs batch_norm='keep'"):
        sweep(*args, shares=(1.0,), recalibrate=True)


THREE = ("digits:0-3", "digits:4-6", "digits:7-9")


@pytest.fixture(scope="module")
def three():
    """Three small MLPs (24, 16 hidden units), one per digit subset, briefly trained."""
    tasks = [load_task(text) for text in THREE]
    models = []
    for seed, task in enumerate(tasks):
        model = create_model("mlp", task.input_shape, task.num_classes, widths=(24, 16), seed=seed)
        data = task.batches("calib", 64, shuffle=True, seed=seed)
        train(model, data, iterations=60, lr=0.1, seed=seed, device="cpu")
        models.append(model.eval())
    return models, tasks


@pytest.fixture(scope="module")
def table3(three):
    models, tasks = three
    options = dict(calib_samples=CALIB, batch_size=BATCH)
    return sweep_many(models, tasks, shares=(0.0, 1.0), retrain_iterations=(0, 2), **options)


def test_sweep_many_of_two_is_sweep_row_for_row(table, pair):
    many = sweep_many(
        [pair.model_a, pair.model_b],
        [pair.task_a, pair.task_b],
        shares=SHARES,
        methods=METHODS,
        retrain_iterations=BUDGETS,
        calib_samples=CALIB,
        batch_size=BATCH,
    )
    assert tuple(many.columns) == COLUMNS == sweep_columns(2)
    pd.testing.assert_frame_equal(many.drop(columns="seconds"), table.drop(columns="seconds"))
    assert many.attrs["tasks"] == ["moons", "circles"] and many.attrs["task_a"] == "moons"


def test_sweep_many_of_three_has_every_task(table3, three):
    models, tasks = three
    columns = sweep_columns(3)
    assert tuple(table3.columns) == columns
    assert columns[4:8] == ("acc_a", "acc_b", "acc_c", "mean_acc")
    assert columns[8:11] == ("params_a", "params_b", "params_c")
    assert table3.attrs["tasks"] == list(THREE) and table3.attrs["task_b"] == "digits:4-6"
    assert len(table3) == 1 + 2 * 2 and not table3.attrs["cancelled"]
    originals = [evaluate(m, t.batches("test", 256)).accuracy for m, t in zip(models, tasks)]
    params = [sum(p.numel() for p in m.parameters()) for m in models]
    accs = table3[["acc_a", "acc_b", "acc_c"]].to_numpy()
    assert list(table3["params_c"]) == [params[2]] * len(table3)
    # the originals' row and both share-0 zips (with or without retraining) are the originals
    share0 = table3["share"] == 0.0
    assert share0.sum() == 3 and (table3.loc[share0, "saved"] == 0).all()
    assert (accs[share0.to_numpy()] == originals).all()
    assert np.allclose(table3["mean_acc"], accs.mean(axis=1))
    total = sum(params)
    assert (table3["saved"] == total - table3["params_zipped"]).all()
    assert np.allclose(table3["saved_fraction"], table3["saved"] / total)
    full = table3[table3["share"] == 1.0]
    assert (full["saved"] > 0).all() and full["saved"].nunique() == 1
    # 2 iterations after each of the 2 hidden layers, one full batch of every task each time
    retrained = table3[table3["retrain_iterations"] == 2]
    assert (retrained["retrain_samples"] == 2 * 2 * 3 * BATCH).all()


def test_a_three_task_row_is_the_zip_many_result(table3, three):
    """The oracle: the share-1, no-retraining row is what zip_many gives directly."""
    models, tasks = three
    calibs = [[x for x, _ in t.batches("calib", BATCH, limit=CALIB)] for t in tasks]
    result = zip_many(models, calibs, share=1.0)
    accs = [
        evaluate(result.model, t.batches("test", 256), task=i).accuracy for i, t in enumerate(tasks)
    ]
    row = table3[(table3["share"] == 1.0) & (table3["retrain_iterations"] == 0)].iloc[0]
    assert row["saved"] == result.saved and row["saved_fraction"] == result.saved_fraction
    assert [row["acc_a"], row["acc_b"], row["acc_c"]] == accs
    assert row["predicted_error"] == pytest.approx(sum(r.predicted_error for r in result.layers))


def test_three_task_figure_and_files(table3, tmp_path, monkeypatch):
    import mtz_core.sweep as sweep_module

    fig = sweep_figure(table3)
    series = [t for t in fig.data if t.meta["kind"] == "series"]
    assert {t.meta["panel"] for t in series} == {"a", "b", "c", "mean"}
    assert len(series) == 4 * 2  # panels A, B, C, mean × one method × two budgets
    for t in (t for t in series if t.meta["panel"] == "c"):
        rows = table3[
            (table3["method"] == "mtz") & (table3["retrain_iterations"] == t.meta["retrain"])
        ]
        assert np.allclose(t.y, rows.sort_values("saved_fraction")["acc_c"])
        assert "acc C" in t.hovertemplate and "A + B + C" in t.hovertemplate
    assert len(fig.layout.shapes) == 4  # one reference line per panel
    (front,) = [t for t in fig.data if t.meta["kind"] == "pareto"]
    assert front.xaxis == "x4"  # on the mean panel
    assert "digits:7-9" in fig.layout.title.text
    monkeypatch.setattr(sweep_module, "image_engine_problem", lambda: "no engine (test)")
    csv, _ = save_sweep(table3, tmp_path / "three")
    assert list(pd.read_csv(csv).columns) == list(sweep_columns(3))


def test_sweep_many_refuses_mismatched_models_and_tasks(three):
    models, tasks = three
    with pytest.raises(ValueError, match="3 models and 2 tasks"):
        sweep_many(models, tasks[:2])
    with pytest.raises(TypeError, match="models must be a list"):
        sweep_many(models[0], tasks)
    with pytest.raises(ValueError, match="2 to 26 tasks, got 1"):
        sweep_many(models[:1], tasks[:1])
