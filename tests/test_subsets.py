"""Units shared by subsets of the tasks (`subsets=True`, the paper's scheme for T ≥ 3).

Oracles: two models give exactly the default MTZ zip; share 0 reproduces each of three models
(three permuted copies zipping into one network: tests/test_many.py); the merged
weights are least squares over the tasks' data (autograd: the error's gradient vanishes on every
shared block and bias) and the recorded error is the layer error measured on the samples; the
stage costs equal a brute-force least-squares fit over the raw inputs; save/load, export and
resume are exact; what is not covered is refused by name.
"""

from __future__ import annotations

import pytest
import torch
from test_many import _mlps, _x
from torch import nn

from mtz_core import ZippedNet, ZipSession, zip_many
from mtz_core.config import ZipConfig
from mtz_core.hessian import capture_inputs
from mtz_core.models.resnet import resnet20
from mtz_core.pools import PoolLayer, PoolSizes, pool_layer_from
from mtz_core.subsets import SubsetProblem


def _inputs(model, index, task, x):
    """Layer `index`'s inputs for task `task` (all of them), with a column of ones."""
    got = []
    with torch.no_grad(), capture_inputs(model.layers[index], lambda xs: got.append(xs[0])) as run:
        run(lambda: model(x, task))
    h = got[0]
    return torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype)], dim=1)


def test_two_models_give_the_default_zip_exactly():
    models = _mlps(n=2)
    xs = [_x(seed=t) for t in range(2)]
    plain = ZipSession(models[0], models[1], xs[0], xs[1], damping=0.1)
    pooled = ZipSession(models[0], models[1], xs[0], xs[1], damping=0.1, subsets=True)
    assert pooled.model.pooled and not plain.model.pooled
    for share in (0.5, 1.0):
        a, b = plain.step(share), pooled.step(share)
        assert {tuple(p) for p in a.pairs.tolist()} == {tuple(p) for p in b.pairs.tolist()}
        assert b.predicted_error == pytest.approx(a.predicted_error, rel=1e-9)
        assert b.saved == a.saved
    x = _x(seed=5)
    with torch.no_grad():
        for t in range(2):
            torch.testing.assert_close(pooled.model(x, t), plain.model(x, t), rtol=0, atol=1e-12)
    assert pooled.model.num_parameters() == plain.model.num_parameters()


def test_pool_layer_from_a_zipped_layer_computes_the_same():
    models = _mlps(n=3)
    xs = [_x(seed=t) for t in range(3)]
    res = zip_many(models, xs, share=0.5, damping=0.1)
    net = res.model
    pooled = net.with_pools()
    x = _x(seed=9)
    with torch.no_grad():
        for t in range(3):
            # the default layer adds the shared and own products separately: round-off apart
            torch.testing.assert_close(pooled(x, t), net(x, t), rtol=0, atol=1e-12)
    assert pooled.num_parameters() == net.num_parameters()
    assert all(isinstance(layer, PoolLayer) for layer in pooled.layers)
    assert isinstance(pool_layer_from(net.layers[1]).sizes, PoolSizes)


def test_share_zero_reproduces_every_model_and_saves_nothing():
    models = _mlps()
    xs = [_x(seed=t) for t in range(3)]
    res = zip_many(models, xs, share=0.0, subsets=True)
    with torch.no_grad():
        for t, m in enumerate(models):
            assert torch.equal(res.model(xs[0], t), m(xs[0]))
    assert res.saved == 0


def _subset_session(damping=0.0, n=3):
    models = _mlps(n=n)
    xs = [_x(n=96, seed=t) for t in range(n)]
    s = ZipSession.many(models, xs, damping=damping, subsets=True)
    s.step(0.5)  # fc1: its inputs are shared by all; its units now in pools of 1, 2 and 3 tasks
    return s, xs


