"""A loaded task: preprocessed tensors for a fixed calibration split and a held-out test split.

MTZ uses a task's data in three roles that never mix: the layer-wise Hessians and the short
retraining after each zipped layer both use `calib` (the training split, as the originals were
trained on it); every choice made by experiment (a default, a damping, a share plan) is made on
`val`, carved from the training data and never trained on; and every accuracy the product reports
uses `test`, which none of those ever sees.

Preprocessing, in order: apply the label rule (keep/relabel classes), scale pixels to [0, 1],
zero-pad to `pad_to` x `pad_to` if asked (in pixel space, i.e. black borders, as torchvision's
`Pad` before `Normalize` would do), then subtract the dataset's mean and divide by its std
(constants in `catalog.py`). 2-D points are used as generated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .batches import Batches
from .idx import MNIST_MD5
from .sources import RawData, load_raw
from .taskspec import TaskSpec, parse_task

__all__ = ["Task", "load_task", "apply_label_rule", "rule_label_names", "SPLITS"]

SPLITS = ("calib", "val", "test")


def apply_label_rule(spec: TaskSpec, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, new labels for the kept rows) for the original class ids `y`."""
    y = np.asarray(y, dtype=np.int64)
    if spec.rule == "subset":
        lookup = np.full(max(spec.base_num_classes, int(y.max(initial=0)) + 1), -1, np.int64)
        lookup[list(spec.classes)] = np.arange(len(spec.classes))
        new = lookup[y]
        keep = new >= 0
        return keep, new[keep]
    keep = np.ones(len(y), dtype=bool)
    if spec.rule == "parity":
        return keep, y % 2
    if spec.rule == "ge":
        return keep, (y >= spec.threshold).astype(np.int64)
    return keep, y


def rule_label_names(spec: TaskSpec, base_names: tuple[str, ...]) -> tuple[str, ...]:
    """Class names after the label rule, e.g. ("even", "odd") for parity."""
    if spec.rule == "subset":
        return tuple(base_names[c] for c in spec.classes)
    if spec.rule == "parity":
        return ("even", "odd")
    if spec.rule == "ge":
        return (f"< {spec.threshold}", f">= {spec.threshold}")
    return tuple(base_names)


def _check_pad_to(pad_to: int | None, shape: tuple[int, ...], task: str) -> None:
    if pad_to is None:
        return
    if len(shape) != 3:
        raise ValueError(f"pad_to={pad_to} only applies to image tasks; {task} has 2-D points")
    if isinstance(pad_to, bool) or not isinstance(pad_to, int):
        raise TypeError(f"pad_to must be an int or None, got {type(pad_to).__name__}")
    if pad_to < max(shape[1:]):
        raise ValueError(
            f"pad_to={pad_to} is smaller than the {shape[1]}x{shape[2]} images of {task}; "
            f"pass pad_to >= {max(shape[1:])} or None"
        )


def _images_to_tensor(
    x: np.ndarray, scale: float, pad_to: int | None, mean: tuple, std: tuple
) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, dtype=np.float32))  # always a copy: raw data may be cached
    t.div_(scale)
    if pad_to is not None:
        h, w = t.shape[-2:]
        top, left = (pad_to - h) // 2, (pad_to - w) // 2
        t = F.pad(t, (left, pad_to - w - left, top, pad_to - h - top), value=0.0)
    c = t.shape[1]
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1)
    return t.sub_(mean_t).div_(std_t)


