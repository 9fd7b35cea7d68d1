"""The trade-off page's "best plan within x points": `mtz_core.tune_shares` as a job, and what
the page shows of its plan.

The engine chooses one share per channel group so that no task loses more than x points of
accuracy on its `val` split; this module runs it with the app's zip settings, turns the shares
into the per-layer controls' unit counts, and measures the chosen network on the quick test
samples for the Trade-off chart (where every point is a test accuracy; the choice itself never
reads the test split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mtz_core import TunePlan, evaluate, tune_shares
from mtz_core.tune import DEFAULT_GRID

from .figures.tradeoff import TUNED
from .jobs import Job
from .loaded import LoadedModels
from .zipper import ZipSettings, check_retrain_options, point_row

__all__ = [
    "TuneRequest",
    "TunedPlan",
    "check_tune",
    "run_tune",
    "points_text",
    "grid_of",
    "SERIES",
    "DEFAULT_GRID",
    "GRID_CHOICES",
]

#: the Trade-off chart's series (and legend entry) for tuned plans: the figure's own marker
SERIES = TUNED
#: the shares the page offers for the grid (the engine's default grid among them)
GRID_CHOICES = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)

# The page's controls: their labels, and their names in messages that say which one to change.
DROP_LABEL = "Most points lost per task"
GRID_LABEL = "Shares tried per group"
ITS_LABEL = "Retraining iterations per layer (tuning)"
CALIB_LABEL = "Calibration samples (tuning)"
RUN_LABEL = "Find the best plan"
DROP_CONTROL, GRID_CONTROL, ITS_CONTROL, CALIB_CONTROL, RUN_BUTTON = (
    f"**{label}**" for label in (DROP_LABEL, GRID_LABEL, ITS_LABEL, CALIB_LABEL, RUN_LABEL)
)


def points_text(x: float) -> str:
    """'1 point', '0.5 points'."""
    return f"{x:g} point" + ("" if x == 1 else "s")


@dataclass(frozen=True)
class TuneRequest:
    """What the user asked for (the engine's defaults, except the page's choices)."""

    max_drop_points: float = 1.0  # the budget per task, in points of validation accuracy
    retrain_iterations: int = 0  # per group, in every trial (0: the fastest search)
    grid: tuple[float, ...] = DEFAULT_GRID  # the shares tried per group, after 0
    calib_samples: int = 512  # per task, for the Hessians (the sweep's default)

    def describe(self) -> str:
        its = (
            f", retraining {self.retrain_iterations} its per layer"
            if self.retrain_iterations
            else ""
        )
        grid = ", ".join(f"{s:g}" for s in self.grid)
        return f"within {points_text(self.max_drop_points)}, shares {grid}{its}"


def check_tune(request: TuneRequest) -> None:
    """Refuse a search that cannot run, before a job starts (each message names the control)."""
    x = request.max_drop_points
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{DROP_CONTROL} must be a number from 0 to 100, got {x!r}")
    if not 0 <= x <= 100:
        raise ValueError(f"{DROP_CONTROL} must be from 0 to 100 points, got {x:g}")
    if not request.grid:
        raise ValueError(f"pick at least one share in {GRID_CONTROL}")
    for s in request.grid:
        if not 0 < float(s) <= 1:
            raise ValueError(f"{GRID_CONTROL}: {s:g} is out of range; shares are in (0, 1]")
    if request.retrain_iterations:
        try:
            check_retrain_options(request.retrain_iterations, 0.01, 32, "cpu")
        except ValueError as exc:
            raise ValueError(f"{ITS_CONTROL}: {exc}") from None
    if not 1 <= int(request.calib_samples) <= 1_000_000:
        raise ValueError(f"{CALIB_CONTROL} must be from 1 to 1,000,000")


@dataclass
class TunedPlan:
    """A finished (or cancelled) search: the engine's plan, for the models and settings it was
    computed for, with the shares as unit counts and the chosen network's test accuracy."""

    loaded: LoadedModels
    settings: ZipSettings
    request: TuneRequest
    plan: TunePlan
    ks: dict[str, int]  # the chosen units per group (what the per-layer controls hold)
    widths: dict[str, int]  # each group's most units (the narrowest model's width)
    test_accuracy: tuple[float, ...] | None  # the chosen network's, on the quick test samples
    cancelled: bool

    def belongs_to(self, loaded: LoadedModels | None, settings: ZipSettings) -> bool:
        """Whether this plan was computed for these models and settings."""
        return loaded is self.loaded and settings == self.settings

    @property
    def found(self) -> bool:
        """A plan within the budget (at least one group shares units)."""
        return self.plan.result is not None

    def plan_table(self) -> pd.DataFrame:
        """One row per group: its share, its units, and its predicted error and parameters
        saved when it alone is zipped at that share (the engine's estimates)."""
        unit = self.loaded.unit_name
        rows = []
        for name, share in self.plan.shares.items():
            error, saved = self.plan.estimates.get(name, {}).get(share, (None, None))
            rows.append(
                {
                    unit: name,
                    "share": float(share),
                    "shared": self.ks.get(name, 0),
                    "of": self.widths.get(name),
                    "predicted error alone": error,
                    "parameters saved alone": saved,
                }
            )
        return pd.DataFrame(rows)

    def tasks_table(self) -> pd.DataFrame:
        """One row per task: its validation accuracy, originally and with the plan, and the
        points lost."""
        p = self.plan
        return pd.DataFrame(
            {
                "task": [f"{x} ({t.name})" for x, t in zip(self.loaded.labels, self.loaded.tasks)],
                "original (val)": list(p.original_val),
                "tuned plan (val)": list(p.val_accuracy),
                "points lost": list(p.losses_points),
            }
        )

    def label(self) -> str:
        units = ", ".join(f"{n} {k}/{self.widths.get(n, k)}" for n, k in self.ks.items())
        return f"best within {points_text(self.request.max_drop_points)}: {units}"

    def point(self) -> dict[str, Any] | None:
        """The plan's point for the Trade-off chart (test accuracy, like every point), or None
        when no plan was found."""
        if not self.found or self.test_accuracy is None:
            return None
        return point_row(
            SERIES,
            self.settings.method,
            self.label(),
            self.test_accuracy,
            self.plan.saved_fraction,
            self.plan.result.retrain_iterations,
            shares=dict(self.ks),
            max_drop_points=self.request.max_drop_points,
        )

    def problem(self) -> str | None:
        """Why there is no plan, in words that name the control to change (None when found)."""
        if self.found:
            return None
        x = self.request.max_drop_points
        tried = len(self.plan.trials)
        if self.cancelled:
            return (
                f"Cancelled before a plan within {points_text(x)} was found ({tried} plan(s) "
                f"tried); the per-layer sliders are unchanged. Press {RUN_BUTTON} again and let "
                "it run."
            )
        first = self.plan.trials[0] if self.plan.trials else None
        if first is None:
            return "No plan was tried: these models have no group to share. Load other models."
        losses = [100 * (o - v) for o, v in zip(self.plan.original_val, first.val_accuracy)]
        worst = max(range(len(losses)), key=losses.__getitem__)
        step = ", ".join(f"{n} at share {s:g}" for n, s in first.shares.items() if s)
        return (
            f"No share fits within {points_text(x)}: the cheapest first step ({step}) already "
            f"loses {losses[worst]:.1f} points of validation accuracy on task "
            f"{self.loaded.labels[worst]}. Raise {DROP_CONTROL}, add a smaller share to "
            f"{GRID_CONTROL}, or set {ITS_CONTROL} above 0."
        )

    def message(self) -> str:
        """The job's closing message."""
        p = self.plan
        if not self.found:
            return self.problem() or ""
        losses = ", ".join(f"{x} {d:.1f}" for x, d in zip(self.loaded.labels, p.losses_points))
        head = (
            f"Cancelled after {len(p.trials)} plan(s) tried: the best plan found so far"
            if self.cancelled
            else f"Best plan within {points_text(self.request.max_drop_points)}"
        )
        return (
            f"{head} saves {p.saved_fraction:.1%} of the parameters; validation points lost: "
            f"{losses}; {len(p.trials)} plan(s) tried in {p.seconds:.1f} s. Its shares are in "
            "the per-layer sliders."
        )