def test_merged_weights_are_least_squares_and_the_error_is_measured():
    s, xs = _subset_session(damping=0.0)
    before = s.model.layers[1]
    rec = s.step(0.5)  # fc2 reads pools shared by subsets
    layer = s.model.layers[1]
    assert len({p for p, _ in layer.sizes.out_pools}) >= 4  # subsets really occur
    assert any(len(p) == 2 for p, _ in layer.sizes.out_pools)
    params = dict(layer.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
    total = 0.0
    for t in range(3):
        x = _inputs(s.model, 1, t, xs[t])[:, :-1]
        old_w, old_b = before.task_weight(t)
        new_w, new_b = layer.task_weight(t)
        members = [int(m) for m in rec.units[:, t] if m >= 0]
        y_old = (x @ old_w.T + old_b)[:, members]
        y_new = x @ new_w.T + new_b
        total = total + 0.5 * ((y_new - y_old.detach()) ** 2).sum(1).mean()
    assert float(total.detach()) == pytest.approx(rec.predicted_error, rel=1e-8)
    total.backward()
    shared_out = {i for i, (p, _) in enumerate(layer.sizes.out_pools) if len(p) >= 2}
    checked = 0
    for name, p in params.items():
        kind, key = name.split(".")
        if kind == "blocks":
            po, qi = map(int, key.split("_"))
            common = set(layer.sizes.out_pools[po][0]) & set(layer.sizes.in_pools[qi][0])
            free = len(common) >= 2
        else:
            free = int(key) in shared_out
        if free:  # a free coordinate at its least-squares value: zero gradient
            assert float(p.grad.abs().max()) < 1e-9 * (1 + float(total.detach())), name
            checked += 1
    assert checked >= 4


def test_stage_costs_equal_a_brute_force_fit_over_the_raw_inputs():
    s, xs = _subset_session(damping=0.0)
    layer = s.model.layers[1]
    per, n_tasks = 1, 3
    xs_t = [_inputs(s.model, 1, t, xs[t]) for t in range(n_tasks)]
    hs = [x.T @ x / x.shape[0] for x in xs_t]
    vs = []
    for t in range(n_tasks):
        w, b = layer.task_weight(t)
        vs.append(torch.cat([w, b[:, None]], 1).detach())
    problem = SubsetProblem(layer.sizes.in_pools, per, True, hs, vs, 0.0)

    def columns(t):  # task t's columns of each input pool, then the bias
        out, off = {}, 0
        for q, (tasks, n) in enumerate(layer.sizes.in_pools):
            if t in tasks:
                out[q] = list(range(off, off + n))
                off += n
        return out, off

    def best(pool, members):
        """Least error over the free coordinates, by lstsq on the stacked raw inputs."""
        free = [
            q
            for q, (tasks, _) in enumerate(layer.sizes.in_pools)
            if len(set(pool) & set(tasks)) >= 2
        ]
        sizes = [layer.sizes.in_pools[q][1] for q in free]
        d = sum(sizes) + (1 if len(pool) >= 2 else 0)
        if d == 0:
            return 0.0
        lhs, rhs = [], []
        for t in pool:
            x = xs_t[t]
            cols, bias = columns(t)
            design = x.new_zeros(x.shape[0], d)
            target = x.new_zeros(x.shape[0])
            start = 0
            for q, size in zip(free, sizes):
                if q in cols:
                    design[:, start : start + size] = x[:, cols[q]]
                    target += x[:, cols[q]] @ vs[t][members[t], cols[q]]
                start += size
            if len(pool) >= 2:
                design[:, -1] = x[:, bias]
                target += x[:, bias] * vs[t][members[t], bias]
            lhs.append(design / x.shape[0] ** 0.5)
            rhs.append(target / x.shape[0] ** 0.5)
        lhs, rhs = torch.cat(lhs), torch.cat(rhs)
        z = torch.linalg.lstsq(lhs, rhs[:, None], driver="gelsd").solution.flatten()
        return 0.5 * float(((lhs @ z - rhs) ** 2).sum())

    # stage 2 (task 2 joins) for units of pools {0}, {1} and {0, 1}
    for pool, members in (((0,), {0: [3, 7]}), ((1,), {1: [2]}), ((0, 1), {0: [1, 4], 1: [5, 0]})):
        got = problem.stage_costs(pool, {t: torch.tensor(m) for t, m in members.items()}, 2)
        for row in range(got.shape[0]):
            mem = {t: m[row] for t, m in members.items()}
            for j in (0, 3, 6):
                want = best((*pool, 2), {**mem, 2: j}) - best(pool, mem)
                assert float(got[row, j]) == pytest.approx(want, rel=1e-7, abs=1e-10)


def test_save_load_export_and_retraining_keep_the_pools(tmp_path):
    s, xs = _subset_session(damping=0.1)
    s.step(0.5)
    s.retrain(*[[(xs[t][:32], torch.randint(0, 3 + t, (32,)))] for t in range(3)], iterations=3)
    path = tmp_path / "z.safetensors"
    s.model.save(path)
    loaded = ZippedNet.load(path)
    assert loaded.pooled and loaded.sizes == s.model.sizes
    x = _x(seed=3)
    with torch.no_grad():
        for t in range(3):
            assert torch.equal(loaded(x, t), s.model(x, t))
            assert torch.allclose(s.model.export_task(t)(x), s.model(x, t), atol=1e-12)
    assert loaded.num_parameters() == s.model.num_parameters()


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    models = _mlps()
    xs = [_x(seed=t) for t in range(3)]
    full = zip_many(models, xs, share=0.5, damping=0.1, subsets=True)
    first = zip_many(
        models, xs, share=0.5, damping=0.1, subsets=True, checkpoint_dir=tmp_path / "ck"
    )
    again = zip_many(
        models, xs, share=0.5, damping=0.1, subsets=True, checkpoint_dir=tmp_path / "ck"
    )
    x = _x(seed=4)
    with torch.no_grad():
        for t in range(3):
            assert torch.equal(first.model(x, t), full.model(x, t))
            assert torch.equal(again.model(x, t), full.model(x, t))


def test_heldout_error_on_the_hessian_data_is_the_predicted_error():
    models = _mlps()
    xs = [_x(seed=t) for t in range(3)]
    res = zip_many(models, xs, share=0.5, damping=0.1, heldout=xs, subsets=True)
    for r in res.layers:
        assert r.heldout_error == pytest.approx(r.predicted_error, rel=1e-9)
        assert r.units is not None and r.pairs.shape[1] == 3


def test_what_subsets_do_not_cover_is_refused_by_name():
    models = _mlps()
    xs = [_x(seed=t) for t in range(3)]
    with pytest.raises(ValueError, match="method 'mtz'"):
        ZipConfig(method="zipit", subsets=True)
    with pytest.raises(ValueError, match="fixed damping"):
        ZipConfig(damping="auto", subsets=True)
    with pytest.raises(ValueError, match="True or False"):
        ZipConfig(subsets=1)
    s = ZipSession.many(models, xs, subsets=True)
    with pytest.raises(ValueError, match="pairs="):
        s.step(pairs=torch.zeros(1, 3, dtype=torch.long))
    two = ZipSession(models[0], models[1], xs[0], xs[1], subsets=True)
    with pytest.raises(ValueError, match="stage by stage"):
        two.preview()
    with pytest.raises(ValueError, match="stage by stage"):
        two.cost_matrix()
    net = resnet20(5, in_channels=1, option="A", width=0.25).double()
    x = torch.randn(8, 1, 12, 12, dtype=torch.float64)
    with pytest.raises(ValueError, match="residual"):
        ZipSession.many([net, net, net], [x, x, x], subsets=True)
    bn = (
        nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
        .double()
        .eval()
    )
    with pytest.raises(ValueError, match="batch_norm='fold'"):
        ZipSession.many([bn, bn, bn], xs, subsets=True, batch_norm="keep")
