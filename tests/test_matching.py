"""Tests for mtz_core.matching: every solver is checked against a brute-force oracle."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
import torch

from mtz_core.matching import (
    greedy_pairs,
    optimal_pairs,
    resolve_counts,
    resolve_plan,
    resolve_shares,
    validate_pairs,
)

SHAPES = [(1, 1), (3, 5), (6, 4), (8, 8), (20, 13)]


def seeded(*parts) -> np.random.Generator:
    """A generator seeded by the test parameters (stable across runs, unlike hash())."""
    return np.random.default_rng(zlib.crc32(repr(parts).encode()))


def sequential_greedy(cost: np.ndarray, k: int) -> np.ndarray:
    """The definition of greedy: walk pairs by (cost, flat index), keep those with free ends."""
    n_b = cost.shape[1]
    used_r: set[int] = set()
    used_c: set[int] = set()
    out: list[tuple[int, int]] = []
    for flat in np.argsort(cost.ravel(), kind="stable"):
        if len(out) == k:
            break
        i, j = divmod(int(flat), n_b)
        if i not in used_r and j not in used_c:
            used_r.add(i)
            used_c.add(j)
            out.append((i, j))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def brute_optimal_total(cost: np.ndarray, k: int) -> float:
    """Minimum total cost over every matching of size k (exhaustive)."""
    n_a, n_b = cost.shape
    best = np.inf
    for rows in itertools.combinations(range(n_a), k):
        for cols in itertools.permutations(range(n_b), k):
            best = min(best, float(cost[list(rows), list(cols)].sum()))
    return best


def random_cost(rng: np.random.Generator, shape, kind: str, with_inf: bool) -> np.ndarray:
    if kind == "continuous":
        cost = rng.standard_normal(shape)
    else:  # small integers: lots of ties, exercising the flat-index tie-break
        cost = rng.integers(0, 3, size=shape).astype(np.float64)
    if with_inf:
        cost[rng.random(shape) < 0.25] = np.inf
    return cost


def assert_matching(pairs: torch.Tensor, n_a: int, n_b: int, k: int) -> None:
    assert pairs.dtype == torch.int64
    assert pairs.shape == (k, 2)
    p = pairs.cpu().numpy()
    assert len(set(p[:, 0])) == k and len(set(p[:, 1])) == k
    assert ((p[:, 0] >= 0) & (p[:, 0] < n_a)).all() and ((p[:, 1] >= 0) & (p[:, 1] < n_b)).all()


def total(cost: np.ndarray, pairs: torch.Tensor) -> float:
    p = pairs.cpu().numpy()
    return float(cost[p[:, 0], p[:, 1]].sum())


# ---------------------------------------------------------------- greedy_pairs


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["continuous", "ties"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_inf", [False, True])
def test_greedy_matches_sequential_definition(shape, kind, dtype, with_inf):
    rng = seeded(shape, kind, dtype, with_inf)
    for _ in range(6):
        cost = torch.from_numpy(random_cost(rng, shape, kind, with_inf)).to(dtype)
        ref = cost.numpy()
        for k in range(min(shape) + 1):
            got = greedy_pairs(cost, k)
            assert got.shape == (k, 2) and got.dtype == torch.int64
            np.testing.assert_array_equal(got.numpy(), sequential_greedy(ref, k))


@pytest.mark.parametrize("n", [1, 7, 64])
def test_greedy_recovers_zero_cost_permutation(n):
    rng = np.random.default_rng(n)
    perm = rng.permutation(n)
    cost = rng.uniform(0.5, 2.0, size=(n, n))
    cost[np.arange(n), perm] = 0.0
    got = greedy_pairs(torch.from_numpy(cost), n)
    # All zeros tie, so greedy takes them in flat-index (= row) order.
    np.testing.assert_array_equal(got.numpy(), np.stack([np.arange(n), perm], axis=1))


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (40, 40), (30, 50)])
def test_greedy_all_equal_matrix(shape):
    # The slowest case for the round-based solver (one pair per round): still exact.
    k = min(shape)
    got = greedy_pairs(torch.zeros(shape, dtype=torch.float64), k)
    np.testing.assert_array_equal(got.numpy(), np.stack([np.arange(k), np.arange(k)], axis=1))


def test_greedy_larger_random_matrix_against_definition():
    rng = np.random.default_rng(7)
    cost = rng.random((120, 90))
    cost[:30] = cost[0]  # identical rows, as dead neurons would give
    for k in (0, 1, 45, 90):
        got = greedy_pairs(torch.from_numpy(cost), k)
        np.testing.assert_array_equal(got.numpy(), sequential_greedy(cost, k))


def test_greedy_empty_matrix_and_input_untouched():
    assert greedy_pairs(torch.zeros(0, 4), 0).shape == (0, 2)
    cost = torch.rand(5, 6, dtype=torch.float64)
    before = cost.clone()
    greedy_pairs(cost, 5)
    torch.testing.assert_close(cost, before, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", [greedy_pairs, optimal_pairs])
def test_cuda_matches_cpu(solver):
    cost = torch.from_numpy(np.random.default_rng(3).integers(0, 4, (50, 40)).astype(float))
    got = solver(cost.cuda(), 30)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), solver(cost, 30), rtol=0, atol=0)


# --------------------------------------------------------------- optimal_pairs


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (4, 3), (4, 5), (5, 5)])
@pytest.mark.parametrize("kind", ["continuous", "ties"])
@pytest.mark.parametrize("with_inf", [False, True])
def test_optimal_matches_exhaustive_search(shape, kind, with_inf):
    rng = seeded(shape, kind, with_inf)
    for _ in range(3):
        cost = random_cost(rng, shape, kind, with_inf)
        for k in range(min(shape) + 1):
            got = optimal_pairs(torch.from_numpy(cost), k)
            assert_matching(got, *shape, k)
            np.testing.assert_allclose(total(cost, got), brute_optimal_total(cost, k))
            greedy_total = total(cost, greedy_pairs(torch.from_numpy(cost), k))
            assert total(cost, got) <= greedy_total + 1e-9


def test_optimal_sorted_by_cost_then_flat_index():
    cost = np.random.default_rng(5).integers(0, 3, size=(9, 7)).astype(np.float32)
    got = optimal_pairs(torch.from_numpy(cost), 7).numpy()
    keys = [(cost[i, j], i * 7 + j) for i, j in got]
    assert keys == sorted(keys)


def test_optimal_beats_greedy_on_classic_trap():
    # Greedy grabs the 0 and is forced into 10; the optimum pays 1 + 1.
    cost = torch.tensor([[0.0, 1.0], [1.0, 10.0]], dtype=torch.float64)
    np.testing.assert_array_equal(greedy_pairs(cost, 2).numpy(), [[0, 0], [1, 1]])
    np.testing.assert_array_equal(optimal_pairs(cost, 2).numpy(), [[0, 1], [1, 0]])


# ------------------------------------------------------------ solver validation


@pytest.mark.parametrize("solver", [greedy_pairs, optimal_pairs])
@pytest.mark.parametrize("k", [-1, 4])
def test_solvers_reject_bad_k(solver, k):
    with pytest.raises(ValueError, match=rf"k={k} .*0 <= k <= min\(n_a, n_b\) = 3"):
        solver(torch.zeros(3, 5), k)


@pytest.mark.parametrize("solver", [greedy_pairs, optimal_pairs])
@pytest.mark.parametrize(
    ("cost", "k", "exc", "match"),
    [
        (torch.tensor([[0.0, float("nan")]]), 1, ValueError, "NaN"),
        (torch.tensor([[0.0, float("-inf")]]), 1, ValueError, "-inf"),
        (torch.zeros(3), 1, ValueError, "2-D"),
        (torch.zeros(2, 2, dtype=torch.int64), 1, TypeError, "floating"),
        (np.zeros((2, 2)), 1, TypeError, "torch.Tensor"),
        (torch.zeros(2, 2), True, TypeError, "k must be an int"),
        (torch.zeros(2, 2), 1.0, TypeError, "k must be an int"),
    ],
)
def test_solvers_reject_bad_input(solver, cost, k, exc, match):
    with pytest.raises(exc, match=match):
        solver(cost, k)


# -------------------------------------------------------------- resolve_shares

LAYERS = [("conv1", 10, 16), ("conv2", 32, 20), ("fc", 7, 7)]


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        (0.0, {"conv1": 0, "conv2": 0, "fc": 0}),
        (0.5, {"conv1": 5, "conv2": 10, "fc": 3}),
        (0.3, {"conv1": 3, "conv2": 6, "fc": 2}),  # 0.3 * 10 must not round down to 2
        (1.0, {"conv1": 10, "conv2": 20, "fc": 7}),
        (np.float32(0.5), {"conv1": 5, "conv2": 10, "fc": 3}),
        # one meaning whatever the Python type: int 1 is 100 %, like 1.0
        (0, {"conv1": 0, "conv2": 0, "fc": 0}),
        (1, {"conv1": 10, "conv2": 20, "fc": 7}),
        (np.int64(1), {"conv1": 10, "conv2": 20, "fc": 7}),
        ({}, {"conv1": 0, "conv2": 0, "fc": 0}),
        ({"conv2": 0.5, "fc": 1}, {"conv1": 0, "conv2": 10, "fc": 7}),
        ({"conv1": 1.0, "conv2": np.float64(0.25)}, {"conv1": 10, "conv2": 5, "fc": 0}),
    ],
)
def test_resolve_shares_accepts(share, expected):
    assert resolve_shares(share, LAYERS) == expected


@pytest.mark.parametrize(
    ("share", "exc", "match"),
    [
        (-0.1, ValueError, r"-0\.1.*\[0, 1\]"),
        (1.5, ValueError, r"1\.5.*\[0, 1\]"),
        (float("nan"), ValueError, r"nan.*\[0, 1\]"),
        (-1, ValueError, r"-1 .*\[0, 1\]"),
        # a count where a fraction belongs: the error points to k=
        (8, ValueError, r"share 8 for layer 'conv1'.*pass k=8"),
        ({"fc": 3}, ValueError, r"share 3 for layer 'fc'.*pass k=3"),
        ({"conv1": 2.0}, ValueError, r"2\.0.*'conv1'"),
        ({"nope": 0.5}, ValueError, r"'nope'.*known layers: \['conv1', 'conv2', 'fc'\]"),
        (True, TypeError, "True"),
        ({"fc": False}, TypeError, "False"),
        ("0.5", TypeError, "'0.5'"),
        (None, TypeError, "None"),
        ([0.5, 0.5, 0.5], TypeError, r"\[0\.5"),
        ({"fc": "3"}, TypeError, "'3'"),
    ],
)
def test_resolve_shares_refuses(share, exc, match):
    with pytest.raises(exc, match=match):
        resolve_shares(share, LAYERS)


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (0, {"conv1": 0, "conv2": 0, "fc": 0}),
        (1, {"conv1": 1, "conv2": 1, "fc": 1}),  # k is a count: 1 is one pair
        (7, {"conv1": 7, "conv2": 7, "fc": 7}),
        (np.int64(2), {"conv1": 2, "conv2": 2, "fc": 2}),
        ({"conv2": 20, "fc": np.int32(4)}, {"conv1": 0, "conv2": 20, "fc": 4}),
    ],
)
def test_resolve_counts_accepts(k, expected):
    assert resolve_counts(k, LAYERS) == expected


@pytest.mark.parametrize(
    ("k", "exc", "match"),
    [
        (-1, ValueError, r"k=-1 .*0 <= k <= min\(n_a, n_b\) = 10.*share="),
        (8, ValueError, r"k=8 for layer 'fc'.*= 7.*share="),
        ({"fc": 8}, ValueError, r"k=8 for layer 'fc'"),
        # a fraction where a count belongs: the error points to share=
        (0.5, TypeError, r"k for layer 'conv1' must be a whole number.*0\.5.*share="),
        (1.0, TypeError, r"1\.0.*share="),
        ({"nope": 2}, ValueError, r"k names unknown layer.*'nope'"),
        (True, TypeError, "True"),
    ],
)
def test_resolve_counts_refuses(k, exc, match):
    with pytest.raises(exc, match=match):
        resolve_counts(k, LAYERS)


def test_resolve_plan_takes_one_of_share_and_k():
    assert resolve_plan(None, None, LAYERS) == resolve_shares(1.0, LAYERS)
    assert resolve_plan(0.5, None, LAYERS) == resolve_shares(0.5, LAYERS)
    assert resolve_plan(None, 3, LAYERS) == resolve_counts(3, LAYERS)
    with pytest.raises(ValueError, match="share= .* or k= .*not both"):
        resolve_plan(0.5, 3, LAYERS)


def test_resolve_shares_refuses_duplicate_layer_names():
    with pytest.raises(ValueError, match="'fc' appears more than once"):
        resolve_shares(0.5, [("fc", 3, 3), ("fc", 4, 4)])


# -------------------------------------------------------------- validate_pairs


@pytest.mark.parametrize(
    "pairs",
    [
        [[0, 2], [3, 1]],
        np.array([[0, 2], [3, 1]], dtype=np.int32),
        np.array([[0, 2], [3, 1]], dtype=np.uint8),
        torch.tensor([[0, 2], [3, 1]]),
    ],
)
def test_validate_pairs_accepts(pairs):
    got = validate_pairs(pairs, 4, 3)
    assert got.dtype == torch.int64 and got.device.type == "cpu"
    torch.testing.assert_close(got, torch.tensor([[0, 2], [3, 1]]))


@pytest.mark.parametrize("pairs", [[], np.zeros((0, 2), dtype=np.int64), torch.zeros(0, 2)])
def test_validate_pairs_accepts_empty(pairs):
    got = validate_pairs(pairs, 4, 3)
    assert got.shape == (0, 2) and got.dtype == torch.int64


@pytest.mark.parametrize(
    ("pairs", "exc", "match"),
    [
        ([0, 1], ValueError, r"shape \(k, 2\).*\(2,\)"),
        ([[0, 1, 2]], ValueError, r"shape \(k, 2\).*\(1, 3\)"),
        ([[0, 1], [2]], ValueError, "k x 2"),
        ([[0.0, 1.0]], TypeError, "integers.*float64"),
        ([[True, False]], TypeError, "integers.*bool"),
        ([[4, 0]], ValueError, r"index 4 in column 0 \(network A\).*0 <= index < 4"),
        ([[0, -1]], ValueError, r"index -1 in column 1 \(network B\).*0 <= index < 3"),
        ([[1, 0], [1, 2]], ValueError, r"fc: neuron 1 of network A \(column 0\) is used 2 times"),
        ([[0, 2], [1, 2]], ValueError, r"neuron 2 of network B \(column 1\)"),
    ],
)
def test_validate_pairs_refuses(pairs, exc, match):
    with pytest.raises(exc, match=match):
        validate_pairs(pairs, 4, 3, name="fc")
