"""Training, joint retraining between layers, held-out layer errors and damping='auto'."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_mlp
from torch.testing import assert_close

from mtz_core import (
    CancelToken,
    ZipCancelled,
    ZipSession,
    evaluate,
    evaluate_zipped,
    resolve_device,
    retrain,
    train,
    zip_models,
)
from mtz_core.config import AUTO_DAMPING_GRID
from mtz_core.training import RETRAIN_CLIP, TrainingDiverged


def _task(seed: int, n: int = 256, classes: int = 10):
    """A learnable task: labels from a fixed random linear map of the inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    w = torch.randn(64, classes, generator=g)
    y = (x.flatten(1) @ w).argmax(1)
    return list(zip(x.chunk(8), y.chunk(8)))


def _inputs(batches):
    return [x for x, _ in batches]


def test_train_lowers_the_loss_and_is_reproducible():
    data = _task(0)
    m1, m2 = make_mlp(0), make_mlp(0)
    before = evaluate(m1, data)
    rep = train(m1, data, iterations=60, lr=0.05, seed=3, device="cpu")
    after = evaluate(m1, data)
    assert rep.iterations == 60 and rep.samples == 60 * 32 and not rep.cancelled
    assert after.loss < 0.7 * before.loss
    train(m2, data, iterations=60, lr=0.05, seed=3, device="cpu")
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


def test_retrain_lowers_the_joint_loss_of_a_zipped_network():
    train_a, train_b = _task(1), _task(2, classes=4)
    a, b = make_mlp(1), make_mlp(2, classes=4)
    train(a, train_a, iterations=40, lr=0.05, device="cpu")
    train(b, train_b, iterations=40, lr=0.05, device="cpu")
    result = zip_models(a.eval(), b.eval(), _inputs(train_a), _inputs(train_b), share=1.0)
    net = result.model
    before = sum(s.loss for s in evaluate_zipped(net, train_a, train_b))
    rep = retrain(net, train_a, train_b, iterations=50, lr=0.05)
    after = sum(s.loss for s in evaluate_zipped(net, train_a, train_b))
    assert after < before
    assert len(rep.losses) == 50 and len(rep.losses[0]) == 2
    assert not net.training  # the mode it had before


def test_cancel_keeps_the_last_good_weights():
    data = _task(3)
    model = make_mlp(3)
    token = CancelToken()
    states = []

    def progress(p):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        if p.iteration == 5:
            token.cancel()

    rep = train(model, data, iterations=100, cancel=token, progress=progress, device="cpu")
    assert rep.cancelled and rep.iterations == 5
    for k, v in model.state_dict().items():
        assert torch.equal(v, states[-1][k])


