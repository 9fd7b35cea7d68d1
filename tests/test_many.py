"""More than two models: `zip_many` / `ZipSession.many` (every shared unit shared by all T).

Oracles: share 0 reproduces each model; permuted copies are recovered (pairs, zero error,
outputs) for a chain and a ResNet; the T-way merge is the least-squares merge over all tasks'
data, and the recorded error is what the applied weights cause.
"""

from __future__ import annotations

import pytest
import torch
from residual_helpers import permuted_copy, randomize_norms
from torch import nn

from mtz_core import ZipSession, zip_many
from mtz_core.hessian import capture_inputs
from mtz_core.models.registry import create_model
from mtz_core.models.resnet import resnet20


def _mlps(n=3, widths=(12, 10)):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(
            nn.Sequential(
                nn.Linear(6, widths[0]),
                nn.ReLU(),
                nn.Linear(widths[0], widths[1]),
                nn.ReLU(),
                nn.Linear(widths[1], 3 + seed),
            ).double()
        )
    return out


def _x(n=64, dim=6, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_share_zero_reproduces_every_model_and_saves_nothing():
    models = _mlps()
    xs = [_x(seed=t) for t in range(3)]
    res = zip_many(models, xs, share=0.0)
    with torch.no_grad():
        for t, m in enumerate(models):
            assert torch.equal(res.model(xs[0], t), m(xs[0]))
    assert res.saved == 0 and res.originals == sum(
        sum(p.numel() for p in m.parameters()) for m in models
    )


@pytest.mark.parametrize("kind, subsets", [("chain", False), ("resnet", False), ("chain", True)])
def test_three_permuted_copies_zip_into_one_network(kind, subsets):
    """Also with units shared by subsets of the tasks: every unit ends shared by all three."""
    if kind == "chain":
        torch.manual_seed(0)
        a = create_model("lenet5", (1, 12, 12), 4, seed=0).double().eval()
        shape = (1, 12, 12)
    else:
        torch.manual_seed(0)
        a = randomize_norms(resnet20(5, in_channels=1, option="A", width=0.5).double())
        shape = (1, 12, 12)
    b, pb = permuted_copy(a, shape, seed=1)
    c, pc = permuted_copy(a, shape, seed=2)
    x = torch.randn(48, *shape, dtype=torch.float64)
    s = ZipSession.many([a, b, c], [x, x, x], damping=1e-3, subsets=subsets)
    for _ in s.groups:
        rec = s.step(1.0)
        assert rec.pairs.shape[1] == 3 and rec.widths
        tuples = rec.units if subsets else rec.pairs
        if subsets:  # each unit joins its own copies: no unit of one or two tasks is left
            assert (rec.units >= 0).all() and rec.units.shape[0] == rec.widths[0]
        for col, perms in ((1, pb), (2, pc)):
            inverse = torch.argsort(perms[rec.name])
            assert torch.equal(torch.as_tensor(tuples[:, col]), inverse[tuples[:, 0]])
        assert rec.predicted_error < 1e-12
    with torch.no_grad():
        ref = a(x)
        for y in s.model.forward_all(x):
            assert torch.allclose(y, ref, atol=1e-10 * (1 + float(ref.abs().max())))
    # a full zip of three saves nearly 2/3 (more for the ResNet: its folded norms store one
    # bias per channel where the originals store a weight and a bias)
    assert 0.6 < s.result().saved_fraction < 0.67


def _rows(model, index, task, x):
    layer = model.layers[index]
    got = []
    with torch.no_grad(), capture_inputs(layer, lambda xs: got.append(xs[0])) as run:
        run(lambda: model(x, task))
    h = got[0][:, : layer.sizes.in_shared]
    return torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype)], dim=1)


def test_three_way_merge_is_least_squares_over_every_task():
    models = _mlps()
    xs = [_x(seed=t) for t in range(3)]
    s = ZipSession.many(models, xs, damping=0.0)
    s.step(1.0)  # fc1: every input shared
    rec = s.step(0.5)
    layer = s.model.layers[1]
    before = s._undo[-1].undo.layers[1]
    rows = [_rows(s.model, 1, t, xs[t]) for t in range(3)]
    total = 0.0
    for p, tup in enumerate(rec.pairs):
        vs = [
            torch.cat(
                [
                    before.own_weight[t][tup[t], : layer.sizes.in_shared],
                    before.own_bias[t][tup[t]].reshape(1),
                ]
            ).detach()
            for t in range(3)
        ]
        lhs = torch.cat([r / r.shape[0] ** 0.5 for r in rows])
        rhs = torch.cat([r @ v / r.shape[0] ** 0.5 for r, v in zip(rows, vs)])
        w = torch.linalg.lstsq(lhs, rhs[:, None], driver="gelsd").solution.flatten()
        got = torch.cat([layer.shared_weight[p], layer.shared_bias[p].reshape(1)]).detach()
        assert torch.allclose(got, w, rtol=1e-6, atol=1e-9)
        total += 0.5 * float(((lhs @ w - rhs) ** 2).sum())
    assert rec.predicted_error == pytest.approx(total, rel=1e-6)


