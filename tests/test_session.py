"""Step-through: one layer per step, undo, restep without new Hessians, progress, cancel,
and clear errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import ConvNet, make_mlp
from torch.testing import assert_close

from mtz_core import ZipCancelled, ZipSession, zip_models


class CountingData:
    """A re-iterable list of batches that counts how often it is read."""

    def __init__(self, batches):
        self.batches, self.reads = batches, 0

    def __iter__(self):
        self.reads += 1
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def _data(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    return list(torch.randn(n, 1, 8, 8, generator=g).chunk(4))


def test_steps_match_zip_models_and_undo_restores_exactly():
    a, b = ConvNet(0), ConvNet(1)
    data_a, data_b = _data(0), _data(1)
    full = zip_models(a, b, data_a, data_b, share=0.5)
    session = ZipSession(a, b, data_a, data_b)
    assert [name for name, _, _ in session.hidden_layers] == [r.name for r in full.layers]
    x = torch.cat(data_a)
    with torch.no_grad():
        original = [session.model(x, t) for t in (0, 1)]
    states = []
    while not session.done:
        states.append({k: v.clone() for k, v in session.model.state_dict().items()})
        session.step(0.5)
    for r1, r2 in zip(session.records, full.layers):
        np.testing.assert_array_equal(r1.pairs, r2.pairs)
        assert r1.predicted_error == pytest.approx(r2.predicted_error)
    with pytest.raises(ValueError, match="all 3 hidden layers are zipped"):
        session.step(0.5)
    for state in reversed(states):
        session.undo()
        now = session.model.state_dict()
        assert now.keys() == state.keys()
        assert all(torch.equal(now[k], state[k]) for k in state)
    with torch.no_grad():
        for t in (0, 1):
            assert_close(session.model(x, t), original[t], rtol=0, atol=0)
    with pytest.raises(ValueError, match="nothing to undo"):
        session.undo()


def test_restep_reuses_hessians_and_equals_a_fresh_step():
    a, b = make_mlp(2), make_mlp(3)
    data_a, data_b = CountingData(_data(2)), CountingData(_data(3))
    session = ZipSession(a, b, data_a, data_b)
    reads = (data_a.reads, data_b.reads)
    first = session.step(0.25)
    assert (data_a.reads, data_b.reads) == (reads[0] + 1, reads[1] + 1)  # one pass per task
    again = session.restep(1.0)
    assert (data_a.reads, data_b.reads) == (reads[0] + 1, reads[1] + 1)  # no new pass
    assert first.k == 6 and again.k == 24
    np.testing.assert_array_equal(first.cost, again.cost)
    fresh = ZipSession(a, b, _data(2), _data(3)).step(1.0)
    np.testing.assert_array_equal(again.pairs, fresh.pairs)
    assert again.predicted_error == pytest.approx(fresh.predicted_error)
    # greedy order: the 6 pairs of the 0.25 step are the first 6 of the full step
    np.testing.assert_array_equal(again.pairs[:6], first.pairs)
    session.step(0.5)
    assert (data_a.reads, data_b.reads) == (reads[0] + 2, reads[1] + 2)


def test_preview_cost_matrix_then_step_uses_the_same_costs():
    a, b = make_mlp(4), make_mlp(5)
    data_a = CountingData(_data(4))
    session = ZipSession(a, b, data_a, _data(5))
    cost = session.cost_matrix()
    reads = data_a.reads
    rec = session.step(k=3)
    assert data_a.reads == reads
    np.testing.assert_array_equal(rec.cost, cost)
    assert rec.k == 3 and rec.share is None


def test_progress_events_and_cancel_within_a_layer():
    a, b = make_mlp(6), make_mlp(7)
    events = []
    session = ZipSession(a, b, _data(6), _data(7), progress=events.append)
    session.step(0.5)
    stages = [(e.stage, e.task) for e in events]
    assert stages[:8] == [("hessian", 0)] * 4 + [("hessian", 1)] * 4
    assert [e.done for e in events[:4]] == [1, 2, 3, 4] and events[0].total == 4
    assert [s for s, _ in stages[8:]] == ["costs", "matching", "merge", "done"]
    assert all(e.layer == "1" and e.n_layers == 2 for e in events)

    state = {k: v.clone() for k, v in session.model.state_dict().items()}

    def cancel_midway(event):
        if event.stage == "hessian" and event.done == 2:
            session.cancel()

    session.progress = cancel_midway
    with pytest.raises(ZipCancelled):
        session.step(0.5)
    assert len(session.records) == 1
    assert all(torch.equal(v, state[k]) for k, v in session.model.state_dict().items())
    session.progress = None
    assert session.step(0.5).k == 8  # a later step runs normally


def test_after_step_callback_runs_between_layers_and_undo_reverts_it():
    a, b = make_mlp(8), make_mlp(9)
    seen = []

    def nudge(session, record):
        seen.append(record.name)
        with torch.no_grad():
            for p in session.model.parameters():
                p.add_(0.01)

    session = ZipSession(a, b, _data(8), _data(9), after_step=nudge)
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    session.step(0.5)
    assert seen == ["1"]
    session.undo()
    assert all(torch.equal(v, before[k]) for k, v in session.model.state_dict().items())
    result = zip_models(a, b, _data(8), _data(9), after_step=nudge)
    assert seen == ["1", "1", "3"] and len(result.layers) == 2


def _gen():
    yield torch.randn(4, 1, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"share": 1.5}, ValueError, r"1\.5"),
        ({"share": -1}, ValueError, r"-1"),
        ({"share": 25}, ValueError, r"25"),
        ({"share": True}, TypeError, r"bool"),
        ({"share": "half"}, TypeError, r"half|str"),
        ({"share": {"nope": 0.5}}, ValueError, r"nope"),
        ({"method": "magic"}, ValueError, r"unknown method 'magic'.*'mtz'"),
        ({"matching": "best"}, ValueError, r"unknown matching 'best'"),
        ({"hessian": "diag"}, ValueError, r"unknown hessian 'diag'"),
        ({"flatten_hessian": "kron"}, ValueError, r"unknown flatten_hessian 'kron'"),
        (
            {"damping": -1.0},
            ValueError,
            r"damping must be a finite number >= 0 or 'auto', got -1.0",
        ),
        ({"damping": math.nan}, ValueError, r"damping"),
        ({"seed": -2}, ValueError, r"seed"),
        ({"device": "cuda:7"}, ValueError, r"cuda"),
    ],
)
def test_bad_options_are_refused(kwargs, error, message):
    if kwargs.get("device") == "cuda:7" and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(error, match=message):
        zip_models(make_mlp(0), make_mlp(1), _data(), _data(), **kwargs)


def test_bad_data_is_refused():
    a, b = make_mlp(0), make_mlp(1)
    good = _data()
    with pytest.raises(TypeError, match="one-shot iterator"):
        zip_models(a, b, _gen(), good)
    with pytest.raises(TypeError, match="one-shot iterator"):
        zip_models(a, b, good, iter(good))
    with pytest.raises(ValueError, match="data_a yielded no batches"):
        zip_models(a, b, [], good)
    with pytest.raises(TypeError, match="re-iterable"):
        zip_models(a, b, None, good)
    bad = [x.clone() for x in good]
    bad[2][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="data_b batch 2 contains NaN or Inf"):
        zip_models(a, b, good, bad)
    with pytest.raises(ValueError, match="input shapes differ"):
        zip_models(a, b, good, [torch.randn(4, 1, 9, 9)])
    with pytest.raises(TypeError, match="batch 0 is a str"):
        zip_models(a, b, ["x"], good)
    # a single tensor is one batch; (x, y) tuples are fine
    one = torch.cat(good)
    labelled = [(x, torch.zeros(len(x), dtype=torch.long)) for x in good]
    r1 = zip_models(a, b, one, one)
    r2 = zip_models(a, b, labelled, labelled)
    np.testing.assert_array_equal(r1.layers[0].pairs, r2.layers[0].pairs)


def test_bad_models_are_refused():
    a = make_mlp(0)
    with pytest.raises(TypeError, match="model_b must be a torch.nn.Module"):
        zip_models(a, "not a model", _data(), _data())
    b = make_mlp(1)
    with torch.no_grad():
        b[3].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"model B: layer '3' has NaN or Inf weights"):
        zip_models(a, b, _data(), _data())


def test_dataloader_works_as_calibration_data():
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.cat(_data())
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), batch_size=16)
    result = zip_models(make_mlp(0), make_mlp(1), loader, loader, share=0.5)
    assert result.layers[0].n_samples == (64, 64)