def run_tune(
    job: Job,
    loaded: LoadedModels,
    settings: ZipSettings,
    request: TuneRequest,
    *,
    device: Any = "cpu",
) -> TunedPlan:
    """`mtz_core.tune_shares` on the loaded models with the app's zip settings (a job: progress,
    and a cancel that keeps the best plan so far)."""
    check_tune(request)
    options = settings.config()
    seed = options.pop("seed")  # tune_shares' own: random pairs and the retraining order
    job.progress(0, None, "measuring the originals and every group's errors alone")

    def progress(done: int, total: int, text: str) -> None:
        if not job.token.cancelled:
            job.progress(done, total, text)

    plan = tune_shares(
        loaded.nets,
        list(loaded.tasks),
        max_drop_points=float(request.max_drop_points),
        grid=[float(s) for s in request.grid],
        retrain_iterations=int(request.retrain_iterations),
        calib_samples=int(request.calib_samples),
        seed=seed,
        device=device,
        progress=progress,
        cancel=job.token,
        **options,
    )
    widths = {g["group"]: int(min(loaded.widths(g))) for g in loaded.groups}
    if plan.result is None:
        ks = dict.fromkeys(plan.shares, 0)
        test_acc = None
    else:
        ks = {rec.name: int(rec.k) for rec in plan.result.layers}
        model = plan.result.model
        test_acc = tuple(
            evaluate(model, t.batches("test", 512, limit=settings.eval_samples), task=i).accuracy
            for i, t in enumerate(loaded.tasks)
        )
    return TunedPlan(
        loaded,
        settings,
        request,
        plan,
        ks,
        widths,
        test_acc,
        cancelled=bool(plan.cancelled),
    )


def grid_of(values: Sequence[float]) -> tuple[float, ...]:
    """The page's multiselect as the engine's grid: increasing, distinct."""
    return tuple(sorted({float(v) for v in values}))
