"""The per-task batch-norm merge (mtz_core.scaled) against brute-force least squares."""

import torch

from mtz_core.costs import sharing_operator
from mtz_core.hessian import LayerHessian, SecondMoment
from mtz_core.scaled import centred, scaled_error, scaled_sharing

F64 = torch.float64  # every tensor here is float64 (the algebra's precision)


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _hessian(x: torch.Tensor, k: int = 1, bias: bool = False) -> LayerHessian:
    """The Hessian of rows x (n, K, s) or (n, s)."""
    rows = x if x.dim() == 3 else x[:, None, :]
    mom = SecondMoment(rows.shape[2], rows.shape[1])
    mom.update(rows)
    return LayerHessian.from_moment(mom.finalize(), k, bias, "exact" if k == 1 else "block")


def _least_squares(xa, xb, a, b, sa, sb):
    """min over w, c_A, c_B of ½ mean_A (s_A((w − a)·x + c_A))² + ½ mean_B (…)²: (w, value)."""
    n_a, n_b, d = xa.shape[0], xb.shape[0], xa.shape[1]
    ra, rb = sa / (2 * n_a) ** 0.5, sb / (2 * n_b) ** 0.5
    top = torch.cat([xa, torch.ones(n_a, 1, dtype=F64), torch.zeros(n_a, 1, dtype=F64)], 1) * ra
    bottom = torch.cat([xb, torch.zeros(n_b, 1, dtype=F64), torch.ones(n_b, 1, dtype=F64)], 1) * rb
    design = torch.cat([top, bottom])
    target = torch.cat([ra * xa @ a, rb * xb @ b])
    sol = torch.linalg.lstsq(design, target[:, None], driver="gelsd").solution[:, 0]
    value = (design @ sol - target).square().sum()
    return sol[:d], value


def _data(seed: int, d: int = 6, n: int = 200):
    g = torch.Generator().manual_seed(seed)
    xa = torch.randn(n, d, generator=g, dtype=F64) @ torch.randn(d, d, generator=g, dtype=F64) + 2.0
    xb = (
        torch.randn(n + 37, d, generator=g, dtype=F64) * torch.rand(d, generator=g, dtype=F64) - 1.0
    )
    return xa, xb, g


def test_costs_and_merges_match_least_squares_for_every_pair():
    xa, xb, g = _data(0)
    va, vb = torch.randn(4, 6, generator=g, dtype=F64), torch.randn(5, 6, generator=g, dtype=F64)
    sa, sb = (
        torch.rand(4, generator=g, dtype=F64) * 3 + 0.1,
        torch.rand(5, generator=g, dtype=F64) * 3 + 0.1,
    )
    op = scaled_sharing(_hessian(xa), _hessian(xb))
    costs = op.cost_matrix(va, vb, sa, sb)
    for i in range(4):
        for j in range(5):
            w, value = _least_squares(xa, xb, va[i], vb[j], sa[i], sb[j])
            assert torch.isclose(costs[i, j], value, rtol=1e-9, atol=1e-12)
            merged = op.merge(va[i : i + 1], vb[j : j + 1], sa[i : i + 1], sb[j : j + 1])[0]
            assert torch.allclose(merged, w, rtol=1e-8, atol=1e-10)


def test_equal_scales_give_the_plain_two_hessian_form():
    xa, xb, g = _data(1)
    va, vb = torch.randn(3, 6, generator=g, dtype=F64), torch.randn(4, 6, generator=g, dtype=F64)
    ha, hb = centred(_hessian(xa)), centred(_hessian(xb))
    ones_a, ones_b = torch.ones(3, dtype=F64), torch.ones(4, dtype=F64)
    op = scaled_sharing(ha, hb)
    plain = sharing_operator(ha, hb)
    assert torch.allclose(op.cost_matrix(va, vb, ones_a, ones_b), plain.cost_matrix(va, vb))
    assert torch.allclose(op.merge(va[:3], vb[:3], ones_a, ones_b[:3]), plain.merge(va, vb[:3]))
    # one common scale c multiplies the cost by c² and leaves the merge alone
    c = torch.full((3,), 1.7, dtype=F64)
    scaled = op.cost_matrix(va, vb, c, torch.full((4,), 1.7, dtype=F64))
    assert torch.allclose(scaled, 1.7**2 * plain.cost_matrix(va, vb))


