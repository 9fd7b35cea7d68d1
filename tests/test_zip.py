"""End-to-end oracles: share 0 is the originals, a permuted copy is found exactly, predictions
match measurements, the zipped network stores what it should and saves/loads/exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ConvNet, LeNet5, make_mlp, permuted_copy
from torch.testing import assert_close

import mtz_core
from mtz_core import ZippedNet, zip_models

MODELS = {
    "mlp": (lambda s: make_mlp(s), (1, 8, 8)),
    "convnet_bn": (lambda s: ConvNet(s), (1, 8, 8)),
    "lenet5": (lambda s: LeNet5(s), (1, 28, 28)),
}


def data_for(shape, n=64, seed=0, batches=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    return list(x.chunk(batches))


@pytest.mark.parametrize("name", list(MODELS))
def test_share_zero_reproduces_both_models(name):
    make, shape = MODELS[name]
    a, b = make(1), make(2)
    data = data_for(shape)
    result = zip_models(a, b, data, data, share=0.0)
    x = torch.cat(data)
    with torch.no_grad():
        assert_close(result.model(x, task=0), a(x), rtol=1e-5, atol=1e-5)
        assert_close(result.model(x, task=1), b(x), rtol=1e-5, atol=1e-5)
    assert all(rec.k == 0 for rec in result.layers)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in a.modules())
    if not has_bn:
        assert result.params["zipped"] == result.params["a"] + result.params["b"]
        assert result.saved == 0
    else:  # batch norm is folded into the conv before it: 4 channels' worth fewer parameters
        assert result.params["zipped"] < result.params["a"] + result.params["b"]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_permuted_copy_is_recovered_exactly(name, damping):
    make, shape = MODELS[name]
    a = make(3)
    b, perms = permuted_copy(a)
    data = data_for(shape)
    result = zip_models(a, b, data, data, share=1.0, damping=damping)
    assert len(result.layers) == len(perms)
    for rec, perm in zip(result.layers, perms):
        # B's neuron j is A's neuron perm[j], so A's neuron i pairs with B's perm.argsort()[i]
        order = np.argsort(rec.pairs[:, 0])
        assert_close(torch.as_tensor(rec.pairs[order, 1]), perm.argsort(), rtol=0, atol=0)
        assert rec.pair_costs.max() <= 1e-12
        assert rec.predicted_error <= 1e-12
    x = torch.cat(data)
    with torch.no_grad():
        want = a(x)
        for task in (0, 1):
            assert_close(result.model(x, task=task), want, rtol=1e-5, atol=1e-5)


def test_permuted_copy_stores_one_network_plus_a_head():
    a = make_mlp(4)
    b, _ = permuted_copy(a)
    data = data_for((1, 8, 8))
    result = zip_models(a, b, data, data, share=1.0)
    head = a[-1].weight.numel() + a[-1].bias.numel()
    assert result.params["zipped"] == result.params["a"] + head
    assert result.saved == result.params["b"] - head
    assert result.saved_fraction == pytest.approx(result.saved / (2 * result.params["a"]))


def test_parameter_count_follows_the_method_formula():
    a, b = make_mlp(5, widths=(24, 16)), make_mlp(6, widths=(20, 18))
    data = data_for((1, 8, 8))
    result = zip_models(a, b, data, data, k={"1": 10, "3": 8})
    k1, k2 = result.layers[0].k, result.layers[1].k
    assert (k1, k2) == (10, 8)
    # saved = Σ k_l·(s_{l-1}·K + 1) with s_0 = 64 inputs, s_1 = k1
    assert result.saved == k1 * (64 + 1) + k2 * (k1 + 1)
    assert sum(r.saved_parameters() for r in result.layers) == result.saved
    n_state = sum(t.numel() for t in result.model.state_dict().values())
    assert n_state == result.params["zipped"]


def test_conv_parameter_count_and_widths_that_differ():
    a, b = ConvNet(7, c1=6, c2=8, fc=12), ConvNet(8, c1=5, c2=9, fc=10)
    data = data_for((1, 8, 8))
    result = zip_models(a, b, data, data, share=1.0, damping=0.1)
    ks = [r.k for r in result.layers]
    assert ks == [5, 8, 10]
    # conv: K = 3·3; the linear after the flatten sees 4 positions per channel
    expected = ks[0] * (1 * 9 + 1) + ks[1] * (ks[0] * 9 + 1) + ks[2] * (ks[1] * 4 + 1)
    # the models as given also hold batch-norm scale and shift, folded away in the zipped net
    bn = sum(2 * m.num_features for m in [*a.modules(), *b.modules()] if hasattr(m, "running_var"))
    assert result.saved == expected + bn
    assert sum(r.saved_parameters() for r in result.layers) == expected
    x = torch.cat(data)
    with torch.no_grad():
        outs = result.model.forward_all(x)
    assert [o.shape for o in outs] == [(64, 5), (64, 5)]


@pytest.mark.parametrize("name", ["mlp", "convnet_bn", "lenet5"])
def test_predicted_error_equals_measured_first_layer_change(name):
    """damping=0: Σ d over the chosen pairs = ½·mean over samples (× positions) of the squared
    pre-activation change of the chosen neurons, summed over both tasks (calibration data)."""
    make, shape = MODELS[name]
    a, b = make(9), make(10)
    data_a, data_b = data_for(shape, seed=1), data_for(shape, seed=2)
    result = zip_models(a, b, data_a, data_b, share=0.5, damping=0.0)
    rec = result.layers[0]
    zipped_first = result.model.layers[0]
    orig = mtz_core.ZipSession(a, b, data_a, data_b, damping=0.0).model.layers[0]
    measured = 0.0
    for task, data, col in ((0, data_a, 0), (1, data_b, 1)):
        x = torch.cat(data).double()
        x = _before_first_layer(result.model, x)
        w_new, b_new = (t.double() for t in zipped_first.task_weight(task))
        w_old, b_old = (t.double() for t in orig.task_weight(task))
        y_new = zipped_first.apply_weights(x, w_new, b_new)[:, : rec.k]
        y_old = zipped_first.apply_weights(x, w_old, b_old)[:, torch.as_tensor(rec.pairs[:, col])]
        diff = (y_new - y_old) ** 2
        rows = diff.shape[0] * (diff[0, 0].numel())
        measured += 0.5 * diff.sum().item() / rows
    assert rec.predicted_error == pytest.approx(measured, rel=1e-6)
    assert rec.predicted_error == pytest.approx(rec.pair_costs.sum(), rel=1e-9)


def _before_first_layer(net: ZippedNet, x: torch.Tensor) -> torch.Tensor:
    for op in net.layers[0].spec.ops_before:
        x = op.apply(x)
    return x


@pytest.mark.parametrize("method", ["mtz-avg", "euclidean", "random"])
def test_baselines_average_and_report_mtz_costs(method):
    a, b = make_mlp(11), make_mlp(12)
    data = data_for((1, 8, 8))
    mtz = zip_models(a, b, data, data, share=0.5, damping=0.1)
    base = zip_models(a, b, data, data, share=0.5, damping=0.1, method=method, seed=3)
    rec, ref = base.layers[0], mtz.layers[0]
    assert rec.k == ref.k
    np.testing.assert_allclose(rec.cost, ref.cost)  # the MTZ cost whatever the method
    np.testing.assert_allclose(rec.pair_costs, rec.cost[rec.pairs[:, 0], rec.pairs[:, 1]])
    layer = base.model.layers[0]
    w_a, w_b = a[1].weight.detach(), b[1].weight.detach()
    avg = 0.5 * (w_a[rec.pairs[:, 0]] + w_b[rec.pairs[:, 1]])
    assert_close(layer.shared_weight.detach(), avg)
    if method == "mtz-avg":
        np.testing.assert_array_equal(rec.pairs, ref.pairs)
        # the Hessian-weighted merge is optimal for the same pairs
        assert ref.predicted_error <= rec.predicted_error + 1e-12
    if method == "euclidean":
        dist = ((w_a[:, None] - w_b[None]) ** 2).sum(-1) + (
            a[1].bias[:, None] - b[1].bias[None]
        ) ** 2
        first = divmod(int(dist.argmin()), dist.shape[1])
        assert tuple(rec.pairs[0]) == first
    if method == "random":
        again = zip_models(a, b, data, data, share=0.5, method=method, seed=3)
        np.testing.assert_array_equal(again.layers[0].pairs, rec.pairs)
        other = zip_models(a, b, data, data, share=0.5, method=method, seed=4)
        assert not np.array_equal(other.layers[0].pairs, rec.pairs)


def test_optimal_matching_never_costs_more_than_greedy():
    a, b = make_mlp(13), make_mlp(14)
    data = data_for((1, 8, 8))
    greedy = zip_models(a, b, data, data, share=0.5)
    optimal = zip_models(a, b, data, data, share=0.5, matching="optimal")
    g, o = greedy.layers[0], optimal.layers[0]
    assert o.k == g.k
    assert o.pair_costs.sum() <= g.pair_costs.sum() + 1e-12


def test_pairs_rebuild_a_zip_exactly(tmp_path):
    a, b = ConvNet(15), ConvNet(16)
    data = data_for((1, 8, 8))
    first = zip_models(a, b, data, data, share=0.5)
    recipe = {rec.name: rec.pairs.tolist() for rec in first.layers}
    again = zip_models(a, b, data, data, pairs=recipe)
    for r1, r2 in zip(first.layers, again.layers):
        np.testing.assert_array_equal(r1.pairs, r2.pairs)
    for t1, t2 in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(t1, t2)
    with pytest.raises(ValueError, match="unknown layers"):
        zip_models(a, b, data, data, pairs={"nope": [[0, 0]]})


def test_save_load_and_export_give_the_same_outputs(tmp_path):
    a, b = ConvNet(17), ConvNet(18, c1=5, c2=7, fc=11, classes=3)
    data = data_for((1, 8, 8))
    result = zip_models(a, b, data, data, share=0.6)
    path = tmp_path / "zipped.safetensors"
    result.model.save(path, metadata={"note": "test"})
    loaded = ZippedNet.load(path)
    x = torch.cat(data)
    with torch.no_grad():
        for task in (0, 1):
            want = result.model(x, task)
            assert_close(loaded(x, task), want, rtol=0, atol=0)
            exported = result.model.export_task(task).eval()
            assert_close(exported(x), want, rtol=1e-5, atol=1e-6)
            assert not isinstance(exported, ZippedNet)
    assert loaded.num_parameters() == result.model.num_parameters()
    (tmp_path / "bad.safetensors").write_text("not a model")
    with pytest.raises(ValueError, match="not a safetensors file"):
        ZippedNet.load(tmp_path / "bad.safetensors")


def test_forward_all_matches_forward_per_task():
    a, b = make_mlp(19), make_mlp(20)
    data = data_for((1, 8, 8))
    result = zip_models(a, b, data, data, share={"1": 1.0, "3": 0.5})
    x = torch.cat(data)
    with torch.no_grad():
        both = result.model.forward_all(x)
        for task in (0, 1):
            assert_close(both[task], result.model(x, task))


def test_models_are_not_modified():
    a, b = ConvNet(21), ConvNet(22)
    a.train()  # training mode too: the engine must not run it (batch-norm statistics)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (a, b)]
    data = data_for((1, 8, 8))
    zip_models(a, b, data, data, share=1.0)
    for m, state in zip((a, b), before):
        for k, v in m.state_dict().items():
            assert torch.equal(v, state[k]), k
    assert a.training and not b.training


def test_channel_and_block_hessians_still_zip():
    a, b = ConvNet(23), ConvNet(24)
    data = data_for((1, 8, 8))
    result = zip_models(a, b, data, data, share=1.0, hessian="channel", flatten_hessian="block")
    assert [r.hessian for r in result.layers] == ["channel", "channel", "block"]
    assert result.layers[2].hessian_blocks == 4
    auto = zip_models(a, b, data, data, share=1.0)
    assert [r.hessian for r in auto.layers] == ["exact", "exact", "exact"]
    bp, _ = permuted_copy(a)
    rec = zip_models(a, bp, data, data, hessian="channel", flatten_hessian="block")
    assert max(r.pair_costs.max() for r in rec.layers) <= 1e-12


@pytest.mark.parametrize(
    ("name", "shape", "kwargs"),
    [
        ("lenet300", (1, 28, 28), {}),
        ("lenet5", (1, 28, 28), {}),
        ("vgg11_bn", (1, 32, 32), {"width": 0.125}),
    ],
)
def test_registry_models_zip_and_recover_a_permuted_copy(name, shape, kwargs):
    from mtz_core.models import create_model

    a = create_model(name, shape, 10, seed=0, **kwargs).eval()
    with torch.no_grad():  # trained-looking batch-norm statistics
        for m in a.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    b, perms = permuted_copy(a)
    data = data_for(shape, n=32)
    result = zip_models(a, b, data, data, share=1.0)
    for rec, perm in zip(result.layers, perms):
        order = np.argsort(rec.pairs[:, 0])
        np.testing.assert_array_equal(rec.pairs[order, 1], perm.argsort().numpy())
    x = torch.cat(data)
    with torch.no_grad():
        assert_close(result.model(x, 1), a(x), rtol=1e-4, atol=1e-5)
