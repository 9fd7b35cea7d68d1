"""Loaded tasks: label rules, seeded splits, preprocessing, batches, 2-D generators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtz_core.data import (
    SPLITS,
    Batches,
    generate_points,
    load_task,
    parse_task,
    stratified_split,
)


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", seed=0)


# ------------------------------------------------------------------------------- digits basics


def test_digits_shapes_sizes_and_normalisation(digits):
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert digits.label_names == tuple(str(i) for i in range(10))
    (xc, yc), (xv, yv), (xt, yt) = digits.calib, digits.val, digits.test
    # stratified 80/20 of 1,797, then 10 % of each class of the 80 % for validation
    assert (xc.shape[0], xv.shape[0], xt.shape[0]) == (1295, 143, 359)
    assert xc.dtype == torch.float32 and yc.dtype == torch.int64
    assert xc.shape[1:] == (1, 8, 8)
    # normalised with the digits constants: roughly zero mean, unit std
    assert abs(float(xc.mean())) < 0.05 and abs(float(xc.std()) - 1) < 0.05
    # stratified: every class's share of the test split is ~20%
    counts_c, counts_v, counts_t = (np.bincount(y.numpy()) for y in (yc, yv, yt))
    assert np.all(np.abs(counts_t / (counts_c + counts_v + counts_t) - 0.2) < 0.01)
    assert np.all(np.abs(counts_v / (counts_c + counts_v) - 0.1) < 0.01)


def test_splits_are_deterministic_per_seed(digits):
    again = load_task("digits", seed=0)
    other = load_task("digits", seed=1)
    assert torch.equal(digits.calib[0], again.calib[0])
    assert torch.equal(digits.test[1], again.test[1])
    assert not torch.equal(digits.calib[1], other.calib[1])


def test_stratified_split_is_disjoint_and_complete():
    y = np.repeat(np.arange(4), [10, 20, 31, 7])
    tr, te = stratified_split(y, 0.2, np.random.default_rng(0))
    assert len(np.intersect1d(tr, te)) == 0
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(y)))
    assert np.bincount(y[te]).tolist() == [2, 4, 6, 1]
    tr2, te2 = stratified_split(y, 0.2, np.random.default_rng(0))
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)


def test_points_splits_are_disjoint():
    task = load_task("moons?n=500", seed=3)
    calib, val, test = ({tuple(r) for r in task.split(s)[0].numpy().tolist()} for s in SPLITS)
    assert not calib & test and not calib & val and not val & test
    assert len(calib) + len(val) + len(test) == 500


def test_validation_split_is_carved_from_training_data_before_the_label_rule():
    full, half = load_task("digits", seed=0), load_task("digits:0-4", seed=0)
    rows = {tuple(r) for r in full.val[0].flatten(1).numpy().tolist()}
    assert {tuple(r) for r in half.val[0].flatten(1).numpy().tolist()} <= rows
    assert half.size("val") == int((full.val[1] < 5).sum())
    other = load_task("digits", seed=1)
    assert not torch.equal(other.val[1], full.val[1])


# ------------------------------------------------------------------------------- label rules


def test_subset_relabels_in_order_and_comes_from_the_same_split(digits):
    sub = load_task("digits:5-9", seed=0)
    assert sub.num_classes == 5 and sub.label_names == ("5", "6", "7", "8", "9")
    for split in ("calib", "test"):
        x_all, y_all = digits.split(split)
        keep = y_all >= 5
        x_sub, y_sub = sub.split(split)
        assert torch.equal(x_sub, x_all[keep])
        assert torch.equal(y_sub, y_all[keep] - 5)


def test_class_list_order_defines_new_labels(digits):
    sub = load_task("digits:4,2,0")
    x_all, y_all = digits.calib
    keep = (y_all == 4) | (y_all == 2) | (y_all == 0)
    expected = torch.tensor([2, -1, 1, -1, 0])[y_all[keep]]
    assert torch.equal(sub.calib[1], expected)
    assert sub.label_names == ("4", "2", "0")


def test_parity_and_threshold_rules(digits):
    par = load_task("digits:parity")
    assert torch.equal(par.calib[1], digits.calib[1] % 2)
    assert par.label_names == ("even", "odd") and par.num_classes == 2
    ge = load_task("digits:ge5")
    assert torch.equal(ge.test[1], (digits.test[1] >= 5).long())
    assert ge.label_names == ("< 5", ">= 5")


# ------------------------------------------------------------------------------- preprocessing


def test_pad_to_pads_with_background(digits):
    padded = load_task("digits", pad_to=12)
    assert padded.input_shape == (1, 12, 12)
    x = padded.calib[0]
    background = (0.0 - 0.3053) / 0.3760  # pixel 0 after normalisation
    assert torch.allclose(x[:, :, :2, :], torch.full_like(x[:, :, :2, :], background))
    assert torch.allclose(x[:, :, -2:, :], torch.full_like(x[:, :, -2:, :], background))
    assert torch.equal(x[:, :, 2:10, 2:10], digits.calib[0])


def test_pad_to_errors():
    with pytest.raises(ValueError, match="smaller than the 8x8"):
        load_task("digits", pad_to=6)
    with pytest.raises(ValueError, match="only applies to image tasks"):
        load_task("moons", pad_to=32)


def test_missing_files_without_download_is_a_clear_error(tmp_path):
    for name, folder in (("fashionmnist", "FashionMNIST"), ("cifar10", "cifar-10-batches-py")):
        with pytest.raises(FileNotFoundError) as info:
            load_task(name, data_root=tmp_path)
        msg = str(info.value)
        assert folder in msg and "allow_download=True" in msg
    assert not any(tmp_path.iterdir())  # nothing was downloaded or created


def test_no_data_root_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MTZ_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="pass data_root"):
        load_task("mnist")


# ------------------------------------------------------------------------------- batches


def test_batches_are_reiterable_and_sized(digits):
    b = digits.batches("calib", batch_size=100)
    assert len(b) == 13  # ceil(1295 / 100)
    first, second = list(b), list(b)
    assert len(first) == 13
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(torch.cat([y for _, y in first]), digits.calib[1])
    assert len(digits.batches("calib", batch_size=100, drop_last=True)) == 12


def test_shuffled_batches_reshuffle_each_pass_reproducibly(digits):
    def order(b):
        return [torch.cat([y for _, y in b]) for _ in range(2)]

    a1, a2 = order(digits.batches(batch_size=64, shuffle=True, seed=7))
    b1, b2 = order(digits.batches(batch_size=64, shuffle=True, seed=7))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)  # same seed -> same passes
    assert not torch.equal(a1, a2)  # each pass reshuffles
    assert torch.equal(a1.sort().values, digits.calib[1].sort().values)  # a permutation


def test_batches_limit(digits):
    b = digits.batches("calib", batch_size=32, limit=100)
    assert len(b) == 4 and b.num_samples == 100
    assert torch.equal(torch.cat([x for x, _ in b]), digits.calib[0][:100])
    assert digits.batches(limit=10**6).num_samples == 1295  # more than available: all


def test_batches_argument_errors(digits):
    with pytest.raises(ValueError, match="unknown split 'train'"):
        digits.batches("train")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        digits.batches(batch_size=0)
    with pytest.raises(ValueError, match="limit must be a positive int"):
        digits.batches(limit=0)
    with pytest.raises(ValueError, match="rows"):
        Batches(torch.zeros(3, 2), torch.zeros(4))


# ------------------------------------------------------------------------------- 2-D generators


@pytest.mark.parametrize(
    ("name", "params", "k"),
    [
        ("moons", {"noise": 0.1}, 2),
        ("circles", {"noise": 0.05, "factor": 0.5}, 2),
        ("spirals", {"noise": 0.05, "arms": 3, "turns": 1.0}, 3),
        ("xor", {"noise": 0.1}, 2),
        ("blobs", {"centers": 4, "std": 0.5}, 4),
    ],
)
def test_generators_shapes_balance_and_seeding(name, params, k):
    x, y = generate_points(name, 0, n=301, **params)
    assert x.shape == (301, 2) and x.dtype == np.float32
    assert y.shape == (301,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=k)
    assert len(counts) == k and counts.max() - counts.min() <= 1
    assert np.abs(x).max() < 10
    x2, y2 = generate_points(name, 0, n=301, **params)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = generate_points(name, 1, n=301, **params)
    assert not np.array_equal(x, x3)


def test_point_task_loads_with_any_size():
    task = load_task("spirals?n=2000&arms=3")
    assert task.input_shape == (2,) and task.num_classes == 3
    assert task.size("calib") + task.size("val") + task.size("test") == 2000
    assert task.mean == () and task.std == ()
    assert parse_task(task.name) == task.spec


def test_xor_labels_follow_quadrants():
    x, y = generate_points("xor", 0, n=400, noise=0.0)
    assert np.array_equal(y, (np.sign(x[:, 0]) != np.sign(x[:, 1])).astype(np.int64))