def test_dead_inputs_get_the_average_and_the_cost_stays_exact():
    xa, xb, g = _data(2)
    xa[:, 1] = 0.0  # an input no sample of either task excites
    xb[:, 1] = 0.0
    xb[:, 4] = 3.0  # constant for B only: its mean is absorbed, it is dead in Σ_B
    va, vb = torch.randn(3, 6, generator=g, dtype=F64), torch.randn(3, 6, generator=g, dtype=F64)
    sa, sb = _t([0.5, 1.0, 2.0]), _t([2.0, 0.3, 1.0])
    op = scaled_sharing(_hessian(xa), _hessian(xb))
    assert op.pseudo_inverse
    merged = op.merge(va, vb, sa, sb)
    assert torch.allclose(merged[:, 1], 0.5 * (va[:, 1] + vb[:, 1]))
    for i in range(3):
        w, value = _least_squares(xa, xb, va[i], vb[i], sa[i], sb[i])
        got = scaled_error(
            merged[i : i + 1],
            va[i : i + 1],
            vb[i : i + 1],
            sa[i : i + 1],
            sb[i : i + 1],
            _hessian(xa),
            _hessian(xb),
        )[0]
        assert torch.isclose(got, value, rtol=1e-8, atol=1e-12)
        assert torch.isclose(op.cost_matrix(va, vb, sa, sb)[i, i], value, rtol=1e-8, atol=1e-12)


def test_blocked_layouts_match_the_dense_block_diagonal_form():
    g = torch.Generator().manual_seed(3)
    k, s = 3, 4
    ha = _hessian(torch.randn(300, k, s, generator=g, dtype=F64) + 1, k)
    hb = _hessian(torch.randn(250, k, s, generator=g, dtype=F64) * 2, k)
    da, db = centred(ha).dense(), centred(hb).dense()
    va, vb = (
        torch.randn(2, k * s, generator=g, dtype=F64),
        torch.randn(3, k * s, generator=g, dtype=F64),
    )
    sa, sb = _t([0.7, 1.9]), _t([1.0, 0.2, 3.0])
    op = scaled_sharing(ha, hb)
    costs = op.cost_matrix(va, vb, sa, sb)
    for i in range(2):
        for j in range(3):
            alpha, beta = sa[i] ** 2, sb[j] ** 2
            w = torch.linalg.solve(alpha * da + beta * db, alpha * da @ va[i] + beta * db @ vb[j])
            value = 0.5 * (alpha * (w - va[i]) @ da @ (w - va[i]))
            value = value + 0.5 * (beta * (w - vb[j]) @ db @ (w - vb[j]))
            assert torch.isclose(costs[i, j], value, rtol=1e-9)
            merged = op.merge(va[i : i + 1], vb[j : j + 1], sa[i : i + 1], sb[j : j + 1])
            assert torch.allclose(merged[0], w, rtol=1e-8, atol=1e-10)


def test_a_zero_scale_takes_the_other_units_weights_at_no_cost():
    xa, xb, g = _data(4)
    va, vb = torch.randn(1, 6, generator=g, dtype=F64), torch.randn(1, 6, generator=g, dtype=F64)
    op = scaled_sharing(_hessian(xa), _hessian(xb))
    merged = op.merge(va, vb, torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64))
    assert torch.allclose(merged, vb)
    assert (
        op.cost_matrix(va, vb, torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64)).abs().max()
        < 1e-12
    )


def test_a_bias_costs_nothing_and_merges_to_the_average():
    xa, xb, g = _data(5)
    va, vb = torch.randn(3, 7, generator=g, dtype=F64), torch.randn(3, 7, generator=g, dtype=F64)
    sa, sb = _t([0.5, 1.0, 2.0]), _t([2.0, 0.3, 1.0])
    with_bias = scaled_sharing(_hessian(xa, bias=True), _hessian(xb, bias=True))
    without = scaled_sharing(_hessian(xa), _hessian(xb))
    costs = with_bias.cost_matrix(va, vb, sa, sb)
    assert torch.allclose(costs, without.cost_matrix(va[:, :6], vb[:, :6], sa, sb))
    merged = with_bias.merge(va, vb, sa, sb)
    assert torch.allclose(merged[:, 6], 0.5 * (va[:, 6] + vb[:, 6]))
    assert torch.allclose(merged[:, :6], without.merge(va[:, :6], vb[:, :6], sa, sb))


