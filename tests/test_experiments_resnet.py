"""experiments.resnet's tables on a tiny ResNet-20 pair (bundled 8×8 digits, no MNIST): every
method and both batch norms run, the choice is made on validation, and the page says so. No
retraining (CI's `python -m experiments.resnet --quick` retrains); still six zips of 12 channel
groups each, so it is marked slow."""

from __future__ import annotations

import pytest

import mtz_core  # noqa: F401  (before torch)
from experiments.paper import Pair
from experiments.report import Report
from experiments.resnet import ResnetPair, ResnetSetup, run_tables
from mtz_core.config import MANY_METHODS as METHODS  # zipit: chains of two models only
from mtz_core.data import load_task
from mtz_core.models.registry import create_model


@pytest.mark.slow
def test_the_resnet_tables_run_every_method_and_choose_on_validation():
    task_a, task_b = load_task("digits:0-4"), load_task("digits:5-9")
    setup = ResnetSetup(seeds=1, calib=32, shares=(1.0,), retrain=0)
    a, b = (
        create_model("resnet20", task_a.input_shape, 5, option="A", width=0.25, seed=s).eval()
        for s in (0, 1)
    )
    pair = ResnetPair(Pair(a, b, task_a, task_b, setup, seed=0))
    report = Report(True, module="experiments.resnet", title="t")
    bn = run_tables(report, [pair], setup)
    text = report.text()
    assert bn in ("fold", "keep")
    assert "Chosen on the validation split: batch norm (fold, keep)" in text
    for method in METHODS:
        assert f"| 1 | {method} |" in text
    assert "| none (retrain only) |" in text
    assert "Euclidean pairing chose exactly MTZ's pairs in" in text
    full = pair.run(1.0, batch_norm=bn)
    assert full.saved_fraction > 0.3 and full.samples == 0
    assert len(full.pairs) == len(pair.session().groups)
    # memoised: the zip table's full zip is the batch-norm table's
    assert pair.run(1.0, batch_norm=bn) is full
