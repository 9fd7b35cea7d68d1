"""Hessians against autograd, costs and merges against a per-pair brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from mtz_core.architecture import LayerSpec
from mtz_core.costs import average_merge, merge_error, sharing_operator, squared_distance
from mtz_core.hessian import LayerHessian, SecondMoment, hessian_rows, hessian_shape
from mtz_core.layout import incoming_vectors, vectors_to_weights

CONV = LayerSpec("c", "conv", 3, 4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0))
LINEAR = LayerSpec("l", "linear", 5, 4)
FLAT = LayerSpec("f", "linear", 3, 4, positions=6)


def _hessian(x, spec, kind, batches=3):
    blocks, dim = hessian_shape(
        spec, x.shape[1] // (spec.positions if spec.kind == "linear" else 1), kind
    )
    acc = SecondMoment(dim, blocks)
    for chunk in x.chunk(batches):
        acc.update(hessian_rows(chunk, spec, kind))
    return acc.finalize()


def test_linear_hessian_equals_autograd_hessian_of_the_layer_error():
    torch.manual_seed(0)
    x = torch.randn(50, 5, dtype=torch.float64)
    w0 = torch.randn(6, dtype=torch.float64)  # one neuron: 5 weights + bias

    def error(w):  # E = 1/(2n) Σ (ŷ − y)² for one neuron, ŷ from w, y from w0
        return 0.5 * ((x @ (w[:5] - w0[:5]) + (w[5] - w0[5])) ** 2).mean()

    expected = torch.autograd.functional.hessian(error, w0)
    assert_close(_hessian(x, LINEAR, "exact")[0], expected)


def test_conv_exact_hessian_equals_autograd_hessian_of_the_layer_error():
    torch.manual_seed(1)
    x = torch.randn(7, 3, 6, 5, dtype=torch.float64)
    w0 = torch.randn(3 * 3 * 2 + 1, dtype=torch.float64)

    def error(w):  # one output channel, mean over samples × output positions
        kernel = (w[:-1] - w0[:-1]).reshape(1, 3, 3, 2)
        y = F.conv2d(x, kernel, (w[-1:] - w0[-1:]), stride=(2, 1), padding=(1, 0))
        return 0.5 * (y**2).mean()

    expected = torch.autograd.functional.hessian(error, w0)
    assert_close(_hessian(x, CONV, "exact")[0], expected)


def test_channel_hessian_is_the_channel_covariance():
    torch.manual_seed(2)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    h = _hessian(x, CONV, "channel")
    assert h.shape == (1, 4, 4)
    rows = [
        torch.cat([x[n, :, i, j], torch.ones(1, dtype=torch.float64)])
        for n in range(4)
        for i in range(5)
        for j in range(5)
    ]
    brute = sum(torch.outer(r, r) for r in rows) / len(rows)
    assert_close(h[0], brute)


def test_flatten_block_hessian_has_one_block_per_position():
    torch.manual_seed(3)
    x = torch.randn(9, 3 * 6, dtype=torch.float64)  # 3 channels × 6 positions, channel-major
    h = _hessian(x, FLAT, "block")
    assert h.shape == (6, 4, 4)
    for p in range(6):
        cols = torch.cat(
            [x[:, [c * 6 + p for c in range(3)]], torch.ones(9, 1, dtype=torch.float64)], 1
        )
        assert_close(h[p], cols.T @ cols / 9)


def test_second_moment_refuses_wrong_shapes_and_empty():
    acc = SecondMoment(3)
    with pytest.raises(ValueError, match="expected rows"):
        acc.update(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no samples"):
        acc.finalize()


def _brute_pair(a, b, ha, hb):
    """min_w ½(w−a)ᵀH_A(w−a) + ½(w−b)ᵀH_B(w−b) by least squares, and its minimiser."""
    s = ha + hb
    w = np.linalg.lstsq(s, ha @ a + hb @ b, rcond=None)[0]
    # with singular S, lstsq gives the minimum-norm solution; the method wants the average in
    # the null space: add the null-space part of (a + b)/2
    u, sv, vt = np.linalg.svd(s)
    null = vt[sv < sv.max() * 1e-10]
    w = w - null.T @ (null @ w) + null.T @ (null @ (0.5 * (a + b)))
    val = 0.5 * (w - a) @ ha @ (w - a) + 0.5 * (w - b) @ hb @ (w - b)
    return val, w


def _layer_hessian(rng, k, s, shared_blocks, *, n=40, bias=True, dead=None, const=None):
    """A LayerHessian from `n` random samples of K blocks of s inputs (one stored block when
    `shared_blocks`), optionally with a dead (always 0) or constant (always 0.7) input."""
    blocks = 1 if shared_blocks else k
    x = rng.normal(size=(n, blocks, s))
    if dead is not None:
        x[:, :, dead] = 0.0
    if const is not None:
        x[:, :, const] = 0.7
    aug = np.concatenate([x, np.ones((n, blocks, 1))], axis=2)
    moment = torch.as_tensor(np.einsum("nbi,nbj->bij", aug, aug) / n)
    return LayerHessian.from_moment(moment, k, bias, "exact" if k == 1 else "block", n, n)


CASES = {
    "dense": dict(k=1, s=5, shared_blocks=False),
    "dense, wide": dict(k=1, s=12, shared_blocks=False),
    "blocked": dict(k=3, s=4, shared_blocks=False),
    "channel": dict(k=4, s=3, shared_blocks=True),
    "no bias": dict(k=3, s=4, shared_blocks=False, bias=False),
    "dead input": dict(k=3, s=4, shared_blocks=False, dead=1),
    "dead input, dense": dict(k=1, s=5, shared_blocks=False, dead=2),
    "constant input": dict(k=3, s=4, shared_blocks=False, const=0),
    "constant input, dense": dict(k=1, s=5, shared_blocks=False, const=3),
    "no shared inputs": dict(k=1, s=0, shared_blocks=False),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_costs_and_merges_match_per_pair_brute_force(case, damping):
    """Every layout against a dense least-squares oracle: the bias counted once, blocks
    sharing it, singular sums through the pseudo-inverse, the rank-one Schur form."""
    opts = CASES[case]
    rng = np.random.default_rng(4)
    ha, lam_a = _layer_hessian(rng, **opts).damped(damping)
    hb, lam_b = _layer_hessian(rng, **opts).damped(damping)
    dense_a, dense_b = ha.dense().numpy(), hb.dense().numpy()
    d = ha.dim
    assert dense_a.shape == (d, d)
    if damping:  # λ = factor · trace(H) / D over the whole matrix, the bias counted once
        undamped = _layer_hessian(np.random.default_rng(4), **opts)
        assert lam_a == pytest.approx(damping * float(undamped.trace()) / d)
        assert float(undamped.trace()) == pytest.approx(np.trace(undamped.dense().numpy()))
    va = torch.as_tensor(rng.normal(size=(5, d)))
    vb = torch.as_tensor(rng.normal(size=(4, d)))
    op = sharing_operator(ha, hb)
    singular = damping == 0 and any(key in case for key in ("dead", "constant"))
    assert op.pseudo_inverse == singular
    # only an input collinear with the bias needs the dense D × D form
    dense_form = singular and "constant" in case
    assert (type(op).__name__ == "_DenseSharing") == dense_form
    cost = op.cost_matrix(va, vb)
    ways = [cost]
    if not dense_form:  # both ways to the costs: solves with the vectors, and Ĥ formed
        solved = 5 + 4 < ha.s  # the choice: Ĥ is formed only when it is the cheaper way
        assert (op._hat is None) == solved
        ways = [op._cost_matrix_solved(va, vb), op._cost_matrix_formed(va, vb)]
        assert cost.equal(ways[0 if solved else 1])
    for way in ways:
        for i in range(5):
            for j in range(4):
                val, _ = _brute_pair(va[i].numpy(), vb[j].numpy(), dense_a, dense_b)
                assert way[i, j].item() == pytest.approx(val, rel=1e-7, abs=1e-10)
    pairs = torch.tensor([[0, 1], [3, 0], [4, 2]])
    a, b = va[pairs[:, 0]], vb[pairs[:, 1]]
    merged = op.merge(a, b)
    for r in range(3):
        _, w = _brute_pair(a[r].numpy(), b[r].numpy(), dense_a, dense_b)
        np.testing.assert_allclose(merged[r].numpy(), w, rtol=1e-6, atol=1e-8)
    errors = merge_error(merged, a, b, ha, hb)
    assert_close(errors, cost[pairs[:, 0], pairs[:, 1]], rtol=1e-7, atol=1e-10)
    avg_err = merge_error(average_merge(a, b), a, b, ha, hb)
    delta = (a - b).numpy()
    eighth = 0.125 * np.einsum("ki,ij,kj->k", delta, dense_a + dense_b, delta)
    np.testing.assert_allclose(avg_err.numpy(), eighth, rtol=1e-9, atol=1e-12)
    assert bool((avg_err >= errors - 1e-10).all())
    # a = b merges to exactly a (a permuted copy is recovered bit for bit)
    assert torch.equal(op.merge(va[:2], va[:2]), va[:2])
    if not dense_form:  # a merge alone (a re-merge) never forms Ĥ
        fresh = sharing_operator(ha, hb)
        assert_close(fresh.merge(a, b), merged, rtol=0, atol=0)
        assert fresh._hat is None


def test_structured_products_equal_the_dense_matrix():
    rng = np.random.default_rng(8)
    for opts in CASES.values():
        h = _layer_hessian(rng, **opts)
        v = torch.as_tensor(rng.normal(size=(3, h.dim)))
        dense = h.dense()
        assert_close(h.matvec(v), v @ dense)
        assert_close(h.quad(v), ((v @ dense) * v).sum(1))


def test_blocked_hessian_counts_the_bias_once():
    """A change of the bias alone, t, raises a blocked layer's error by ½t², not ½Kt²."""
    rng = np.random.default_rng(9)
    h = _layer_hessian(rng, k=49, s=3, shared_blocks=False)
    t = torch.zeros(1, h.dim, dtype=torch.float64)
    t[0, -1] = 2.0
    assert h.quad(t).item() == pytest.approx(4.0)


