"""Batch norm kept per task (ZipConfig(batch_norm="keep")): exact start, honest counts, the
predicted error against the measured change of each task's normalised output, permuted copies."""

import pytest
import torch
from torch import nn

from mtz_core import ZippedNet, ZipSession
from mtz_core.architecture import trace_model
from mtz_core.norms import TaskNorm, recalibrate


def _bn(n: int, dims: int = 2) -> nn.Module:
    bn = nn.BatchNorm2d(n) if dims == 2 else nn.BatchNorm1d(n)
    with torch.no_grad():  # statistics and affine parameters far from the defaults
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.3, 3.0)
        bn.weight.uniform_(0.3, 2.0)
        bn.bias.normal_()
    return bn


def _conv_net(seed: int, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1, bias=bias),
        _bn(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, bias=False),
        _bn(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 25, 7),
        _bn(7, 1),
        nn.ReLU(),
        nn.Linear(7, 4),
    ).eval()


def _data(seed: int, n: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 5, 5, generator=g) * (1 + seed)


def _post_norm(net: ZippedNet, x: torch.Tensor, task: int, index: int) -> torch.Tensor:
    """Task `task`'s output of layer `index` after its kept norm."""
    out = {}
    layer = net.layers[index]
    handle = layer.norm.register_forward_hook(lambda m, args, y: out.update(y=y))
    try:
        with torch.no_grad():
            net(x, task)
    finally:
        handle.remove()
    return out["y"]