def _dense_cost(va, vb, sa, sb, dense_a, dense_b):
    """½ δᵀ Ĥ δ with Ĥ = H_A (H_A + H_B)⁻¹ H_B for H = s² Σ: the two-Hessian form per pair."""
    out = torch.empty(len(va), len(vb), dtype=F64)
    for i in range(len(va)):
        for j in range(len(vb)):
            ha, hb = sa[i] ** 2 * dense_a, sb[j] ** 2 * dense_b
            delta = va[i] - vb[j]
            out[i, j] = 0.5 * delta @ ha @ torch.linalg.solve(ha + hb, hb @ delta)
    return out


def test_clustered_coordinates_cost_what_the_dense_form_costs():
    """Fewer samples than inputs, damped: every direction the data never reach has one μ, and
    those coordinates cost through one matrix product (a cluster); a channel layout repeats
    each μ once per kernel position. Both against the dense per-pair form."""
    g = torch.Generator().manual_seed(7)
    for k, s, n in ((1, 12, 4), (3, 5, 40)):
        xa = torch.randn(n, k if k > 1 else 1, s, generator=g, dtype=F64)
        xb = torch.randn(n + 1, k if k > 1 else 1, s, generator=g, dtype=F64) * 2 + 1
        if k > 1:  # one channel block for every position (the channel kind's sharing)
            xa, xb = xa[:, :1], xb[:, :1]
        ha, _ = _hessian(xa, k, bias=True).damped(0.3)
        hb, _ = _hessian(xb, k, bias=True).damped(0.3)
        op = scaled_sharing(ha, hb)
        single, clusters = op._columns
        assert clusters, "no cluster: the test would not reach the matrix-product path"
        assert single.numel() + sum(len(c) for c, _, _ in clusters) == k * s
        d = ha.dim
        va = torch.randn(4, d, generator=g, dtype=F64)
        vb = torch.randn(3, d, generator=g, dtype=F64)
        sa = torch.rand(4, generator=g, dtype=F64) * 2 + 0.2
        sb = torch.rand(3, generator=g, dtype=F64) * 2 + 0.2
        dense_a = centred(ha).dense()[:-1, :-1]  # the bias costs nothing
        dense_b = centred(hb).dense()[:-1, :-1]
        want = _dense_cost(va[:, :-1], vb[:, :-1], sa, sb, dense_a, dense_b)
        assert torch.allclose(op.cost_matrix(va, vb, sa, sb), want, rtol=1e-9, atol=1e-12)


def test_cholesky_and_pseudo_inverse_paths_agree(monkeypatch):
    """A positive definite S takes the Cholesky path; the two-eigh path (for singular S) gives
    the same costs and merges on it."""
    import mtz_core.scaled as scaled

    xa, xb, g = _data(5)
    ha, hb = _hessian(xa), _hessian(xb)
    va, vb = torch.randn(4, 6, generator=g, dtype=F64), torch.randn(3, 6, generator=g, dtype=F64)
    sa, sb = torch.rand(4, generator=g, dtype=F64) + 0.3, torch.rand(3, generator=g, dtype=F64)
    fast = scaled_sharing(ha, hb)
    assert fast.range_proj is None
    monkeypatch.setattr(scaled, "_well_conditioned", lambda chol: False)
    slow = scaled_sharing(ha, hb)
    assert slow.range_proj is not None
    assert torch.allclose(fast.cost_matrix(va, vb, sa, sb), slow.cost_matrix(va, vb, sa, sb))
    merged = [op.merge(va[:3], vb, sa[:3], sb) for op in (fast, slow)]
    assert torch.allclose(*merged, rtol=1e-9, atol=1e-12)
