"""Where each dataset's raw arrays come from, and how its train/test split is fixed.

This layer returns *raw* data (integer pixels, original class ids) split into three parts: the
part used for calibration and retraining ("train"), a validation part carved from the training
data ("val": every default chosen by experiment is chosen on it), and the held-out part ("test":
it only reports). Label rules, scaling, padding and
normalisation happen afterwards in `task.py`, so that e.g. `digits:0-4` and `digits:5-9` are
carved out of the *same* seeded split and no test image of one task is a training image of the
other.

Splits:

* digits - scikit-learn's bundled 1,797 images, stratified 80/20 per class with a seeded
  generator: 1,438 train / 359 test (per-class test count = round(0.2 * class size)).
* mnist, fashionmnist, kmnist - the official 60,000 / 10,000 split, in file order.
* cifar10, cifar100 - the official 50,000 / 10,000 split, in file order.
* 2-D datasets - `n` points generated from the seed, then the same stratified 80/20 split.

Validation: `VAL_FRACTION` (10 %) of each class of the training part, drawn with a generator
seeded by the task's seed (`[seed, 2]`), for every dataset (official splits included). It is
carved from the raw training rows before any label rule, so `mnist:0-4` and `mnist` agree on
which images are validation images.

Rows of seeded splits are in random (seeded) order, so the first `k` rows are a random subset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .idx import MNIST_MD5, load_mnist_arrays
from .taskspec import TaskSpec
from .toy2d import generate_points

__all__ = [
    "RawData",
    "load_raw",
    "stratified_split",
    "resolve_data_root",
    "TEST_FRACTION",
    "VAL_FRACTION",
]

TEST_FRACTION = 0.2
#: the share of each class of the training rows that becomes the validation split
VAL_FRACTION = 0.1
DATA_ROOT_ENV = "MTZ_DATA_ROOT"

# torchvision class name and the folder it expects under data_root
_TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw/"),
    "fashionmnist": ("FashionMNIST", "FashionMNIST/raw/"),
    "kmnist": ("KMNIST", "KMNIST/raw/"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/"),
    "cifar100": ("CIFAR100", "cifar-100-python/"),
}


@dataclass(frozen=True, eq=False)
class RawData:
    """Raw split arrays. Images are (N, C, H, W) with values in [0, scale]; points (N, 2)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    scale: float | None  # divide by this to get [0, 1]; None for points
    label_names: tuple[str, ...]

    def carve_val(self, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """((train_x, train_y), (val_x, val_y)): `VAL_FRACTION` of each class of the training
        rows, seeded, become the validation split; both come back in a seeded random order."""
        tr, va = stratified_split(self.train_y, VAL_FRACTION, np.random.default_rng([seed, 2]))
        return (self.train_x[tr], self.train_y[tr]), (self.train_x[va], self.train_y[va])


def stratified_split(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): round(test_fraction * count) of each class go to test; both index
    arrays come back in a random order drawn from `rng`."""
    train, test = [], []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train_idx), rng.permutation(test_idx)


def resolve_data_root(data_root: str | os.PathLike | None, dataset: str) -> Path:
    """`data_root`, else $MTZ_DATA_ROOT; neither given is an error saying what to pass."""
    if data_root is None:
        env = os.environ.get(DATA_ROOT_ENV)
        if not env:
            raise FileNotFoundError(
                f"{dataset} is read from local files: pass data_root=<folder> (or set "
                f"${DATA_ROOT_ENV}); nothing is downloaded unless allow_download=True"
            )
        data_root = env
    return Path(data_root).expanduser()


def _load_digits(seed: int) -> RawData:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "the 'digits' dataset comes bundled with scikit-learn; install it "
            "(pip install scikit-learn, or the project's [app] extra)"
        ) from err
    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]  # (1797, 1, 8, 8), values 0..16
    y = bunch.target.astype(np.int64)
    tr, te = stratified_split(y, TEST_FRACTION, np.random.default_rng([seed, 1]))
    names = tuple(str(i) for i in range(10))
    return RawData(x[tr], y[tr], x[te], y[te], 16.0, names)


def _load_points(spec: TaskSpec, seed: int) -> RawData:
    x, y = generate_points(spec.dataset, seed, **spec.param_dict)
    tr, te = stratified_split(y, TEST_FRACTION, np.random.default_rng([seed, 1]))
    names = spec.info.label_names or tuple(f"class {i}" for i in range(spec.base_num_classes))
    return RawData(x[tr], y[tr], x[te], y[te], None, names)


def _torchvision_dataset(name: str, root: Path, train: bool, download: bool):
    try:
        from torchvision import datasets
    except ImportError as err:
        raise ImportError(f"the {name!r} dataset is loaded through torchvision") from err
    cls_name, layout = _TORCHVISION[name]
    try:
        return getattr(datasets, cls_name)(str(root), train=train, download=download)
    except RuntimeError as err:
        if download:
            raise
        raise FileNotFoundError(
            f"{name} files not found under {root} (torchvision expects {root / layout}); put the "
            "dataset there, or pass allow_download=True to let torchvision download it "
            f"[{err}]"
        ) from None


def _load_mnist(root: Path, allow_download: bool, checksums: Mapping[str, str] | None) -> RawData:
    try:
        arrays = load_mnist_arrays(root, checksums=checksums)
    except FileNotFoundError as err:
        if not allow_download:
            raise FileNotFoundError(
                f"{err}. Put the MNIST files there, or pass allow_download=True to let "
                f"torchvision download them into {root / 'MNIST' / 'raw'}"
            ) from None
        _torchvision_dataset("mnist", root, True, True)
        _torchvision_dataset("mnist", root, False, True)
        arrays = load_mnist_arrays(root, checksums=checksums)
    tr_x, tr_y, te_x, te_y = arrays
    return RawData(
        tr_x[:, None],
        tr_y.astype(np.int64),
        te_x[:, None],
        te_y.astype(np.int64),
        255.0,
        tuple(str(i) for i in range(10)),
    )


def _load_torchvision(name: str, root: Path, allow_download: bool) -> RawData:
    parts = []
    for train in (True, False):
        ds = _torchvision_dataset(name, root, train, allow_download)
        data = np.asarray(ds.data)
        data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)  # NHWC -> NCHW
        parts.append((np.ascontiguousarray(data), np.asarray(ds.targets, dtype=np.int64)))
        names = tuple(str(c) for c in ds.classes)
    (tr_x, tr_y), (te_x, te_y) = parts
    return RawData(tr_x, tr_y, te_x, te_y, 255.0, names)


def load_raw(
    spec: TaskSpec,
    *,
    data_root: str | os.PathLike | None = None,
    seed: int = 0,
    allow_download: bool = False,
    checksums: Mapping[str, str] | None = MNIST_MD5,
) -> RawData:
    """Raw split for `spec.dataset` (the label rule is *not* applied here)."""
    name = spec.dataset
    if spec.info.kind == "points":
        return _load_points(spec, seed)
    if name == "digits":
        return _load_digits(seed)
    root = resolve_data_root(data_root, name)
    if name == "mnist":
        return _load_mnist(root, allow_download, checksums)
    return _load_torchvision(name, root, allow_download)
