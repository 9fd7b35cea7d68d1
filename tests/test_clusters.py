"""Merges of units from either model (`mtz_core.clusters`): MTZ with within-model merges and
the ZipIt! baseline, against oracles: share 0 is the originals, a permuted copy is recovered,
two identical units of one model merge at no cost and change nothing, the recorded errors are
the layer errors measured on the samples, and the greedy rules equal their sequential
definitions."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import ConvNet, LeNet5, make_mlp, permuted_copy
from torch import nn
from torch.testing import assert_close

import mtz_core
from mtz_core import ZippedNet, ZipSession, zip_models
from mtz_core.clusters import union_ward, within_costs, zipit_clusters
from mtz_core.hessian import LayerHessian

MODELS = {
    "mlp": (lambda s: make_mlp(s), (1, 8, 8)),
    "convnet_bn": (lambda s: ConvNet(s), (1, 8, 8)),
    "lenet5": (lambda s: LeNet5(s), (1, 28, 28)),
}
OPTIONS = {"zipit": {"method": "zipit"}, "within": {"within_model": True}}


def data_for(shape, n=64, seed=0, batches=2, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return list(torch.randn(n, *shape, generator=g, dtype=dtype).chunk(batches))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("option", list(OPTIONS))
def test_share_zero_reproduces_both_models(name, option):
    make, shape = MODELS[name]
    a, b = make(1), make(2)
    data = data_for(shape)
    result = zip_models(a, b, data, data, share=0.0, **OPTIONS[option])
    x = torch.cat(data)
    with torch.no_grad():
        assert_close(result.model(x, 0), a(x), rtol=1e-5, atol=1e-5)
        assert_close(result.model(x, 1), b(x), rtol=1e-5, atol=1e-5)
    assert all(r.k == 0 and r.predicted_error == 0 for r in result.layers)


@pytest.mark.parametrize("name,option", [(name, "within") for name in MODELS] + [("mlp", "zipit")])
def test_permuted_copy_is_recovered(name, option):
    """B is A with its hidden units permuted: every unit of A merges with its copy in B (a
    correlation of 1, an MTZ cost of 0), and both tasks compute A's outputs. ZipIt! only on
    the MLP, whose units all vary: ConvNet's and LeNet-5's fc layers have units that never
    fire on these samples, which no correlation tells apart (ZipIt! merges them by index,
    and their averaged rows then fire)."""
    make, shape = MODELS[name]
    a = make(3)
    b, perms = permuted_copy(a)
    data = data_for(shape)
    result = zip_models(a, b, data, data, share=1.0, **OPTIONS[option])
    for rec, perm in zip(result.layers, perms):
        assert rec.k == len(perm) and rec.pairs.shape == (len(perm), 2)
        order = np.argsort(rec.pairs[:, 0])
        assert_close(torch.as_tensor(rec.pairs[order, 1]), perm.argsort(), rtol=0, atol=0)
        assert rec.predicted_error <= 1e-6 * (1 + rec.pair_costs.size)
    x = torch.cat(data)
    with torch.no_grad():
        for t in (0, 1):
            assert_close(result.model(x, t), a(x), rtol=1e-4, atol=1e-4)


def _with_twin(model: nn.Sequential, unit: int, twin: int) -> nn.Sequential:
    """`model` with hidden unit `twin` of its first layer a copy of `unit` (weights and bias);
    the next layer's columns stay as they are, so the model computes something new."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m[1].weight[twin] = m[1].weight[unit]
        m[1].bias[twin] = m[1].bias[unit]
    return m


def test_identical_units_of_one_model_merge_first_and_change_nothing():
    a = _with_twin(make_mlp(5).double(), 3, 11)
    b = make_mlp(6).double()
    data = data_for((1, 8, 8), dtype=torch.float64)
    s = ZipSession(a, b, data, data, within_model=True, damping=0.0)
    rec = s.step(k=1)
    assert rec.k == 0 and rec.clusters[0][3] == rec.clusters[0][11]  # the twins, not a pair
    assert rec.predicted_error < 1e-20
    x = torch.cat(data)
    with torch.no_grad():
        assert_close(s.model(x, 0), a(x), rtol=1e-12, atol=1e-12)
        assert_close(s.model(x, 1), b(x), rtol=1e-12, atol=1e-12)
    assert rec.saved == a[1].weight.shape[1] + 1 + a[3].weight.shape[0]  # a row and a column


def _layer_inputs(net: ZippedNet, index: int, x: torch.Tensor, task: int) -> torch.Tensor:
    got = []
    handle = net.layers[index].register_forward_pre_hook(lambda _m, args: got.append(args[0][0]))
    try:
        with torch.no_grad():
            net(x, task)
    finally:
        handle.remove()
    return got[0]


