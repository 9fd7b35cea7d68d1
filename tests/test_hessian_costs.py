"""Hessians against autograd, costs and merges against a per-pair brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from mtz_core.architecture import LayerSpec
from mtz_core.costs import (
    average_merge,
    cost_matrix,
    hessian_merge,
    merge_error,
    sharing_operator,
    squared_distance,
)
from mtz_core.hessian import SecondMoment, damp, hessian_rows, hessian_shape
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


@pytest.mark.parametrize("singular", [False, True])
@pytest.mark.parametrize("blocks", [1, 3])
def test_costs_and_merges_match_per_pair_brute_force(singular, blocks):
    rng = np.random.default_rng(4)
    d = 6

    def spd():
        m = rng.normal(size=(blocks, 2 if singular else 20, d))
        m[..., -1] = 1.0  # the bias input
        return torch.as_tensor(np.einsum("bni,bnj->bij", m, m) / m.shape[1])

    ha, hb = spd(), spd()
    va = torch.as_tensor(rng.normal(size=(5, blocks, d)))
    vb = torch.as_tensor(rng.normal(size=(4, blocks, d)))
    op = sharing_operator(ha, hb)
    assert op.pseudo_inverse == singular
    cost = cost_matrix(va, vb, op.h_hat)
    for i in range(5):
        for j in range(4):
            total = 0.0
            for blk in range(blocks):
                val, _ = _brute_pair(
                    va[i, blk].numpy(), vb[j, blk].numpy(), ha[blk].numpy(), hb[blk].numpy()
                )
                total += val
            assert cost[i, j].item() == pytest.approx(total, rel=1e-8, abs=1e-12)
    pairs = torch.tensor([[0, 1], [3, 0], [4, 2]])
    a, b = va[pairs[:, 0]], vb[pairs[:, 1]]
    merged = hessian_merge(a, b, op)
    for r in range(3):
        for blk in range(blocks):
            _, w = _brute_pair(
                a[r, blk].numpy(), b[r, blk].numpy(), ha[blk].numpy(), hb[blk].numpy()
            )
            np.testing.assert_allclose(merged[r, blk].numpy(), w, rtol=1e-7, atol=1e-9)
    errors = merge_error(merged, a, b, ha, hb)
    assert_close(errors, cost[pairs[:, 0], pairs[:, 1]], rtol=1e-8, atol=1e-12)
    avg_err = merge_error(average_merge(a, b), a, b, ha, hb)
    delta = a - b
    eighth = 0.125 * torch.einsum("kbi,bij,kbj->k", delta, ha + hb, delta)
    assert_close(avg_err, eighth)
    assert bool((avg_err >= errors - 1e-12).all())


def test_hessian_closed_form_equals_inverse_form_when_invertible():
    rng = np.random.default_rng(5)
    m1, m2 = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    ha, hb = (torch.as_tensor(m.T @ m / 30)[None] for m in (m1, m2))
    op = sharing_operator(ha, hb)
    inv = torch.linalg.inv
    expected = inv(inv(ha[0]) + inv(hb[0]))
    assert_close(op.h_hat[0], expected)
    assert_close(op.h_hat[0], op.h_hat[0].T, rtol=0, atol=0)


def test_damping_adds_a_scaled_identity():
    h = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))[None]
    damped, lam = damp(h, 0.5)
    assert lam.item() == pytest.approx(0.5 * 6 / 3)
    assert_close(damped[0], h[0] + torch.eye(3, dtype=torch.float64))
    same, zero = damp(h, 0.0)
    assert same is h and zero.item() == 0


def test_squared_distance():
    rng = np.random.default_rng(6)
    a, b = torch.as_tensor(rng.normal(size=(3, 2, 4))), torch.as_tensor(rng.normal(size=(5, 2, 4)))
    brute = ((a.reshape(3, 1, -1) - b.reshape(1, 5, -1)) ** 2).sum(-1)
    assert_close(squared_distance(a, b), brute)


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
def test_layout_round_trip(spec, kind, shape):
    torch.manual_seed(7)
    w, b = torch.randn(shape, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    shared = spec.in_units
    v = incoming_vectors(w, b, spec, shared, kind)
    w2, b2 = vectors_to_weights(v, spec, shared, kind)
    assert_close(w2, w)
    assert_close(b2, b)
    # the Hessian rows line up with the vectors: Σ_blocks v·[x; 1] is the layer's output
    if spec.kind == "conv":
        x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
        y = F.conv2d(x, w, b, spec.stride, spec.padding)  # (2, 4, H', W')
        rows = hessian_rows(x, spec, kind)
        if kind == "exact":
            ones = torch.ones(rows.shape[0], 1, dtype=torch.float64)
            got = torch.cat([rows, ones], 1) @ v[:, 0].T
            want = y.permute(0, 2, 3, 1).reshape(-1, 4)
            assert_close(got, want)
    else:
        x = torch.randn(3, w.shape[1], dtype=torch.float64)
        rows = hessian_rows(x, spec, kind)
        rows = rows if rows.dim() == 3 else rows[:, None]
        ones = torch.ones(*rows.shape[:2], 1, dtype=torch.float64)
        aug = torch.cat([rows, ones], 2)  # (n, B, D)
        got = torch.einsum("nbd,obd->no", aug, v) - (v.shape[1] - 1) * b
        assert_close(got, x @ w.T + b)
