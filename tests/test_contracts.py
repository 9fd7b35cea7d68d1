"""One meaning per argument, exact counts, refusals that name the problem: `share` vs `k`, the
task of a zipped network, cancel tokens, `device=None`, bias-free layers, channel-mixing
operations, logits for the loss, and models handed over in train mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ConvNet, make_mlp, permuted_copy
from torch import nn
from torch.testing import assert_close

from mtz_core import (
    ArchitectureError,
    CancelToken,
    ZipCancelled,
    ZipSession,
    evaluate,
    resolve_device,
    retrain,
    train,
    zip_models,
)


def _data(seed: int, n: int = 48, shape=(1, 8, 8)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return list(torch.randn(n, *shape, generator=g).chunk(3))


def _task(seed: int, classes: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 1, 8, 8, generator=g)
    y = torch.randint(0, classes, (96,), generator=g)
    return list(zip(x.chunk(3), y.chunk(3)))


# ------------------------------------------------------------------------------ share and k


def test_share_is_a_fraction_whatever_its_type_and_k_is_a_count():
    a, b = make_mlp(1), make_mlp(2)  # widths 24, 16
    data = _data(1)
    assert [r.k for r in zip_models(a, b, data, data, share=1).layers] == [24, 16]
    assert [r.k for r in zip_models(a, b, data, data, share=1.0).layers] == [24, 16]
    assert [r.k for r in zip_models(a, b, data, data, k=1).layers] == [1, 1]
    assert [r.k for r in zip_models(a, b, data, data, k={"3": 5}).layers] == [0, 5]
    with pytest.raises(ValueError, match=r"share 3 .*pass k=3"):
        zip_models(a, b, data, data, share=3)
    with pytest.raises(TypeError, match=r"k for layer '1' must be a whole number.*share="):
        zip_models(a, b, data, data, k=0.5)
    with pytest.raises(ValueError, match="not both"):
        zip_models(a, b, data, data, share=0.5, k=3)
    session = ZipSession(a, b, data, data)
    rec = session.step(k=7)
    assert rec.k == 7 and rec.share is None
    assert session.restep(0.5).k == 12 and session.records[-1].share == 0.5
    with pytest.raises(ValueError, match="unknown layer"):
        session.restep(k={"nope": 1})


def test_a_zipped_network_needs_its_task():
    result = zip_models(make_mlp(3), make_mlp(4), _data(3), _data(3), share=0.5)
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(TypeError, match=r"needs the task.*export_task"):
        result.model(x)
    with torch.no_grad():
        assert_close(result.model.export_task(1)(x), result.model(x, 1))


# ------------------------------------------------------------------------------ cancel


def test_a_cancel_between_a_zip_and_its_retraining_is_not_lost():
    token = CancelToken()

    def cancel_after_the_zip(event):
        if event.stage == "done" and event.index == 0:
            token.cancel()  # the layer is zipped, its retraining has not started

    with pytest.raises(ZipCancelled, match="retraining after layer '1'"):
        zip_models(
            make_mlp(5),
            make_mlp(6),
            _data(5),
            _data(6),
            retrain_iterations=50,
            train_a=_task(5),
            train_b=_task(6),
            progress=cancel_after_the_zip,
            cancel=token,
        )
    assert token.cancelled  # the caller's token is the caller's: never cleared for them


def test_a_set_token_stops_zip_models_before_any_work():
    token = CancelToken()
    token.cancel()
    with pytest.raises(ZipCancelled):
        zip_models(make_mlp(5), make_mlp(6), _data(5), _data(6), cancel=token)


def test_the_sessions_own_token_is_consumed_by_the_call_it_stops():
    session = ZipSession(make_mlp(7), make_mlp(8), _data(7), _data(8))
    session.cancel()  # nothing runs: the next call stops for it
    with pytest.raises(ZipCancelled):
        session.step(0.5)
    assert not session.records
    assert session.step(0.5).k == 12  # consumed: the next call runs
    session.cancel()
    rep = session.retrain(_task(7), _task(8), iterations=10)
    assert rep.cancelled and rep.iterations == 0
    assert session.retrain(_task(7), _task(8), iterations=3).iterations == 3


# ------------------------------------------------------------------------------ device


def test_device_none_means_where_the_model_is_everywhere():
    with pytest.raises(ValueError, match="where the model already is"):
        resolve_device(None)
    model = make_mlp(9)
    rep = train(model, _task(9), iterations=2, device=None)
    assert rep.device == "cpu"
    session = ZipSession(make_mlp(9), make_mlp(10), _data(9), _data(10), device=None)
    assert session.device.type == "cpu"
    session.step(0.5)
    assert session.retrain(_task(9), _task(10), iterations=2, device=None).device == "cpu"


def test_undo_puts_every_tensor_back_on_the_sessions_device():
    """A retraining on another device moves the session there; undoing the step before it
    must not bring back layers on the old device (the meta device stands in for a GPU)."""
    session = ZipSession(make_mlp(11), make_mlp(12), _data(11), _data(12))
    session.step(0.5)
    session.to("meta")
    session.undo()
    assert {p.device.type for p in session.model.parameters()} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_undo_after_retraining_on_cuda_keeps_the_network_on_cuda():
    session = ZipSession(make_mlp(11), make_mlp(12), _data(11), _data(12))
    session.step(0.5)
    session.retrain(_task(11), _task(12), iterations=2, device="cuda")
    assert session.device.type == "cuda"
    session.undo()
    assert {p.device.type for p in session.model.parameters()} == {"cuda"}


# ------------------------------------------------------------------------------ counts


def _bias_free_mlp(seed: int, widths=(24, 16)) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    prev = 64
    for w in widths:
        layers += [nn.Linear(prev, w, bias=False), nn.ReLU()]
        prev = w
    return nn.Sequential(*layers, nn.Linear(prev, 10, bias=False)).eval()


class _BiasFreeConv(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.fc = nn.Linear(6 * 16, 12, bias=False)
        self.head = nn.Linear(12, 5)
        self.eval()

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.head(F.relu(self.fc(torch.flatten(x, 1))))


@pytest.mark.parametrize("make", [_bias_free_mlp, _BiasFreeConv], ids=["mlp", "conv"])
def test_bias_free_layers_are_counted_exactly(make, tmp_path):
    a, b = make(13), make(14)
    data = _data(13)
    zero = zip_models(a, b, data, data, share=0.0)
    assert zero.params["zipped"] == zero.params["a"] + zero.params["b"]
    assert zero.saved_fraction == 0.0
    x = torch.cat(data)
    with torch.no_grad():
        assert_close(zero.model(x, 0), a(x), rtol=1e-5, atol=1e-5)
    full = zip_models(a, b, data, data, share=1.0, hessian="channel")
    stored = sum(t.numel() for t in full.model.state_dict().values())
    assert stored == full.params["zipped"]
    assert full.saved == sum(r.saved_parameters() for r in full.layers)
    assert not any(r.bias for r in full.layers)
    path = tmp_path / "z.safetensors"
    full.model.save(path)
    loaded = type(full.model).load(path)
    with torch.no_grad():
        assert_close(loaded(x, 1), full.model(x, 1))
        assert_close(full.model.export_task(1)(x), full.model(x, 1))
    copy, _ = permuted_copy(a) if make is _bias_free_mlp else (a, None)
    same = zip_models(a, copy, data, data, share=1.0)
    assert max(float(r.pair_costs.max()) for r in same.layers) < 1e-9


def test_channel_layout_after_a_layer_zipped_with_share_zero():
    a, b = ConvNet(15), ConvNet(16)
    data = _data(15)
    result = zip_models(
        a, b, data, data, share={"features.0": 0.0, "features.4": 1.0}, hessian="channel"
    )
    assert [r.k for r in result.layers] == [0, 8, 0]
    assert result.layers[1].shared_inputs == 0  # only the bias is shared


# ------------------------------------------------------------------------------ operations


class _SoftmaxBetween(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 16), nn.Linear(16, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = torch.softmax(self.fc1(torch.flatten(x, 1)), dim=1)
        return self.fc3(F.relu(self.fc2(x)))


def test_an_operation_that_mixes_hidden_units_is_refused_naming_the_node():
    data = _data(17)
    with pytest.raises(ArchitectureError, match=r"node 'softmax.*mixes the channels.*'fc2'"):
        zip_models(_SoftmaxBetween(), _SoftmaxBetween(), data, data)


@pytest.mark.parametrize("tail", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1)])
def test_retraining_takes_the_loss_on_logits_not_probabilities(tail):
    a = nn.Sequential(*make_mlp(18), tail).eval()
    b = nn.Sequential(*make_mlp(19), tail).eval()
    data = _data(18)
    result = zip_models(a, b, data, data, share=0.5)
    (xa, ya), (xb, yb) = _task(18)[0], _task(19)[0]
    with torch.no_grad():
        expected = (
            F.cross_entropy(result.model.logits(xa, 0), ya).item(),
            F.cross_entropy(result.model.logits(xb, 1), yb).item(),
        )
        probs = result.model(xa, 0)
    assert_close(
        probs.exp().sum(1) if isinstance(tail, nn.LogSoftmax) else probs.sum(1), torch.ones(32)
    )
    rep = retrain(result.model, [(xa, ya)], [(xb, yb)], iterations=1, lr=1e-9)
    assert rep.losses[0] == pytest.approx(expected, rel=1e-5)
    score = evaluate(result.model, [(xa, ya)], task=0)
    assert score.loss == pytest.approx(expected[0], rel=1e-4)


class _EvalOnlyTanh(nn.Module):
    """Computes something else in eval mode than what a trace in train mode sees."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.fc2 = nn.Linear(64, 12), nn.Linear(12, 4)

    def forward(self, x):
        x = self.fc1(torch.flatten(x, 1))
        if not self.training:
            x = torch.tanh(x)
        return self.fc2(x)


def test_models_in_train_mode_are_checked_in_eval_mode():
    a, b = _EvalOnlyTanh(20).train(), _EvalOnlyTanh(21).train()
    data = _data(20)
    with pytest.raises(ValueError, match="do not reproduce"):
        ZipSession(a, b, data, data)
    assert a.training and b.training  # their modes are put back
    c, d = ConvNet(22).train(), ConvNet(23).train()
    stats = {k: v.clone() for k, v in c.state_dict().items()}
    ZipSession(c, d, data, data)  # batch norm replays its eval form: accepted
    assert all(torch.equal(v, stats[k]) for k, v in c.state_dict().items())
    assert all(m.training for m in c.modules())


def test_grid_of_random_pairs_is_a_prefix_of_the_full_order():
    """random pairs for k are the first k of the pairs for k + 1 (what previews rely on)."""
    a, b = make_mlp(24), make_mlp(25)
    data = _data(24)
    small = zip_models(a, b, data, data, k=5, method="random", seed=2)
    large = zip_models(a, b, data, data, k=9, method="random", seed=2)
    np.testing.assert_array_equal(small.layers[0].pairs, large.layers[0].pairs[:5])