def test_retraining_and_heldout_errors_cover_every_task():
    models = _mlps()
    xs = [_x(seed=t) for t in range(3)]
    trains = [[(xs[t][:32], torch.randint(0, 3 + t, (32,)))] for t in range(3)]
    res = zip_many(
        models, xs, share=0.5, damping=0.1, heldout=xs, retrain_iterations=3, trains=trains
    )
    assert all(r.retraining.iterations == 3 for r in res.layers)
    for r in res.layers:  # held-out data = Hessian data here: the same error
        assert r.heldout_error == pytest.approx(r.predicted_error, rel=1e-9)
    assert res.saved > 0 and res.saved_fraction == res.saved / res.originals


def test_bad_inputs_are_refused_clearly():
    models = _mlps()
    xs = [_x()] * 3
    with pytest.raises(ValueError, match="one calibration source per model"):
        ZipSession.many(models, xs[:2])
    with pytest.raises(ValueError, match="zip 2 to"):
        ZipSession.many(models[:1], xs[:1])
    s = ZipSession.many(models, xs)
    with pytest.raises(ValueError, match="two-model matrix; with 3 models"):
        s.cost_matrix()
    with pytest.raises(ValueError, match=r"pairs must be \(k, 3\)"):
        s.step(pairs=[[0, 1]])
    with pytest.raises(ValueError, match="column 2 repeats a unit"):
        s.step(pairs=[[0, 1, 2], [1, 2, 2]])
    with pytest.raises(TypeError, match="one training source per task"):
        s.retrain([(xs[0], torch.zeros(64, dtype=torch.long))], iterations=1)


def _bn_mlps(n=3, widths=(12, 10)):
    """MLPs whose hidden layers keep a batch norm (no bias of their own) with random
    statistics and affines, as trained ones would have."""
    out = []
    for seed in range(n):
        torch.manual_seed(10 + seed)
        m = nn.Sequential(
            nn.Linear(6, widths[0], bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(),
            nn.Linear(widths[0], widths[1], bias=False),
            nn.BatchNorm1d(widths[1]),
            nn.ReLU(),
            nn.Linear(widths[1], 3 + seed),
        ).double()
        with torch.no_grad():
            for bn in (m[1], m[4]):
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.3, 2.5)
                bn.bias.normal_()
        out.append(m.eval())
    return out


def test_kept_norms_share_zero_reproduces_every_model_and_saves_nothing():
    models = _bn_mlps()
    xs = [_x(seed=t) for t in range(3)]
    res = zip_many(models, xs, share=0.0, batch_norm="keep")
    with torch.no_grad():
        for t, m in enumerate(models):
            assert torch.equal(res.model(xs[0], t), m(xs[0]))
    assert res.saved == 0


@pytest.mark.slow
def test_kept_norms_three_permuted_resnets_are_recovered():
    """Kept norms, three permuted copies of a ResNet-20 with random norm statistics: the
    pairs are the permutations, nothing is lost, and the one network computes all three."""
    torch.manual_seed(0)  # width 0.25: the third model's stage takes a D³ solve per tuple
    a = randomize_norms(resnet20(5, in_channels=1, option="A", width=0.25).double())
    shape = (1, 12, 12)
    b, pb = permuted_copy(a, shape, seed=1)
    c, pc = permuted_copy(a, shape, seed=2)
    x = torch.randn(48, *shape, dtype=torch.float64)
    s = ZipSession.many([a, b, c], [x, x, x], damping=1e-3, batch_norm="keep")
    for _ in s.groups:
        rec = s.step(1.0)
        for col, perms in ((1, pb), (2, pc)):
            inverse = torch.argsort(perms[rec.name])
            assert torch.equal(torch.as_tensor(rec.pairs[:, col]), inverse[rec.pairs[:, 0]])
        assert rec.predicted_error < 1e-12
    with torch.no_grad():
        ref = a(x)
        for y in s.model.forward_all(x):
            assert torch.allclose(y, ref, atol=1e-10 * (1 + float(ref.abs().max())))