def test_singular_blocked_layout_too_large_for_the_dense_form_asks_for_damping(monkeypatch):
    import mtz_core.costs as costs

    rng = np.random.default_rng(10)
    ha = _layer_hessian(rng, k=3, s=4, shared_blocks=False, const=0)
    hb = _layer_hessian(rng, k=3, s=4, shared_blocks=False, const=0)
    monkeypatch.setattr(costs, "DENSE_PSEUDO_INVERSE_MAX_DIM", 5)
    with pytest.raises(ValueError, match=r"fc6: .*singular.*13 > 5.*damping > 0"):
        costs.sharing_operator(ha, hb, name="fc6")


def test_hessian_closed_form_equals_inverse_form_when_invertible():
    rng = np.random.default_rng(5)
    ha = _layer_hessian(rng, k=1, s=4, shared_blocks=False)
    hb = _layer_hessian(rng, k=1, s=4, shared_blocks=False)
    op = sharing_operator(ha, hb)
    inv = torch.linalg.inv
    expected = inv(inv(ha.dense()) + inv(hb.dense()))
    eye = torch.eye(5, dtype=torch.float64)
    # the cost of e_i − e_j spans Ĥ: read it back from the operator
    got = 2 * op.cost_matrix(eye, torch.zeros(1, 5, dtype=torch.float64))[:, 0]
    assert_close(got, torch.diagonal(expected))


