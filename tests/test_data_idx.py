"""MNIST IDX reading: layouts, gzip or raw, header checks, md5 verification, the real files."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mtz_core.data import (
    MNIST_MD5,
    VAL_FRACTION,
    load_mnist_arrays,
    load_task,
    read_idx,
    stratified_split,
)

NAMES = {
    "train-images-idx3-ubyte": "train_images",
    "train-labels-idx1-ubyte": "train_labels",
    "t10k-images-idx3-ubyte": "test_images",
    "t10k-labels-idx1-ubyte": "test_labels",
}
REAL_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_mnist(n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def write_mnist(folder: Path, arrays: dict[str, np.ndarray], gz: bool) -> dict[str, str]:
    """Write the four files; returns their md5 table (of the uncompressed bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for name, part in NAMES.items():
        data = idx_bytes(arrays[part])
        md5[name] = hashlib.md5(data).hexdigest()
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return md5


@pytest.mark.parametrize(
    ("layout", "gz"),
    [("", True), ("", False), ("MNIST/raw", False), ("MNIST/raw", True), ("mnist", True)],
)
def test_layouts_gzip_and_raw(tmp_path, layout, gz):
    arrays = tiny_mnist()
    md5 = write_mnist(tmp_path / layout if layout else tmp_path, arrays, gz)
    tr_x, tr_y, te_x, te_y = load_mnist_arrays(tmp_path, checksums=md5)
    assert np.array_equal(tr_x, arrays["train_images"])
    assert np.array_equal(tr_y, arrays["train_labels"])
    assert np.array_equal(te_x, arrays["test_images"])
    assert np.array_equal(te_y, arrays["test_labels"])
    assert not tr_x.flags.writeable  # cached arrays are protected


def test_load_task_on_written_files(tmp_path):
    arrays = tiny_mnist()
    md5 = write_mnist(tmp_path, arrays, gz=True)
    task = load_task("mnist:0-4", data_root=tmp_path, checksums=md5, pad_to=32)
    assert task.input_shape == (1, 32, 32)
    # 3 training images per class: 10 % of a class rounds to none, so val is empty here
    assert (task.size("calib"), task.size("val"), task.size("test")) == (15, 0, 5)
    rows, _ = stratified_split(arrays["train_labels"], VAL_FRACTION, np.random.default_rng([0, 2]))
    rows = rows[arrays["train_labels"][rows] < 5]  # the carve comes before the label rule
    assert torch.equal(task.calib[1], torch.from_numpy(arrays["train_labels"][rows]).long())
    expected = (arrays["train_images"][rows][:, None] / 255.0 - 0.1307) / 0.3081
    assert torch.allclose(task.calib[0][:, :, 2:30, 2:30], torch.from_numpy(expected).float())
    # the canonical md5 table rejects these files; verify=False accepts them
    with pytest.raises(ValueError, match="md5"):
        load_task("mnist", data_root=tmp_path)
    assert load_task("mnist", data_root=tmp_path, verify=False).size("calib") == 30


def test_md5_mismatch_names_the_file(tmp_path):
    md5 = write_mnist(tmp_path, tiny_mnist(), gz=False)
    md5["t10k-labels-idx1-ubyte"] = "0" * 32
    with pytest.raises(ValueError) as info:
        load_mnist_arrays(tmp_path, checksums=md5)
    assert "t10k-labels-idx1-ubyte" in str(info.value) and "0" * 32 in str(info.value)


def test_no_checksums_skips_verification(tmp_path):
    write_mnist(tmp_path, tiny_mnist(), gz=False)
    assert load_mnist_arrays(tmp_path, checksums=None)[0].shape == (30, 28, 28)


def test_bad_magic_truncation_and_missing_files(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x00\x00\x99\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    text = tmp_path / "text-idx.gz"
    text.write_bytes(gzip.compress(b"hello, world"))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(text)
    short = tmp_path / "short-idx"
    short.write_bytes(idx_bytes(np.zeros((4, 3, 3), np.uint8))[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist_arrays(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_mnist_arrays(tmp_path / "nowhere")


def test_disagreeing_files_are_rejected(tmp_path):
    arrays = tiny_mnist()
    arrays["train_labels"] = arrays["train_labels"][:-1]
    write_mnist(tmp_path, arrays, gz=False)
    with pytest.raises(ValueError, match="disagree"):
        load_mnist_arrays(tmp_path, checksums=None)


def test_rewritten_file_is_not_served_stale_from_cache(tmp_path):
    path = tmp_path / "x-idx"
    path.write_bytes(idx_bytes(np.zeros((2, 2), np.uint8)))
    assert read_idx(path).shape == (2, 2)
    path.write_bytes(idx_bytes(np.ones((3, 2), np.uint8)))
    assert read_idx(path).shape == (3, 2) and read_idx(path).max() == 1


@pytest.mark.slow
def test_real_mnist_if_present():
    if not (REAL_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {REAL_MNIST}")
    tr_x, tr_y, te_x, te_y = load_mnist_arrays(REAL_MNIST, checksums=MNIST_MD5)
    assert tr_x.shape == (60000, 28, 28) and tr_y.shape == (60000,)
    assert te_x.shape == (10000, 28, 28) and te_y.shape == (10000,)
    assert tr_x.dtype == np.uint8 and int(tr_y.max()) == 9
    task = load_task("mnist:0-4", data_root=REAL_MNIST)
    # 30,596 training images of 0-4: 10 % of each class (of all ten) carved out for validation
    assert (task.size("calib"), task.size("val"), task.size("test")) == (27537, 3059, 5139)
    assert task.input_shape == (1, 28, 28)
    full = load_task("mnist", data_root=REAL_MNIST)
    mean = float(torch.cat([full.calib[0], full.val[0]]).mean())
    assert abs(mean) < 1e-3  # the standard constants fit the training set