@pytest.mark.parametrize("option", list(OPTIONS))
def test_recorded_error_is_the_measured_layer_error(option):
    """After the first layer is zipped half way, the second layer's step: Σ_t ½ mean over the
    samples of Σ_j (Δy_j)², each task's unit j taking the row its merged unit applies."""
    a, b = make_mlp(7).double(), make_mlp(8).double()
    data = [data_for((1, 8, 8), seed=s, dtype=torch.float64) for s in (1, 2)]
    s = ZipSession(a, b, data[0], data[1], damping=0.1, **OPTIONS[option])
    s.step(0.5)
    before = s.model.clone()
    rec = s.step(0.75)
    measured = 0.0
    for t in (0, 1):
        x = torch.cat(data[t])
        h = _layer_inputs(before, 1, x, t)
        y0 = before.layers[1].apply_weights(h, *before.layers[1].task_weight(t))
        w, bias = s.model.layers[1].task_weight(t)
        y1 = s.model.layers[1].apply_weights(h, w, bias)
        pos = _positions(rec.clusters[t])
        measured += 0.5 * float((y1[:, pos] - y0).square().sum(1).mean().detach())
    assert rec.predicted_error == pytest.approx(measured, rel=1e-9, abs=1e-12)
    assert rec.pair_errors.sum() == pytest.approx(rec.predicted_error, rel=1e-9)
    assert rec.saved == before.num_parameters() - s.model.num_parameters()


def _positions(assign: np.ndarray) -> torch.Tensor:
    """Where each original unit's merged unit sits in the task's layout (ids in order)."""
    ids = np.unique(assign)
    return torch.as_tensor(np.searchsorted(ids, assign))


def test_within_cost_is_the_least_squares_merge_of_two_units():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    xb = torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], 1)
    v = torch.randn(5, 7, generator=g, dtype=torch.float64)
    moment = (xb.T @ xb / 50)[None]
    h = LayerHessian.from_moment(moment, 1, True, "exact")
    cost = within_costs(h, v)
    for i, j in ((0, 1), (2, 4)):
        # min over w of ½ mean (x̄·(w − v_i))² + ½ mean (x̄·(w − v_j))²: a least-squares fit
        target = torch.cat([xb @ v[i], xb @ v[j]])
        w = torch.linalg.lstsq(torch.cat([xb, xb]), target[:, None]).solution[:, 0]
        assert_close(w, 0.5 * (v[i] + v[j]), rtol=1e-9, atol=1e-10)
        best = 0.5 * float(((torch.cat([xb, xb]) @ w - target) ** 2).sum()) / 50
        assert float(cost[i, j]) == pytest.approx(best, rel=1e-9)
    assert math.isinf(float(cost[3, 3]))


def _ward_reference(va, vb, h_a, h_b, cross, m):
    """union_ward's rule written the plain way: groups as member lists, every candidate's
    exact cost recomputed from the members' rows at every step."""
    n_a = len(va)
    groups = [[i] for i in range(n_a)] + [[n_a + j] for j in range(len(vb))]
    final = []
    for _ in range(m):
        best = None
        for x in range(len(groups)):
            for y in range(x + 1, len(groups)):
                gx, gy = groups[x], groups[y]
                ax, ay = gx[0] < n_a, gy[0] < n_a
                if ax != ay:
                    if len(gx) > 1 or len(gy) > 1:
                        continue
                    i, j = (gx[0], gy[0]) if ax else (gy[0], gx[0])
                    cost = float(cross[i, j - n_a])
                else:
                    v, h, off = (va, h_a, 0) if ax else (vb, h_b, n_a)
                    cx = v[[u - off for u in gx]].mean(0)
                    cy = v[[u - off for u in gy]].mean(0)
                    nx, ny = len(gx), len(gy)
                    cost = 0.5 * nx * ny / (nx + ny) * float(h.quad((cx - cy)[None])[0])
                if best is None or cost < best[0] - 1e-12:
                    best = (cost, x, y)
        _, x, y = best
        gx, gy = groups[x], groups[y]
        if (gx[0] < n_a) != (gy[0] < n_a):
            final.append(sorted(gx + gy))
            groups = [g for k, g in enumerate(groups) if k not in (x, y)]
        else:
            groups[x] = gx + gy
            del groups[y]
    return sorted(final + [sorted(g) for g in groups])


