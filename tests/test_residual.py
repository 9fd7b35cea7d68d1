"""Zipping residual networks: oracles for channel groups, re-merges and kept batch norms.

* a permuted copy is recovered exactly (pairs, zero error, outputs) for ResNet-20 with both
  shortcut options and torchvision resnet18/resnet50, batch norm kept or folded;
* share 0 reproduces both models and saves nothing;
* a residual group's cost is the sum over its members of the least-squares merge error;
* a re-merge (a stream's rows over inputs shared after it) is the least-squares merge over
  those inputs, and the error it records is that minimum;
* save/load, export and undo give back what was zipped.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from residual_helpers import permuted_copy, randomize_norms

from mtz_core.hessian import capture_inputs
from mtz_core.models.registry import create_model
from mtz_core.models.resnet import resnet20, torchvision_resnet
from mtz_core.session import ZipSession
from mtz_core.zipped import ZippedNet

SHAPE20 = (1, 12, 12)
SHAPE_TV = (3, 32, 32)


def _data(shape, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64)


def _net20(option, seed, width=0.5):
    torch.manual_seed(seed)
    return randomize_norms(resnet20(6, in_channels=1, option=option, width=width).double(), seed)


def _zip_all(session, share=1.0):
    return [session.step(share) for _ in session.groups]


def _check_recovered(a, b, perms, x, batch_norm):
    s = ZipSession(a, b, x, x, batch_norm=batch_norm, damping=1e-3)
    records = _zip_all(s)
    scale = max(float(r.cost.max()) for r in records)
    for rec in records:
        inverse = torch.argsort(perms[rec.name])
        assert torch.equal(torch.as_tensor(rec.pairs[:, 1]), inverse[rec.pairs[:, 0]]), rec.name
        assert rec.predicted_error <= 1e-9 * scale
    assert any(rec.remerged for rec in records), "a residual net needs re-merges"
    with torch.no_grad():
        ya, yb = s.model.forward_all(x)
        ref = a(x)
    tol = 1e-9 * (1 + float(ref.abs().max()))
    assert torch.allclose(ya, ref, atol=tol) and torch.allclose(yb, ref, atol=tol)
    return s


@pytest.mark.parametrize("option", ["A", "B"])
@pytest.mark.parametrize("batch_norm", ["keep", "fold"])
def test_resnet20_permuted_copy_is_recovered(option, batch_norm):
    a = _net20(option, 0)
    b, perms = permuted_copy(a, SHAPE20)
    _check_recovered(a, b, perms, _data(SHAPE20), batch_norm)


@pytest.mark.parametrize(("name", "width"), [("resnet18", 0.125), ("resnet50", 0.0625)])
def test_torchvision_resnet_permuted_copy_is_recovered(name, width):
    torch.manual_seed(0)
    a = randomize_norms(torchvision_resnet(name, 5, width=width).double())
    b, perms = permuted_copy(a, SHAPE_TV)
    s = _check_recovered(a, b, perms, _data(SHAPE_TV, n=24), "keep")
    assert len(s.groups) == (12 if name == "resnet18" else 37)


@pytest.mark.parametrize("option", ["A", "B"])
def test_share_zero_reproduces_both_models_and_saves_nothing(option):
    a, b = _net20(option, 0), _net20(option, 1)
    x = _data(SHAPE20)
    s = ZipSession(a, b, x, x, batch_norm="keep")
    for _ in s.groups:
        s.step(0.0)
    with torch.no_grad():
        ya, yb = s.model.forward_all(x)
        assert torch.allclose(ya, a(x), atol=1e-10) and torch.allclose(yb, b(x), atol=1e-10)
    res = s.result()
    assert res.params["zipped"] == res.params["a"] + res.params["b"]


def _inputs(model, index, task, x):
    """Layer `index`'s shared-input patches [x; 1] for task `task` (rows: samples × positions)."""
    layer = model.layers[index]
    got = []
    with torch.no_grad(), capture_inputs(layer, lambda xs: got.append(xs[0])) as run:
        run(lambda: model(x, task))
    h = got[0][:, : layer.sizes.in_shared]
    sp = layer.spec
    if h.shape[1]:
        cols = F.unfold(h, sp.kernel_size, sp.dilation, sp.padding, sp.stride)  # (n, s·k², L)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    else:  # no shared inputs yet: one row per output position, no columns
        rows = h.new_zeros((h.shape[0] * math.prod(sp.out_shape[1:]), 0))
    if layer.has_bias:
        rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype)], dim=1)
    return rows


def _least_squares_error(rows, targets):
    """min over w of Σ_t ½ mean_r ((w − v_t)·x_r)² (rows[t], targets[t] = v_t): the merge error."""
    lhs = torch.cat([r / r.shape[0] ** 0.5 for r in rows])
    rhs = torch.cat([(r @ v) / r.shape[0] ** 0.5 for r, v in zip(rows, targets)])
    w = torch.linalg.lstsq(lhs, rhs[:, None], driver="gelsd").solution.flatten()
    return 0.5 * float(((lhs @ w - rhs) ** 2).sum()), w


