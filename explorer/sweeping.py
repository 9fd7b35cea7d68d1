"""The trade-off page's sweep and Pareto front, through `mtz_core.sweep` (`sweep_many`: two
models or more, one accuracy column per task)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from mtz_core.training import RETRAIN_LR

from .jobs import Job
from .loaded import LoadedModels
from .zipper import ZipSettings, check_retrain_options

__all__ = ["run_sweep", "pareto_mask", "check_sweep"]


def check_sweep(
    loaded: LoadedModels,
    shares: Sequence[float],
    methods: Sequence[str],
    retrain_iterations: int,
    lr: float,
) -> None:
    """Refuse a sweep that cannot run, before a job starts."""
    if not shares:
        raise ValueError("pick at least one share for the sweep")
    if not methods:
        raise ValueError("pick at least one method for the sweep")
    for s in shares:
        if not 0.0 <= float(s) <= 1.0:
            raise ValueError(f"share {s} is out of range: shares are fractions from 0 to 1")
    if retrain_iterations:
        check_retrain_options(retrain_iterations, lr, 32, "cpu")


def run_sweep(
    job: Job,
    loaded: LoadedModels,
    settings: ZipSettings,
    *,
    shares: Sequence[float],
    methods: Sequence[str],
    retrain_iterations: int = 0,
    lr: float = RETRAIN_LR,
    calib_samples: int = 512,
    device: Any = "cpu",
) -> pd.DataFrame:
    """Run `mtz_core.sweep.sweep_many` over shares × methods (a job: progress and cancel)."""
    from mtz_core.sweep import sweep_many

    check_sweep(loaded, shares, methods, retrain_iterations, lr)

    def progress(done: int, total: int, text: str) -> None:
        job.progress(done, total, text)

    df = sweep_many(
        loaded.nets,
        loaded.tasks,
        shares=[float(s) for s in shares],
        methods=list(methods),
        retrain_iterations=[int(retrain_iterations)],
        calib_samples=int(calib_samples),
        heldout_samples=settings.heldout_samples,
        lr=float(lr),
        damping=settings.damping,
        matching=settings.matching,
        seed=settings.seed,
        batch_norm=settings.batch_norm,
        device=device,
        progress=progress,
        cancel=job.token,
    )
    if df.attrs.get("cancelled"):
        job.message = f"Sweep cancelled: kept the {len(df) - 1} configurations finished"
    return df


def pareto_mask(df: pd.DataFrame, y: str = "mean_acc") -> pd.Series:
    """Rows on the Pareto front of (saved_fraction ↑, `y` ↑), by `mtz_core.sweep.pareto_front`."""
    from mtz_core.sweep import pareto_front

    if df is None or not len(df):
        return pd.Series([], dtype=bool)
    return pareto_front(df.assign(mean_acc=df[y].astype(float)))