def test_share_zero_reproduces_both_models_and_saves_nothing():
    a, b = _conv_net(0), _conv_net(1)
    s = ZipSession(a, b, _data(0), _data(1), batch_norm="keep")
    x = _data(2)
    with torch.no_grad():
        for t, m in enumerate((a, b)):
            assert torch.allclose(s.model(x, t), m(x), rtol=1e-5, atol=1e-5)
    assert s.model.num_parameters() == s.params["a"] + s.params["b"]
    assert sum(isinstance(m, TaskNorm) for m in s.model.modules()) == 3
    # zipping with no pairs changes nothing either
    s.step(k=0)
    with torch.no_grad():
        assert torch.allclose(s.model(x, 1), b(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hessian", ["exact", "channel"])
def test_predicted_error_is_the_measured_change_of_the_normalised_outputs(hessian):
    a, b = _conv_net(0), _conv_net(1)
    da, db = _data(0), _data(1)
    s = ZipSession(a, b, da, db, batch_norm="keep", hessian=hessian, damping=0.1)
    before = [_post_norm(s.model, d, t, 0) for t, d in enumerate((da, db))]
    record = s.step(share=0.5)
    k = len(record.pairs)
    measured = 0.0
    for t, d in enumerate((da, db)):
        after = _post_norm(s.model, d, t, 0)[:, :k]
        old = before[t][:, torch.as_tensor(record.pairs[:, t])]
        # E = ½ Σ_units mean over samples × positions of the squared change
        measured += 0.5 * float((after - old).double().square().mean(dim=(0, 2, 3)).sum())
    assert record.predicted_error == pytest.approx(measured, rel=1e-4)
    assert record.predicted_error > 0


def test_the_merge_beats_averaging_with_the_running_means_recentred():
    a, b = _conv_net(0), _conv_net(1)
    errors = {}
    for method in ("mtz", "mtz-avg"):
        s = ZipSession(a, b, _data(0), _data(1), batch_norm="keep", method=method, damping=0.0)
        errors[method] = s.step(share=1.0).predicted_error
    assert errors["mtz"] < errors["mtz-avg"]


def _permuted(net: nn.Sequential, seed: int) -> nn.Sequential:
    """The same function with every hidden layer's units permuted (norms included)."""
    import copy

    new = copy.deepcopy(net)
    g = torch.Generator().manual_seed(seed)
    mods = list(new)
    weights = [i for i, m in enumerate(mods) if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for pos, i in enumerate(weights[:-1]):
            layer, bn, nxt = mods[i], mods[i + 1], mods[weights[pos + 1]]
            perm = torch.randperm(layer.weight.shape[0], generator=g)
            layer.weight.copy_(layer.weight[perm])
            if layer.bias is not None:
                layer.bias.copy_(layer.bias[perm])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(getattr(bn, name)[perm])
            if isinstance(nxt, nn.Linear) and nxt.weight.shape[1] != len(perm):
                p = nxt.weight.shape[1] // len(perm)
                cols = (perm[:, None] * p + torch.arange(p)).flatten()
                nxt.weight.copy_(nxt.weight[:, cols])
            else:
                nxt.weight.copy_(nxt.weight[:, perm])
    return new


def test_a_permuted_copy_is_recovered_exactly():
    a = _conv_net(3)
    b = _permuted(a, 7)
    x = _data(0)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), rtol=1e-5, atol=1e-5)
    s = ZipSession(a, b, x, _data(1), batch_norm="keep", damping=0.0)
    while not s.done:
        r = s.step(share=1.0)
        assert r.pair_costs.max() < 1e-8 * max(1.0, float(abs(r.cost).max()))
        assert r.predicted_error < 1e-8
    y = _data(4)
    with torch.no_grad():
        assert torch.allclose(s.model(y, 0), a(y), rtol=1e-4, atol=1e-4)
        assert torch.allclose(s.model(y, 1), b(y), rtol=1e-4, atol=1e-4)
    hidden = [(layer.sizes.shared, layer.sizes.out_own) for layer in s.model.layers[:-1]]
    assert hidden == [(6, (0, 0)), (8, (0, 0)), (7, (0, 0))]


def test_export_save_load_and_retraining_keep_the_norms_per_task(tmp_path):
    a, b = _conv_net(0), _conv_net(1)
    s = ZipSession(a, b, _data(0), _data(1), batch_norm="keep")
    s.step(share=0.5)
    s.step(share=1.0)
    x = _data(5)
    net = s.model
    with torch.no_grad():
        for t in (0, 1):
            plain = net.export_task(t).eval()
            assert sum(isinstance(m, nn.BatchNorm2d) for m in plain) == 2
            assert torch.allclose(plain(x), net(x, t), rtol=1e-5, atol=1e-5)
    path = tmp_path / "z.safetensors"
    net.save(path)
    back = ZippedNet.load(path)
    with torch.no_grad():
        assert torch.allclose(back(x, 1), net(x, 1), rtol=1e-6, atol=1e-6)
    # a training-mode pass of task A's batch moves only task A's statistics
    norm = net.layers[0].norm
    before_b = norm.stats(1)[0].clone()
    before_a = norm.stats(0)[0].clone()
    net.train()
    net(_data(0)[:32], 0)
    net.eval()
    assert torch.equal(norm.stats(1)[0], before_b)
    assert not torch.equal(norm.stats(0)[0], before_a)


def test_recalibration_sets_each_tasks_statistics_to_its_own_data():
    a, b = _conv_net(0), _conv_net(1)
    s = ZipSession(a, b, _data(0), _data(1), batch_norm="keep")
    s.step(share=1.0)
    net = s.model
    da, db = _data(0), _data(1)
    seen = recalibrate(net, [[da[:48], da[48:]], [db]], lambda x, t: net(x, t))
    assert seen == 192
    assert not net.training
    layer = net.layers[0]
    for t, d in enumerate((da, db)):
        pre: dict = {}
        handle = layer.norm.register_forward_pre_hook(
            lambda m, args, pre=pre: pre.update(y=args[0])
        )
        with torch.no_grad():
            net(d, t)
        handle.remove()
        y = pre["y"].double()
        mean = y.mean(dim=(0, 2, 3))
        var = y.var(dim=(0, 2, 3), unbiased=True)
        m, v = layer.norm.stats(t)
        assert torch.allclose(m.double(), mean, rtol=1e-5, atol=1e-6)
        # two batches for task A: the average of per-batch variances, not the pooled one
        if t == 1:
            assert torch.allclose(v.double(), var, rtol=1e-4, atol=1e-6)


def test_a_norm_without_running_statistics_is_refused_by_name():
    net = nn.Sequential(
        nn.Linear(4, 5), nn.BatchNorm1d(5, track_running_stats=False), nn.ReLU(), nn.Linear(5, 2)
    )
    with pytest.raises(ValueError, match="'1'.*running stat"):
        trace_model(net, (4,), batch_norm="keep")
    with pytest.raises(ValueError, match="batch_norm must be one of"):
        trace_model(net, (4,), batch_norm="drop")


def test_recalibrate_option_estimates_the_zipped_layers_statistics_and_undo_restores():
    a, b = _conv_net(0), _conv_net(1)
    da, db = _data(0), _data(1)
    s = ZipSession(a, b, da, db, batch_norm="keep", recalibrate=True)
    x = _data(6)
    with torch.no_grad():
        start = s.model(x, 0).clone()
    record = s.step(share=1.0)
    assert "recalibrate" in record.seconds
    layer = s.model.layers[0]
    pre = {}
    handle = layer.norm.register_forward_pre_hook(lambda m, args: pre.update(y=args[0]))
    with torch.no_grad():
        s.model(da, 0)
    handle.remove()
    mean = pre["y"].double().mean(dim=(0, 2, 3))
    assert torch.allclose(layer.norm.stats(0)[0].double(), mean, rtol=1e-5, atol=1e-6)
    s.undo()
    with torch.no_grad():
        assert torch.equal(s.model(x, 0), start)
    with pytest.raises(ValueError, match="needs batch_norm='keep'"):
        ZipSession(a, b, da, db, recalibrate=True)


def test_preview_and_auto_damping_agree_with_the_step_for_kept_norms():
    a, b = _conv_net(0), _conv_net(1)
    da, db = _data(0, 120), _data(1, 120)
    for damping in (1.0, "auto"):
        s = ZipSession(a, b, da, db, batch_norm="keep", damping=damping)
        preview = s.preview()
        record = s.step(k=4)
        assert preview.predicted[4] == pytest.approx(record.predicted_error, rel=1e-9)


def test_a_flattened_linear_layer_with_a_kept_norm_in_blocks_measures_its_error():
    a, b = _conv_net(0), _conv_net(1)
    da, db = _data(0), _data(1)
    s = ZipSession(a, b, da, db, batch_norm="keep", flatten_hessian="block", damping=0.1)
    s.step(share=1.0)
    s.step(share=1.0)
    before = [_post_norm(s.model, d, t, 2) for t, d in enumerate((da, db))]
    record = s.step(share=0.5)
    assert record.hessian_blocks == 25  # one block per position of the flattened 5×5 map
    k = len(record.pairs)
    measured = 0.0
    for t, d in enumerate((da, db)):
        after = _post_norm(s.model, d, t, 2)[:, :k]
        old = before[t][:, torch.as_tensor(record.pairs[:, t])]
        measured += 0.5 * float((after - old).double().square().mean(dim=0).sum())
    assert record.predicted_error == pytest.approx(measured, rel=1e-4)