def test_divergence_restores_the_starting_weights():
    data = _task(4)
    model = make_mlp(4)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="restored"):
        train(model, data, iterations=50, lr=1e6, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(v, start[k])


def test_retrain_clips_the_gradient_norm():
    """With plain SGD one step moves the parameters by lr * the (clipped) gradient, so its norm
    is at most lr * clip; unclipped, the same step is larger."""
    train_a, train_b = _task(5), _task(6, classes=4)
    a, b = make_mlp(5), make_mlp(6, classes=4)
    zipped = zip_models(a.eval(), b.eval(), _inputs(train_a), _inputs(train_b), share=1.0).model

    def step_norm(clip):
        net = zipped.clone()
        start = [p.detach().clone() for p in net.parameters()]
        rep = retrain(net, train_a, train_b, iterations=1, lr=1.0, clip_grad_norm=clip)
        moved = torch.cat([(p.detach() - s).flatten() for p, s in zip(net.parameters(), start)])
        return float(moved.norm()), rep.clipped

    free, clipped_steps = step_norm(None)
    assert clipped_steps == 0 and free > 0.05
    small, clipped_steps = step_norm(0.01)
    assert clipped_steps == 1 and small <= 0.01 * (1 + 1e-5)
    # the default is on and is RETRAIN_CLIP: inputs scaled up make every gradient exceed it
    big_a, big_b = ([(100 * x, y) for x, y in data] for data in (train_a, train_b))
    default, explicit = zipped.clone(), zipped.clone()
    assert retrain(default, big_a, big_b, iterations=3, lr=1e-3).clipped == 3
    retrain(explicit, big_a, big_b, iterations=3, lr=1e-3, clip_grad_norm=RETRAIN_CLIP)
    for p, q in zip(default.parameters(), explicit.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="clip_grad_norm must be a positive number"):
        retrain(zipped.clone(), train_a, train_b, iterations=1, clip_grad_norm=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": -1}, "iterations must be an int >= 0"),
        ({"iterations": 5, "lr": 0}, "lr must be a positive number"),
        ({"iterations": 5, "optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
    ],
)
def test_bad_training_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(make_mlp(0), _task(0), device="cpu", **kwargs)


def test_bad_training_data():
    with pytest.raises(TypeError, match="re-iterable"):
        train(make_mlp(0), iter(_task(0)), iterations=2, device="cpu")
    with pytest.raises(TypeError, match=r"\(inputs, labels\) pair"):
        train(make_mlp(0), [torch.randn(4, 64)], iterations=2, device="cpu")
    with pytest.raises(ValueError, match="no batches"):
        train(make_mlp(0), [], iterations=2, device="cpu")


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_zip_models_retrains_between_layers_and_records_it():
    train_a, train_b = _task(5), _task(6, classes=4)
    a, b = make_mlp(5), make_mlp(6, classes=4)
    events = []
    result = zip_models(
        a,
        b,
        _inputs(train_a),
        _inputs(train_b),
        share=1.0,
        retrain_iterations={"1": 7, "3": 3},
        train_a=train_a,
        train_b=train_b,
        progress=events.append,
    )
    assert [r.retraining.iterations for r in result.layers] == [7, 3]
    assert result.retrain_iterations == 10 and result.retrain_samples == 10 * 64
    retrain_events = [e for e in events if e.stage == "retrain"]
    assert len(retrain_events) == 10 and retrain_events[0].losses is not None
    # the second layer's Hessians come after the first layer's retraining
    stages = [e.stage for e in events]
    first_retrain = stages.index("retrain")
    assert "hessian" in stages[first_retrain:]
    with pytest.raises(ValueError, match="needs train_a and train_b"):
        zip_models(a, b, _inputs(train_a), _inputs(train_b), retrain_iterations=5)
    with pytest.raises(ValueError, match="2 entries for 2|3 entries for 2"):
        zip_models(
            a,
            b,
            _inputs(train_a),
            _inputs(train_b),
            retrain_iterations=[1, 2, 3],
            train_a=train_a,
            train_b=train_b,
        )


def test_session_retrain_is_undone_with_its_step():
    train_a, train_b = _task(7), _task(8)
    session = ZipSession(make_mlp(7), make_mlp(8), _inputs(train_a), _inputs(train_b))
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    session.step(0.5)
    rep = session.retrain(train_a, train_b, iterations=5)
    assert rep.iterations == 5 and session.records[-1].retraining.iterations == 5
    session.undo()
    after = session.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_cancel_during_retraining_inside_zip_models():
    train_a, train_b = _task(9), _task(10)
    holder = {}

    def progress(event):
        if event.stage == "retrain" and event.done == 3:
            holder["session"].cancel()

    def keep(session, record):  # called after retraining; never reached for layer 1
        raise AssertionError("not reached")

    session_cls = ZipSession
    original_init = session_cls._finish_setup  # every constructor ends there

    def spy(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        holder["session"] = self

    session_cls._finish_setup = spy
    try:
        with pytest.raises(ZipCancelled, match="last completed iteration"):
            zip_models(
                make_mlp(9),
                make_mlp(10),
                _inputs(train_a),
                _inputs(train_b),
                retrain_iterations=20,
                train_a=train_a,
                train_b=train_b,
                progress=progress,
                after_step=keep,
            )
    finally:
        session_cls._finish_setup = original_init


def test_heldout_error_on_the_calibration_data_equals_the_prediction():
    """damping=0: measuring on the Hessian samples themselves gives the predicted error."""
    data_a, data_b = _inputs(_task(11)), _inputs(_task(12))
    result = zip_models(
        make_mlp(11),
        make_mlp(12),
        data_a,
        data_b,
        share=0.5,
        damping=0.0,
        heldout_a=data_a,
        heldout_b=data_b,
    )
    for rec in result.layers:
        assert rec.heldout_error == pytest.approx(rec.predicted_error, rel=1e-6)
    other = zip_models(
        make_mlp(11),
        make_mlp(12),
        data_a,
        data_b,
        share=0.5,
        damping=0.0,
        heldout_a=_inputs(_task(13)),
        heldout_b=_inputs(_task(14)),
    )
    assert other.layers[0].heldout_error != pytest.approx(other.layers[0].predicted_error)
    assert other.layers[0].heldout_error > 0


def test_damping_auto_picks_the_grid_value_with_the_least_heldout_error():
    data_a, data_b = _inputs(_task(15)), _inputs(_task(16))
    result = zip_models(make_mlp(15), make_mlp(16), data_a, data_b, share=1.0, damping="auto")
    for rec in result.layers:
        assert set(rec.damping_scores) == set(AUTO_DAMPING_GRID)
        assert rec.damping in AUTO_DAMPING_GRID
        assert rec.damping_scores[rec.damping] == min(rec.damping_scores.values())
        assert rec.n_samples == (256 - 256 // 5, 256 - 256 // 5)
    # the chosen factor reproduces: a fixed-damping zip on the same split gives the same pairs
    fixed = ZipSession(make_mlp(15), make_mlp(16), data_a, data_b, damping="auto")
    rec = fixed.step(1.0)
    np.testing.assert_array_equal(rec.pairs, result.layers[0].pairs)
    with pytest.raises(ValueError, match="at least 5"):
        zip_models(
            make_mlp(15),
            make_mlp(16),
            [torch.randn(3, 1, 8, 8)],
            [torch.randn(3, 1, 8, 8)],
            damping="auto",
        )


def test_evaluate_scores():
    data = _task(17)
    model = make_mlp(17)
    score = evaluate(model, data)
    assert 0 <= score.accuracy <= 1 and score.samples == 256
    assert score.error == pytest.approx(1 - score.accuracy)
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert score.accuracy == pytest.approx(acc)
    assert_close(torch.tensor(score.loss), torch.nn.functional.cross_entropy(model(x), y).detach())


def test_session_retrain_can_restore_on_cancel():
    train_a, train_b = _task(18), _task(19)
    session = ZipSession(make_mlp(18), make_mlp(19), _inputs(train_a), _inputs(train_b))
    session.step(0.5)
    assert session.hidden_layers == [("1", 24, 24), ("3", 16, 16)]  # the models' own widths
    before = {k: v.clone() for k, v in session.model.state_dict().items()}

    def stop(event):
        if event.stage == "retrain" and event.done == 3:
            session.cancel()

    session.progress = stop
    rep = session.retrain(train_a, train_b, iterations=20, restore_on_cancel=True)
    assert rep.cancelled and rep.iterations == 3
    assert session.records[-1].retraining is None
    assert all(torch.equal(v, before[k]) for k, v in session.model.state_dict().items())
    rep = session.retrain(train_a, train_b, iterations=20)
    assert rep.cancelled and session.records[-1].retraining.iterations == 3
    assert not all(torch.equal(v, before[k]) for k, v in session.model.state_dict().items())


def _count_host_reads(monkeypatch) -> list[str]:
    """Patch every way a tensor's value reaches Python (item, float/int/bool, tolist, numpy,
    cpu) to record the call: on a GPU each one waits for the device queue to drain."""
    calls: list[str] = []
    for name in ("item", "__float__", "__int__", "__bool__", "__index__", "tolist", "numpy", "cpu"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


@pytest.mark.parametrize("cadence", [10, 25])
def test_retraining_reads_the_device_once_per_cadence(monkeypatch, cadence):
    """200 iterations read tensors into Python about 200 / cadence times (plus a constant for
    the start and the end), not once per iteration; the report is the one a per-iteration
    read gives (the same losses, clip count and weights)."""
    from mtz_core.training import retrain_tasks

    train_a, train_b = _task(20), _task(21, classes=4)
    net = zip_models(
        make_mlp(20).eval(), make_mlp(21, classes=4).eval(), _inputs(train_a), _inputs(train_b)
    ).model
    every = net.clone()
    events = []
    calls = _count_host_reads(monkeypatch)
    rep = retrain_tasks(
        net,
        [train_a, train_b],
        iterations=200,
        clip_grad_norm=0.5,
        sync_every=cadence,
        progress=events.append,
    )
    reads = len(calls)
    monkeypatch.undo()
    assert reads <= 200 // cadence + 5, calls[:40]
    ref = retrain_tasks(every, [train_a, train_b], iterations=200, clip_grad_norm=0.5, sync_every=1)
    assert rep.losses == ref.losses and rep.clipped == ref.clipped > 0
    assert [e.iteration for e in events] == list(range(1, 201))  # every event still arrives
    assert [e.losses for e in events] == rep.losses
    for p, q in zip(net.parameters(), every.parameters()):
        assert torch.equal(p, q)


def test_divergence_between_reads_names_the_iteration_and_restores():
    """A loss that turns NaN between two reads of the device: the run stops at the read,
    naming the first bad iteration and the range read with it, with the weights restored and
    no progress event for the bad iteration or after it."""
    data = _task(4)
    model = make_mlp(4)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    with pytest.raises(TrainingDiverged, match=r"at iteration (\d+) \(iterations 1-10 ") as err:
        train(
            model,
            data,
            iterations=50,
            lr=1e6,
            device="cpu",
            sync_every=10,
            progress=lambda p: seen.append(p.iteration),
        )
    bad = int(err.value.args[0].split("at iteration ")[1].split()[0])
    assert seen == list(range(1, bad))
    for k, v in model.state_dict().items():
        assert torch.equal(v, start[k])
    with pytest.raises(ValueError, match="sync_every must be an int >= 1"):
        train(make_mlp(0), data, iterations=2, device="cpu", sync_every=0)


@pytest.mark.parametrize("damping", [0.01, "auto"])
def test_hessian_streaming_reads_the_device_per_pass_not_per_batch(monkeypatch, damping):
    """A zip reads tensor values into Python a few times per layer (solver choices, checks),
    never per calibration batch: the same data in 16 batches or in 4 costs the same number
    of reads (damping="auto" splits every batch into kept and held-out samples too)."""
    data_a, data_b = _inputs(_task(22)), _inputs(_task(23))

    def reads(batches: int) -> int:
        a = list(torch.cat(data_a).chunk(batches))
        b = list(torch.cat(data_b).chunk(batches))
        calls = _count_host_reads(monkeypatch)
        zip_models(
            make_mlp(22), make_mlp(23), a, b, share=0.5, damping=damping, heldout_a=a, heldout_b=b
        )
        monkeypatch.undo()
        return len(calls)

    few, many = reads(4), reads(16)
    assert few == many > 0