def _vector(weight_rows, bias):
    v = weight_rows.detach().reshape(-1)
    return v if bias is None else torch.cat([v, bias.detach().reshape(1)])


def test_residual_group_cost_is_the_sum_of_member_least_squares_errors():
    a, b = _net20("B", 0), _net20("B", 1)
    x = _data(SHAPE20, n=64)
    s = ZipSession(a, b, x, x, batch_norm="fold", damping=0.0, hessian="exact")
    # step up to the second stage's stream: members layers.3.conv2 and the 1x1 shortcut
    while len(s.groups[s.next_index].members) < 2 or s.next_index == 0:
        s.step(0.5)
    group = s.groups[s.next_index]
    cost = s.cost_matrix()
    with_inputs = [i for i in group.members if s.model.layers[i].sizes.in_shared]
    assert len(with_inputs) == 2  # the others share only their (folded) bias so far
    for i, j in [(0, 0), (3, 5), (7, 2)]:
        total = 0.0
        for m in group.members:
            layer = s.model.layers[m]
            rows = [_inputs(s.model, m, t, x) for t in (0, 1)]
            sc = layer.input_columns(layer.sizes.in_shared)
            vs = [
                _vector(layer.own_weight[t][r, :sc].detach(), layer.own_bias[t][r].detach())
                for t, r in ((0, i), (1, j))
            ]
            total += _least_squares_error(rows, vs)[0]
        assert cost[i, j] == pytest.approx(total, rel=1e-6, abs=1e-12)


def test_remerge_is_the_least_squares_merge_over_the_newly_shared_inputs():
    a, b = _net20("B", 0), _net20("B", 1)
    x = _data(SHAPE20, n=64)
    s = ZipSession(a, b, x, x, batch_norm="fold", damping=0.0, hessian="exact")
    while True:
        rec = s.step(0.5)
        if rec.remerged:
            break
    reader_name, recorded = next(iter(rec.remerged.items()))
    r = next(i for i, layer in enumerate(s.model.layers) if layer.spec.name == reader_name)
    layer = s.model.layers[r]
    old = s._undo[-1].undo.layers[r]  # the reader before the step
    pairs = torch.as_tensor(rec.pairs)
    rows = [_inputs(s.model, r, t, x) for t in (0, 1)]
    total = 0.0
    for row in range(layer.sizes.shared):
        vs = [
            _vector(old.shared_own_weight[t][row, pairs[:, t]].detach(), old.shared_bias[row])
            for t in (0, 1)
        ]
        err, w = _least_squares_error(rows, vs)
        total += err
        got = _vector(layer.shared_weight[row].detach(), layer.shared_bias[row].detach())
        assert torch.allclose(got, w, rtol=1e-6, atol=1e-8)
    assert recorded == pytest.approx(total, rel=1e-6, abs=1e-12)
    assert rec.predicted_error == pytest.approx(float(rec.pair_errors.sum()) + recorded)


def test_saved_counts_undo_save_load_and_export(tmp_path):
    a, b = _net20("A", 0), _net20("A", 1)
    x = _data(SHAPE20)
    s = ZipSession(a, b, x, x, batch_norm="keep", damping=1e-2)
    before = s.model.num_parameters()
    with torch.no_grad():
        start = s.model.forward_all(x)
    records = [s.step(0.5) for _ in range(6)]
    assert sum(r.saved_parameters() for r in records) == before - s.model.num_parameters()
    with torch.no_grad():
        ys = s.model.forward_all(x)
    path = tmp_path / "resnet.safetensors"
    s.model.save(path)
    loaded = ZippedNet.load(path)
    with torch.no_grad():
        for t in (0, 1):
            assert torch.equal(loaded(x, t), ys[t])
            assert torch.allclose(s.model.export_task(t)(x), ys[t], atol=1e-12)
    for _ in records:
        s.undo()
    with torch.no_grad():
        for y0, y1 in zip(start, s.model.forward_all(x)):
            assert torch.equal(y0, y1)


def test_registry_resnets_zip_through_the_session():
    a = create_model("resnet20", (1, 8, 8), 3, width=0.25, seed=0)
    b = create_model("resnet20", (1, 8, 8), 4, width=0.25, seed=1)
    x = torch.randn(32, 1, 8, 8)
    s = ZipSession(a, b, x, x, batch_norm="keep")
    assert [g.name for g in s.groups][:2] == ["conv1 (+3)", "layers.0.conv1"]
    assert s.hidden_layers[0] == ("conv1 (+3)", 4, 4)
    res = s.run({name: 2 for name, _, _ in s.hidden_layers})
    assert res.saved > 0 and len(res.layers) == 12