class SplitData:
    """`split`, `size` and `batches` for anything holding `calib`/`val`/`test` `(x, y)` tensor
    pairs and a `seed`: built-in tasks and the app's uploaded data sets share them."""

    calib: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    seed: int

    def split(self, split: str = "calib") -> tuple[torch.Tensor, torch.Tensor]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits are: {', '.join(SPLITS)}")
        return getattr(self, split)

    def size(self, split: str = "calib") -> int:
        return int(self.split(split)[1].shape[0])

    def inputs(self, split: str, batch_size: int, limit: int) -> list[torch.Tensor]:
        """The first `limit` inputs of a split in batches, without labels (what Hessians and
        held-out layer errors read)."""
        return [x for x, _ in self.batches(split, batch_size, limit=limit)]

    def batches(
        self,
        split: str = "calib",
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        limit: int | None = None,
        drop_last: bool = False,
        device: str | torch.device | None = None,
    ) -> Batches:
        """Re-iterable `(x, y)` batches of a split (see `Batches`); `limit` keeps the first rows,
        which for seeded splits are a random subset; `seed` defaults to the task's seed."""
        x, y = self.split(split)
        return Batches(
            x,
            y,
            batch_size,
            shuffle=shuffle,
            seed=self.seed if seed is None else seed,
            limit=limit,
            drop_last=drop_last,
            device=device,
        )


@dataclass(frozen=True, eq=False)
class Task(SplitData):
    """A task ready for use. `calib`, `val` and `test` are `(x float32, y int64)` tensor pairs.

    `mean`/`std` are the normalisation constants applied (empty for 2-D points) and `pad_to` the
    padding, so images can be turned back into pixels for display: `x * std + mean`.
    """

    spec: TaskSpec
    num_classes: int
    input_shape: tuple[int, ...]
    label_names: tuple[str, ...]
    calib: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    seed: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    pad_to: int | None = None

    @property
    def name(self) -> str:
        """The canonical text form, e.g. "mnist:0-4"."""
        return str(self.spec)

    def __repr__(self) -> str:
        return (
            f"Task({self.name!r}, classes={self.num_classes}, input_shape={self.input_shape}, "
            f"calib={self.size('calib')}, val={self.size('val')}, test={self.size('test')})"
        )


def load_task(
    spec_or_text: str | TaskSpec,
    *,
    data_root: str | os.PathLike | None = None,
    seed: int = 0,
    allow_download: bool = False,
    pad_to: int | None = None,
    verify: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> Task:
    """Load and preprocess a task (see the module docstring for the steps).

    `data_root` (default: $MTZ_DATA_ROOT) is needed by every dataset except `digits` and the 2-D
    ones. `seed` fixes the digits and 2-D splits, the 2-D points themselves and, for every
    dataset, which training rows form the validation split; official train/test splits ignore
    it. MNIST files are md5-verified against `checksums` (default: the canonical table
    `idx.MNIST_MD5`) unless `verify=False`. Nothing is downloaded unless `allow_download=True`.
    """
    spec = parse_task(spec_or_text)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    info = spec.info
    _check_pad_to(pad_to, info.input_shape, str(spec))
    table = None if not verify else (MNIST_MD5 if checksums is None else checksums)
    raw: RawData = load_raw(
        spec, data_root=data_root, seed=int(seed), allow_download=allow_download, checksums=table
    )
    # the files decide the image size (the catalog's is the published one)
    shape = tuple(int(s) for s in raw.train_x.shape[1:])
    _check_pad_to(pad_to, shape, str(spec))

    splits = []
    train, val = raw.carve_val(int(seed))
    for x, y in (train, val, (raw.test_x, raw.test_y)):
        keep, labels = apply_label_rule(spec, y)
        x = x[keep]
        if info.kind == "image":
            xt = _images_to_tensor(x, raw.scale or 1.0, pad_to, info.mean, info.std)
        else:
            xt = torch.from_numpy(np.array(x, dtype=np.float32))
        splits.append((xt, torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))))

    input_shape = tuple(int(s) for s in splits[0][0].shape[1:])
    return Task(
        spec=spec,
        num_classes=spec.num_classes,
        input_shape=input_shape,
        label_names=rule_label_names(spec, raw.label_names),
        calib=splits[0],
        val=splits[1],
        test=splits[2],
        seed=int(seed),
        mean=info.mean,
        std=info.std,
        pad_to=pad_to,
    )
