"""experiments.many's tables on three tiny MLPs (bundled 8×8 digits 0–3, 4–6, 7–9; no MNIST):
every method runs, the zipping order is chosen on validation, and the page says so. Briefly
trained originals, a few retraining iterations: still about fifteen three-model zips, so it is
marked slow."""

from __future__ import annotations

import pytest

import mtz_core  # noqa: F401  (before torch)
from experiments.many import ORDERS, SCHEME_NOTE, ManySetup, Triple, order_label, run_tables
from experiments.report import Report
from mtz_core import train
from mtz_core.config import MANY_METHODS as METHODS
from mtz_core.data import load_task
from mtz_core.models.registry import create_model


def _original(task, seed):
    model = create_model("mlp", task.input_shape, task.num_classes, widths=(24, 12), seed=seed)
    train(model, task.batches("calib", 32, shuffle=True, seed=seed), iterations=40, lr=0.1)
    return model.eval()


@pytest.mark.slow
def test_the_many_tables_run_every_method_and_choose_the_order_on_validation():
    tasks = [load_task(f"digits:{c}") for c in ("0-3", "4-6", "7-9")]
    setup = ManySetup(
        seeds=1,
        calib=128,
        shares=(1.0,),
        baseline_shares=(1.0,),
        order_shares=(1.0,),
        retrain=3,
        heldout=64,
    )
    triple = Triple([_original(t, s) for s, t in enumerate(tasks)], tasks, setup, seed=0)
    report = Report(True, module="experiments.many", title="t")
    order = run_tables(report, [triple], setup)
    text = report.text()
    assert order in ORDERS
    assert "Chosen on the validation split: zipping order (which task joins last)" in text
    assert f"The chosen order, {order_label(order, triple.names)}" in text
    for o in ORDERS:
        assert f"| 1 | {order_label(o, triple.names)} |" in text
    for method in METHODS:
        assert f"| 1 | {method} |" in text
    assert "| none (retrain only) |" in text
    for pair in ("0–3 + 4–6", "0–3 + 7–9", "4–6 + 7–9"):
        assert f"| {pair} |" in text
    assert SCHEME_NOTE in text and "### In short" in text
    # the three-model full zip shares every hidden unit by all three tasks
    full = triple.zip(1.0, order=order, retrain_its=setup.retrain)
    assert all(r.pairs.shape == (r.n_a, 3) for r in full.result.layers)
    assert 0.5 < full.result.saved_fraction < 2 / 3
    assert full.result.retrain_iterations == setup.retrain * len(full.result.layers)
    # memoised: the zip table's full zip is the order table's
    assert triple.zip(1.0, order=order, retrain_its=setup.retrain) is full
    # the accuracies come back in the triple's task order, whatever the zipping order
    share0 = triple.zip(0.0, order=ORDERS[1])
    assert share0.test == pytest.approx(triple.original_accuracy())
