"""`tune_shares`: per-group shares within an accuracy budget on validation data.

Oracles: the chosen plan, zipped again independently, keeps every task within the budget on
`val`; the test split is never read; an unlimited budget shares everything; the estimates are
the records of single-group zips; every larger share of a kept group was tried and refused.
"""

from __future__ import annotations

import pytest

import mtz_core  # noqa: F401  (before torch)
from mtz_core import evaluate, tune_shares, zip_many
from mtz_core.data import load_task
from mtz_core.data.task import SplitData
from mtz_core.models import create_model
from mtz_core.training import train

TASKS = ("digits:0-4", "digits:5-9")
CALIB = 128


class NoTest(SplitData):
    """A task whose test split must not be read (tuning chooses on validation data only)."""

    def __init__(self, task):
        self.calib, self.val, self.seed, self.name = task.calib, task.val, task.seed, task.name

    @property
    def test(self):
        raise AssertionError("tune_shares read the test split")


@pytest.fixture(scope="module")
def pair():
    tasks = [load_task(t) for t in TASKS]
    models = []
    for seed, task in enumerate(tasks):
        model = create_model("mlp", task.input_shape, task.num_classes, widths=(32, 16), seed=seed)
        train(model, task.batches("calib", 64, shuffle=True, seed=seed), iterations=150, lr=0.1)
        models.append(model.eval())
    return models, tasks


def _val(model, tasks):
    return [evaluate(model, t.batches("val", 256), task=i).accuracy for i, t in enumerate(tasks)]


def test_the_plan_keeps_every_task_within_the_budget_on_validation(pair):
    models, tasks = pair
    guarded = [NoTest(t) for t in tasks]
    events = []
    plan = tune_shares(
        models,
        guarded,
        max_drop_points=1.0,
        calib_samples=CALIB,
        progress=lambda done, total, text: events.append((done, total)),
    )
    originals = [evaluate(m, t.batches("val", 256)).accuracy for m, t in zip(models, tasks)]
    assert plan.original_val == pytest.approx(originals)
    assert all(loss <= 1.0 + 1e-9 for loss in plan.losses_points)
    assert set(plan.shares) == {"fc1", "fc2"}
    # the chosen plan zipped again, independently: what the plan reports
    calib = [t.batches("calib", 64, limit=CALIB) for t in tasks]  # what tune reads
    again = zip_many(models, calib, share=plan.shares)
    assert 0 < plan.saved_fraction == pytest.approx(again.saved_fraction)
    assert _val(again.model, tasks) == pytest.approx(list(plan.val_accuracy))
    # every kept group's next grid share was tried and refused, or it is at the top
    for name, share in plan.shares.items():
        if share < 1.0:
            bigger = [t for t in plan.trials if t.shares[name] > share]
            assert bigger and not any(t.accepted for t in bigger)
    kept = [t for t in plan.trials if t.accepted]
    assert kept[-1].shares == plan.shares
    assert events[0][0] == 0 and events[-1][0] == events[-1][1]
    assert plan.summary()["trials"][0]["shares"] == plan.trials[0].shares


def test_an_unlimited_budget_shares_everything_and_estimates_are_single_group_zips(pair):
    models, tasks = pair
    plan = tune_shares(models, tasks, max_drop_points=100, grid=(0.5, 1.0), calib_samples=CALIB)
    assert plan.shares == {"fc1": 1.0, "fc2": 1.0}
    assert all(t.accepted for t in plan.trials) and len(plan.trials) == 4
    calib = [[x for x, _ in t.batches("calib", 64, limit=CALIB)] for t in tasks]
    alone = zip_many(models, calib, share={"fc1": 0.5})
    err, saved = plan.estimates["fc1"][0.5]
    assert err == pytest.approx(alone.layers[0].predicted_error, rel=1e-9)
    assert saved == alone.layers[0].saved_parameters()


def test_a_zero_budget_never_loses_accuracy(pair):
    models, tasks = pair
    plan = tune_shares(models, tasks, max_drop_points=0, calib_samples=CALIB)
    assert all(loss <= 1e-9 for loss in plan.losses_points)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_drop_points=-1), "max_drop_points must be a number in"),
        (dict(max_drop_points=True), "max_drop_points must be a number in"),
        (dict(grid=(0.5, 0.25)), "increasing and distinct"),
        (dict(grid=(0.0, 1.0)), r"grid shares must be numbers in \(0, 1\]"),
        (dict(retrain_iterations=-2), "retrain_iterations must be >= 0"),
        (dict(method="nope"), "method"),
    ],
)
def test_bad_settings_are_refused_before_any_work(pair, kwargs, message):
    models, tasks = pair
    with pytest.raises(ValueError, match=message):
        tune_shares(models, tasks, **kwargs)


def test_cancel_during_a_trial_keeps_the_best_plan_so_far(pair):
    """A cancel that lands while a plan is being zipped drops that trial and returns the plan
    kept before it (the zip of the trial raises ZipCancelled inside)."""
    from mtz_core import CancelToken

    models, tasks = pair
    token = CancelToken()
    seen = []

    def progress(done, total, text):
        seen.append(done)
        if done == 2:  # two trials done: cancel as the third one starts zipping
            token.cancel()

    plan = tune_shares(
        models,
        tasks,
        max_drop_points=100,
        grid=(0.5, 1.0),
        calib_samples=CALIB,
        progress=progress,
        cancel=token,
    )
    assert plan.cancelled and len(plan.trials) == 2
    assert plan.shares == plan.trials[-1].shares and plan.result is not None


@pytest.mark.parametrize("option", [{"within_model": True}, {"output_weighted": True}])
def test_every_zip_option_reaches_the_trials(pair, option):
    """The tried plans are zipped with the options given (each one reaches zip_many)."""
    models, tasks = pair
    plan = tune_shares(
        models, tasks, max_drop_points=100, grid=(1.0,), calib_samples=CALIB, **option
    )
    ((name, value),) = option.items()
    assert getattr(plan.result.config, name) is value
    if name == "within_model":
        assert all(r.clusters is not None for r in plan.result.layers)