def test_kept_norms_three_way_merge_is_least_squares_with_each_tasks_scale():
    """With kept norms task t's error is ½ mean(s_t((w − v_t)·x + c_t))², its running mean
    absorbing c_t: the merge is least squares over the three tasks with one free intercept
    per task, and the recorded error its minimum; the third model's stage has a Hessian per
    merged pair (s_A² Σ_A + s_B² Σ_B differs per pair)."""
    models = _bn_mlps()
    xs = [_x(seed=t) for t in range(3)]
    s = ZipSession.many(models, xs, damping=0.0, batch_norm="keep", heldout=xs)
    s.step(1.0)
    rec = s.step(0.5)
    layer = s.model.layers[1]
    before = s._undo[-1].undo.layers[1]
    rows = [_rows(s.model, 1, t, xs[t])[:, :-1] for t in range(3)]  # no bias: the norm's mean
    total = 0.0
    for p, tup in enumerate(rec.pairs):
        vs = [before.own_weight[t][tup[t]].detach() for t in range(3)]
        scales = [float(before.norm.scale(t)[tup[t]].detach()) for t in range(3)]
        blocks, rhs = [], []
        for t, (r, v, sc) in enumerate(zip(rows, vs, scales)):
            f = sc / r.shape[0] ** 0.5
            intercepts = torch.zeros(r.shape[0], 3, dtype=r.dtype)
            intercepts[:, t] = 1.0
            blocks.append(f * torch.cat([r, intercepts], dim=1))
            rhs.append(f * (r @ v))
        lhs, rhs = torch.cat(blocks), torch.cat(rhs)
        sol = torch.linalg.lstsq(lhs, rhs[:, None], driver="gelsd").solution.flatten()
        w = sol[: layer.sizes.in_shared]
        seen = torch.cat(rows).abs().amax(dim=0) > 0  # an input no task's data excite: any w
        got = layer.shared_weight[p].detach()
        assert torch.allclose(got[seen], w[seen], rtol=1e-6, atol=1e-9)
        total += 0.5 * float(((lhs @ sol - rhs) ** 2).sum())
    assert rec.predicted_error == pytest.approx(total, rel=1e-6)
    assert rec.heldout_error == pytest.approx(rec.predicted_error, rel=1e-9)
    # the kept norms' running means absorbed the mean changes: each task's output is what
    # the least-squares merge with its intercept gives, so the measured error matches
    with torch.no_grad():
        assert all(torch.isfinite(y).all() for y in s.model.forward_all(xs[0]))


def test_auto_damping_scores_each_factor_by_the_held_out_error_of_its_plan():
    """damping="auto" for three models: every factor's stage-wise plan is scored by the error
    its weights cause on the samples held out of the Hessians. Oracle: a session at each
    fixed factor, given the remaining samples as its data and the held-out ones as held-out
    data, records exactly that score as its held-out error, and the least wins."""
    from mtz_core.config import AUTO_DAMPING_GRID, AUTO_HOLDOUT_EVERY

    models = _mlps()
    xs = [_x(n=80, seed=t) for t in range(3)]
    auto = ZipSession.many(models, xs, damping="auto")
    rec = auto.step(0.5)
    assert set(rec.damping_scores) == set(AUTO_DAMPING_GRID)
    assert rec.damping == min(rec.damping_scores, key=lambda d: (rec.damping_scores[d], -d))
    held = torch.arange(80) % AUTO_HOLDOUT_EVERY == AUTO_HOLDOUT_EVERY - 1
    for d in AUTO_DAMPING_GRID:
        fixed = ZipSession.many(
            models, [x[~held] for x in xs], damping=d, heldout=[x[held] for x in xs]
        )
        r = fixed.step(0.5)
        assert r.heldout_error == pytest.approx(rec.damping_scores[d], rel=1e-9)
        if d == rec.damping:
            assert (r.pairs == rec.pairs).all()
            assert r.predicted_error == pytest.approx(rec.predicted_error, rel=1e-9)


@pytest.mark.parametrize("subsets", [False, True])
def test_records_give_every_task_its_samples_and_damping(subsets):
    """n_samples and lambdas hold one entry per task (not the first two models' only)."""
    models = _mlps()
    xs = [_x(n=40 + 8 * t, seed=t) for t in range(3)]
    s = ZipSession.many(models, xs, damping=0.5, subsets=subsets)
    rec = s.step(0.5)  # fc1: every input shared by all three
    assert rec.n_samples == (40, 48, 56)
    for t, lam in enumerate(rec.lambdas):
        x = torch.cat([xs[t], torch.ones(xs[t].shape[0], 1, dtype=torch.float64)], 1)
        h = x.T @ x / x.shape[0]
        assert lam == pytest.approx(0.5 * float(torch.trace(h)) / h.shape[0], rel=1e-9)
    assert len(rec.lambdas) == 3