@pytest.mark.parametrize("seed", range(3))
def test_union_ward_is_the_exact_greedy(seed):
    g = torch.Generator().manual_seed(seed)
    hs, vs = [], []
    for n in (7, 6):
        x = torch.randn(40, 4, generator=g, dtype=torch.float64)
        xb = torch.cat([x, torch.ones(40, 1, dtype=torch.float64)], 1)
        hs.append(LayerHessian.from_moment((xb.T @ xb / 40)[None], 1, True, "exact"))
        vs.append(torch.randn(n, 5, generator=g, dtype=torch.float64))
    cross = torch.rand(7, 6, generator=g, dtype=torch.float64) * 3
    for m in (2, 4, 6):  # up to min(n_a, n_b), what a share of 1 asks
        within = [within_costs(h, v) for h, v in zip(hs, vs)]
        assign, shared = union_ward(within[0], within[1], cross, m)
        clusters: dict[int, list[int]] = {}
        for t, a in enumerate(assign):
            for j, u in enumerate(a.tolist()):
                clusters.setdefault(u, []).append(j + 7 * t)
        assert sorted(sorted(c) for c in clusters.values()) == _ward_reference(
            vs[0], vs[1], hs[0], hs[1], cross, m
        )
        assert len(clusters) == 13 - m
        for u, c in clusters.items():  # shared units first, each one unit of A and one of B
            assert (u < shared) == (min(c) < 7 <= max(c))
            assert u >= shared or len(c) == 2


def _zipit_reference(sims, n_a, m, alpha, beta):
    """ZipIt!'s loop written the plain way: clusters as sets, similarities recomputed."""
    n = sims.shape[0]
    live = {u: ({u}, 0 if u < n_a else 1) for u in range(n)}
    sim = {(i, j): float(sims[i, j]) for i in range(n) for j in range(n) if i != j}
    budget = [int(m // 2 * beta + 1e-4)] * 2
    for _ in range(m):
        best = None
        for (i, j), v in sim.items():
            if i < j and i in live and j in live:
                oi, oj = live[i][1], live[j][1]
                if oi == oj and budget[oi] <= 0:
                    continue
                if best is None or v > best[0] or (v == best[0] and i * n + j < best[1]):
                    best = (v, i * n + j)
        if best is None:
            break
        i, j = divmod(best[1], n)
        oi, oj = live[i][1], live[j][1]
        for u in live:
            if u not in (i, j):
                v = min(sim[(i, u)], sim[(j, u)])
                if alpha > 0:
                    v *= alpha
                elif live[u][1] in (oi, oj):
                    v = -math.inf
                sim[(i, u)] = sim[(u, i)] = v
        live[i] = (live[i][0] | live[j][0], oi)
        del live[j]
        if oi == oj:
            budget[oi] -= 1
    return sorted(sorted(c) for c, _ in live.values())


@pytest.mark.parametrize("alpha,beta", [(0.3, 0.125), (0.0, 1.0), (0.5, 1.0), (1.0, 0.5)])
def test_zipit_clusters_follow_the_papers_rule(alpha, beta):
    g = torch.Generator().manual_seed(1)
    f = torch.randn(200, 14, generator=g, dtype=torch.float64)
    f[:, 8:] += f[:, :6] * 1.5  # B's units correlate with A's
    sims = torch.corrcoef(f.T)
    assign, shared = zipit_clusters(sims, 8, 6, alpha, beta)
    clusters: dict[int, list[int]] = {}
    for t, a in enumerate(assign):
        for j, u in enumerate(a.tolist()):
            clusters.setdefault(u, []).append(j + 8 * t)
    assert sorted(sorted(c) for c in clusters.values()) == _zipit_reference(sims, 8, 6, alpha, beta)
    for u, c in clusters.items():
        assert (u < shared) == (min(c) < 8 <= max(c))


def test_no_within_model_merges_without_budget():
    f = torch.randn(300, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    f[:, 1] = f[:, 0]  # two units of A that are the same feature
    assign, shared = zipit_clusters(torch.corrcoef(f.T), 5, 5, 0.0, 0.0)
    assert shared == 5  # every merge pairs a unit of A with one of B
    assert sorted(assign[0].tolist()) == sorted(assign[1].tolist()) == list(range(5))


@pytest.mark.parametrize("option", list(OPTIONS))
def test_undo_save_load_and_export(tmp_path, option):
    a, b = LeNet5(1), LeNet5(2)
    data = data_for((1, 28, 28), n=32)
    s = ZipSession(a, b, data, data, **OPTIONS[option])
    x = torch.cat(data)
    with torch.no_grad():
        start = s.model.forward_all(x)
    s.step(0.5)
    s.undo()
    with torch.no_grad():
        for y, y0 in zip(s.model.forward_all(x), start):
            assert_close(y, y0, rtol=0, atol=0)
    result = s.run({"conv1": 4, "conv2": 12, "fc1": 30, "fc2": 20})
    path = tmp_path / "z.safetensors"
    result.model.save(path)
    back = ZippedNet.load(path)
    with torch.no_grad():
        for t in (0, 1):
            y = result.model(x, t)
            assert_close(back(x, t), y, rtol=1e-6, atol=1e-6)
            assert_close(result.model.export_task(t)(x), y, rtol=1e-5, atol=1e-5)
            assert_close(result.model.forward_all(x)[t], y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_residual_networks_refused(option):
    from mtz_core.models.registry import create_model

    a, b = (create_model("resnet20", (1, 8, 8), 3, width=0.25, seed=s) for s in (0, 1))
    data = data_for((1, 8, 8), n=16)
    with pytest.raises(ValueError, match="supports chains of layers; these models have resid"):
        ZipSession(a, b, data, data, **OPTIONS[option])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "zipit", "damping": "auto"}, "fixed damping"),
        ({"within_model": True, "batch_norm": "keep"}, "kept batch norm"),
        ({"method": "mtz-avg", "within_model": True}, "option of method 'mtz'"),
        ({"method": "zipit", "zipit_alpha": 1.5}, r"zipit_alpha must be a number in \[0, 1\]"),
    ],
)
def test_options_refused_with_reasons(kwargs, match):
    a, b = ConvNet(1), ConvNet(2)
    data = data_for((1, 8, 8))
    with pytest.raises(ValueError, match=match):
        ZipSession(a, b, data, data, **kwargs)