def test_damping_adds_a_scaled_identity_to_the_whole_matrix():
    moment = torch.diag(torch.tensor([1.0, 2.0, 3.0, 1.0], dtype=torch.float64))[None]
    h = LayerHessian.from_moment(moment, 1, True, "exact")
    damped, lam = h.damped(0.5)
    assert lam == pytest.approx(0.5 * 7 / 4)
    assert_close(damped.dense(), h.dense() + lam * torch.eye(4, dtype=torch.float64))
    same, zero = h.damped(0.0)
    assert same is h and zero == 0


def test_squared_distance():
    rng = np.random.default_rng(6)
    a, b = torch.as_tensor(rng.normal(size=(3, 8))), torch.as_tensor(rng.normal(size=(5, 8)))
    brute = ((a[:, None] - b[None]) ** 2).sum(-1)
    assert_close(squared_distance(a, b), brute)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    ("spec", "kind", "shape"),
    [
        (LINEAR, "exact", (4, 5)),
        (FLAT, "exact", (4, 18)),
        (FLAT, "block", (4, 18)),
        (CONV, "exact", (4, 3, 3, 2)),
        (CONV, "channel", (4, 3, 3, 2)),
    ],
)
def test_layout_round_trip(spec, kind, shape, bias):
    torch.manual_seed(7)
    w = torch.randn(shape, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64) if bias else None
    shared = spec.in_units
    v = incoming_vectors(w, b, spec, shared, kind)
    k = spec.kernel_positions if kind == "channel" else spec.positions if kind == "block" else 1
    assert v.shape == (4, w[0].numel() + int(bias))  # the bias once, whatever the layout
    w2, b2 = vectors_to_weights(v, spec, shared, kind, bias)
    assert_close(w2, w)
    assert b2 is None if not bias else torch.equal(b2, b)
    # the Hessian rows line up with the vectors: v·[x_1; …; x_K; 1] is the layer's output
    if spec.kind == "conv" and kind == "exact":
        x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
        y = F.conv2d(x, w, b, spec.stride, spec.padding)  # (2, 4, H', W')
        rows = hessian_rows(x, spec, kind)
        aug = torch.cat([rows, torch.ones(rows.shape[0], int(bias), dtype=torch.float64)], 1)
        assert_close(aug @ v.T, y.permute(0, 2, 3, 1).reshape(-1, 4))
    elif spec.kind == "linear":
        x = torch.randn(3, w.shape[1], dtype=torch.float64)
        rows = hessian_rows(x, spec, kind).reshape(3, -1)  # (n, K·s) block-major
        aug = torch.cat([rows, torch.ones(3, int(bias), dtype=torch.float64)], 1)
        want = x @ w.T + (b if bias else 0)
        assert_close(aug @ v.T, want)
    assert k * (v.shape[1] - int(bias)) // k == w[0].numel()


@pytest.mark.parametrize("kind", ["exact", "channel"])
def test_layout_with_no_shared_inputs(kind):
    """A layer after one zipped with share 0 has no shared inputs: only the bias is shared."""
    w, b = torch.randn(4, 3, 3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    v = incoming_vectors(w, b, CONV, 0, kind)
    assert v.shape == (4, 1)
    w2, b2 = vectors_to_weights(v[:2], CONV, 0, kind)
    assert w2.shape == (2, 0, 3, 2) and torch.equal(b2, b[:2])
