"""Tasks for the app: built-in task texts (`mtz_core.data.load_task`) and the user's own `.npz`.

A `UserTask` quacks like `mtz_core.data.Task` where the app and the engine use one (`calib`,
`test`, `batches`, `name`, `input_shape`, `num_classes`, `mean`, `std`), so every page treats
both kinds alike.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mtz_core.data import VAL_FRACTION, Task, load_task, stratified_split
from mtz_core.data.task import SplitData

__all__ = ["UserTask", "load_npz_task", "load_builtin_task", "task_kind", "NPZ_MAX_SAMPLES"]

#: an uploaded data set is "small": more rows than this are refused
NPZ_MAX_SAMPLES = 200_000
TEST_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class UserTask(SplitData):
    """A labelled data set from the user's `.npz` (`x`, `y`, optionally `x_test`, `y_test`)."""

    file_name: str
    num_classes: int
    input_shape: tuple[int, ...]
    calib: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    seed: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    pad_to: int | None = None

    @property
    def name(self) -> str:
        return f"npz:{self.file_name}"

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.num_classes))

    def __repr__(self) -> str:
        return (
            f"UserTask({self.name!r}, classes={self.num_classes}, input_shape={self.input_shape}, "
            f"calib={self.size('calib')}, val={self.size('val')}, test={self.size('test')})"
        )


def _array(data: Any, key: str, file_name: str) -> np.ndarray:
    if key not in data.files:
        raise ValueError(
            f"{file_name} has no array {key!r}; it holds {sorted(data.files)}. Save your data "
            "with numpy.savez(path, x=inputs, y=labels)"
        )
    return np.asarray(data[key])


def _check(x: np.ndarray, y: np.ndarray, file_name: str, which: str) -> tuple[np.ndarray, ...]:
    if x.ndim < 2:
        raise ValueError(
            f"{file_name}: {which} inputs must have a sample axis first, e.g. (n, features) or "
            f"(n, channels, height, width); got shape {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{file_name}: {which} inputs must be numbers, got dtype {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{file_name}: {which} labels must be 1-D with one label per input; inputs "
            f"{x.shape}, labels {y.shape}"
        )
    if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"{file_name}: {which} labels must be whole numbers (class ids)")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{file_name}: {which} inputs contain NaN or Inf")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{file_name}: labels must be class ids 0, 1, …; found {int(y.min())}")
    return x, y


def load_npz_task(file_name: str, data: bytes, *, seed: int = 0) -> UserTask:
    """Read a labelled data set from `.npz` bytes; without `x_test`/`y_test`, 20 % of each
    class (seeded) is held out as the test split, and 10 % of each class of the rest as the
    validation split (as for built-in tasks). Inputs are used as they are: normalise them the
    way the models were trained."""
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(
            f"{file_name} is not a NumPy .npz file ({exc}); save one with "
            "numpy.savez(path, x=inputs, y=labels)"
        ) from None
    if not hasattr(npz, "files"):
        raise ValueError(f"{file_name} holds a single array; save x and y with numpy.savez")
    try:
        x, y = _check(_array(npz, "x", file_name), _array(npz, "y", file_name), file_name, "x/y")
        if x.shape[0] > NPZ_MAX_SAMPLES:
            raise ValueError(
                f"{file_name} has {x.shape[0]:,} samples; the app takes at most "
                f"{NPZ_MAX_SAMPLES:,} (a small labelled set is enough for Hessians and retraining)"
            )
        if x.shape[0] < 10:
            raise ValueError(f"{file_name} has {x.shape[0]} samples; give at least 10")
        if "x_test" in npz.files or "y_test" in npz.files:
            xt, yt = _check(
                _array(npz, "x_test", file_name),
                _array(npz, "y_test", file_name),
                file_name,
                "test",
            )
            if xt.shape[1:] != x.shape[1:]:
                raise ValueError(
                    f"{file_name}: x_test samples have shape {xt.shape[1:]}, x has {x.shape[1:]}"
                )
            calib, test = (x, y), (xt, yt)
        else:
            train_idx, test_idx = stratified_split(y, TEST_FRACTION, np.random.default_rng(seed))
            if test_idx.size == 0:
                raise ValueError(f"{file_name} is too small to hold out a test split")
            calib, test = (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
    finally:
        npz.close()
    train_idx, val_idx = stratified_split(calib[1], VAL_FRACTION, np.random.default_rng([seed, 2]))
    calib, val = (calib[0][train_idx], calib[1][train_idx]), (calib[0][val_idx], calib[1][val_idx])
    classes = int(max(calib[1].max(initial=0), test[1].max(initial=0))) + 1
    if classes < 2:
        raise ValueError(f"{file_name}: labels hold a single class; a task needs at least two")
    return UserTask(
        file_name=file_name,
        num_classes=classes,
        input_shape=tuple(int(s) for s in x.shape[1:]),
        calib=(torch.from_numpy(calib[0]), torch.from_numpy(calib[1])),
        val=(torch.from_numpy(val[0]), torch.from_numpy(val[1])),
        test=(torch.from_numpy(test[0]), torch.from_numpy(test[1])),
        seed=seed,
    )


def load_builtin_task(text: str, *, seed: int = 0) -> Task:
    """A built-in task from its text (`digits:0-4`, `moons?noise=0.2`, …); the engine's errors
    (unknown dataset, bad rule, missing local files) pass through as they are."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("give a task, e.g. digits:0-4 (dataset, then optional classes)")
    return load_task(text.strip(), seed=seed)


def task_kind(task: Any) -> str:
    """ "image" for (C, H, W) inputs, "points" for 2-D points, "vector" otherwise."""
    shape = tuple(task.input_shape)
    if len(shape) == 3:
        return "image"
    if shape == (2,):
        return "points"
    return "vector"