def test_three_models_refused():
    ms = [make_mlp(s) for s in range(3)]
    data = data_for((1, 8, 8))
    with pytest.raises(ValueError, match="zips two models; got 3"):
        ZipSession.many(ms, [data] * 3, method="zipit")


def test_methods_list_has_zipit():
    assert "zipit" in mtz_core.METHODS


def test_unit_sensitivity_is_the_fisher_diagonal():
    """E_x Σ_c p_c(x) (∂(−log p_c(x))/∂z_j)², one sample and one class at a time by autograd."""
    from mtz_core.streams import unit_sensitivity

    a, b = make_mlp(11).double(), make_mlp(12).double()
    data = data_for((1, 8, 8), n=12, dtype=torch.float64, batches=3)
    s = ZipSession(a, b, data, data)
    got = unit_sensitivity(s.model, 1, 0, s.data[0], check=lambda: None, on_batch=lambda *_: None)
    want = torch.zeros_like(got)
    for x in torch.cat(data):
        x = x[None]
        z = a[3](a[2](a[1](a[0](x)))).detach().requires_grad_(True)  # the second layer
        logp = torch.log_softmax(a[5](a[4](z)), dim=1)[0]
        for c in range(len(logp)):
            (g,) = torch.autograd.grad(-logp[c], z, retain_graph=True)
            want += logp[c].exp().detach() * g[0].square()
    assert_close(got, want / 12, rtol=1e-10, atol=1e-14)


def test_output_weighted_pairs_are_greedy_on_the_weighted_costs():
    from mtz_core.matching import greedy_pairs
    from mtz_core.streams import unit_sensitivity

    a, b = make_mlp(13).double(), make_mlp(14).double()
    data = data_for((1, 8, 8), dtype=torch.float64)
    plain = ZipSession(a, b, data, data)
    g = [
        unit_sensitivity(
            plain.model, 0, t, plain.data[t], check=lambda: None, on_batch=lambda *_: None
        )
        for t in (0, 1)
    ]
    w = 2 * g[0][:, None] * g[1][None, :] / (g[0][:, None] + g[1][None, :])
    rec_plain = plain.step(k=9)
    weighted = ZipSession(a, b, data, data, output_weighted=True)
    rec = weighted.step(k=9)
    want = greedy_pairs(torch.as_tensor(rec_plain.cost) * w, 9)
    assert_close(torch.as_tensor(rec.pairs), want, rtol=0, atol=0)
    assert not np.array_equal(rec.pairs, rec_plain.pairs)  # the weights changed the choice
    assert_close(torch.as_tensor(rec.cost), torch.as_tensor(rec_plain.cost))  # plain, recorded


def test_output_weighted_refused_where_not_defined():
    with pytest.raises(ValueError, match="methods 'mtz' and 'mtz-avg' without within_model"):
        mtz_core.ZipConfig(method="zipit", output_weighted=True)
