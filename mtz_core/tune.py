"""Per-group shares chosen automatically: the most parameters saved such that no task loses more
than a budget of accuracy on its validation split.

The search is greedy over a grid of shares per group (channel group: a chain's layer, or every
layer writing one residual stream). Predicted errors order it, measured validation accuracy
decides:

1. **Estimate.** One session through the original models: for every group and grid share, the
   predicted error of zipping that group alone (step, read the record, undo) and the
   parameters it saves. Cheap: the Hessians of a group are computed once for all its shares.
2. **Order.** A candidate raises one group's share to its next grid value; candidates are tried
   in order of predicted error added per parameter saved (the layer-wise error is what MTZ
   minimises, so it ranks where sharing is cheap; it is not trusted to say how much accuracy a
   plan keeps).
3. **Confirm.** Each tried plan is zipped in full (every group at its share, with the given
   retraining budget) and scored on every task's `val` split. A plan within the budget is kept
   and that group's next share becomes a candidate; a plan over budget ends that group's
   growth (a larger share of it only adds error).

The test split is never read. Every trial is reported (`TunePlan.trials`) with its predicted
error, its measured accuracies and whether it was kept, so the plan can be checked.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .config import TASK_LETTERS, ZipConfig
from .data.task import SplitData
from .evaluation import EVAL_BATCH_SIZE, evaluate
from .pipeline import zip_many
from .progress import CancelToken, ZipCancelled
from .records import ZipResult
from .session import ZipSession
from .training import RETRAIN_LR

__all__ = ["tune_shares", "TunePlan", "TuneTrial", "DEFAULT_GRID"]

#: the shares tried per group, after 0
DEFAULT_GRID = (0.25, 0.5, 0.75, 1.0)

TuneProgress = Callable[[int, int, str], None]


@dataclass
class TuneTrial:
    """One plan zipped in full and scored on validation data."""

    shares: dict[str, float]
    predicted_error: float  # Σ over groups of the recorded predicted errors of this zip
    val_accuracy: tuple[float, ...]
    saved_fraction: float
    accepted: bool
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "shares": dict(self.shares),
            "predicted_error": self.predicted_error,
            "val_accuracy": list(self.val_accuracy),
            "saved_fraction": self.saved_fraction,
            "accepted": self.accepted,
            "seconds": self.seconds,
        }


@dataclass
class TunePlan:
    """The chosen shares (by group name), what they save and keep on validation data, and
    every trial. `result` is the chosen plan's zip (None when no share fits the budget: then
    every share is 0)."""

    shares: dict[str, float]
    saved_fraction: float
    original_val: tuple[float, ...]
    val_accuracy: tuple[float, ...]
    predicted_error: float
    max_drop_points: float
    trials: list[TuneTrial]
    seconds: float
    result: ZipResult | None
    cancelled: bool = False
    estimates: dict[str, dict[float, tuple[float, int]]] = field(default_factory=dict)

    @property
    def losses_points(self) -> tuple[float, ...]:
        """Each task's accuracy lost on validation data, in points (100 × fraction)."""
        return tuple(100 * (o - v) for o, v in zip(self.original_val, self.val_accuracy))

    def summary(self) -> dict[str, Any]:
        """JSON-able: the plan, its losses, the estimates and every trial."""
        letters = TASK_LETTERS[: len(self.original_val)]
        return {
            "shares": dict(self.shares),
            "saved_fraction": self.saved_fraction,
            "max_drop_points": self.max_drop_points,
            "original_val": dict(zip(letters, self.original_val)),
            "val_accuracy": dict(zip(letters, self.val_accuracy)),
            "losses_points": dict(zip(letters, self.losses_points)),
            "predicted_error": self.predicted_error,
            "seconds": self.seconds,
            "cancelled": self.cancelled,
            "estimates": {
                g: {str(s): {"predicted_error": e, "saved": p} for s, (e, p) in by.items()}
                for g, by in self.estimates.items()
            },
            "trials": [t.summary() for t in self.trials],
        }


def _check(models, tasks, max_drop_points, grid) -> list[float]:
    if isinstance(models, nn.Module) or not isinstance(models, Sequence) or len(models) < 2:
        raise ValueError("models must be a list of 2 or more modules")
    if isinstance(tasks, SplitData) or len(tasks) != len(models):
        raise ValueError(
            f"give one task (a SplitData with calib and val splits) per model, got "
            f"{len(tasks) if isinstance(tasks, Sequence) else type(tasks).__name__} "
            f"for {len(models)} models"
        )
    for t in tasks:
        if not isinstance(t, SplitData):
            raise TypeError(f"tasks must be mtz_core.data.Task / SplitData, got {type(t).__name__}")
    if (
        isinstance(max_drop_points, bool)
        or not isinstance(max_drop_points, (int, float))
        or not 0 <= max_drop_points <= 100
    ):
        raise ValueError(f"max_drop_points must be a number in [0, 100], got {max_drop_points!r}")
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence) or not grid:
        raise ValueError(f"grid must be a non-empty list of shares in (0, 1], got {grid!r}")
    out = []
    for s in grid:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 1:
            raise ValueError(f"grid shares must be numbers in (0, 1], got {s!r}")
        out.append(float(s))
    if sorted(set(out)) != out:
        raise ValueError(f"grid shares must be increasing and distinct, got {list(grid)}")
    return out


def tune_shares(
    models: Sequence[nn.Module],
    tasks: Sequence[SplitData],
    *,
    max_drop_points: float = 1.0,
    grid: Sequence[float] = DEFAULT_GRID,
    retrain_iterations: int = 0,
    calib_samples: int = 512,
    batch_size: int = 64,
    lr: float = RETRAIN_LR,
    seed: int = 0,
    device: Any = None,
    progress: TuneProgress | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
) -> TunePlan:
    """The largest-saving shares per group such that every task loses at most
    `max_drop_points` points of accuracy (100 × fraction) on its `val` split; see the module
    docstring for the search. `options` are `ZipConfig`'s (method, damping, batch_norm, …);
    `retrain_iterations` retrains that many iterations after each group in every trial (on
    the `calib` split, as `sweep` does); `seed` seeds random pairs and the retraining order.
    `progress(done, total, text)` reports trials (total is the most there can be); `cancel`
    stops the search (a trial under way is dropped) and returns the best plan so far with
    `cancelled=True`."""
    grid_l = _check(models, tasks, max_drop_points, grid)
    config = ZipConfig(**{"damping": ZipConfig.default_damping(), **options, "seed": seed})
    if isinstance(retrain_iterations, bool) or not isinstance(retrain_iterations, int):
        raise ValueError(f"retrain_iterations must be an int >= 0, got {retrain_iterations!r}")
    if retrain_iterations < 0:
        raise ValueError(f"retrain_iterations must be >= 0, got {retrain_iterations}")
    t0 = time.perf_counter()
    calib = [t.inputs("calib", batch_size, calib_samples) for t in tasks]

    def val_accuracy(zipped: nn.Module) -> tuple[float, ...]:
        return tuple(
            evaluate(zipped, t.batches("val", EVAL_BATCH_SIZE), task=i).accuracy
            for i, t in enumerate(tasks)
        )

    original = tuple(
        evaluate(m, t.batches("val", EVAL_BATCH_SIZE)).accuracy for m, t in zip(models, tasks)
    )
    # 1. estimate: every group alone at every grid share, through the original models
    session = ZipSession.many(list(models), calib, config=config, device=device)
    names = [name for name, *_ in session.hidden_layers]
    estimates: dict[str, dict[float, tuple[float, int]]] = {}
    for name in names:
        by: dict[float, tuple[float, int]] = {0.0: (0.0, 0)}
        for s in grid_l:
            rec = session.step(s)
            by[s] = (float(rec.predicted_error), int(rec.saved_parameters()))
            session.undo()
        estimates[name] = by
        session.step(0.0)
    total = len(names) * len(grid_l)
    if progress is not None:
        progress(0, total, "estimated every group's predicted errors")

    def trial(shares: dict[str, float]) -> tuple[TuneTrial, ZipResult]:
        start = time.perf_counter()
        trains = None
        if retrain_iterations:
            trains = [t.batches("calib", batch_size, shuffle=True, seed=seed) for t in tasks]
        result = zip_many(
            list(models),
            calib,
            share=dict(shares),
            **dataclasses.asdict(config),  # every option, so none is dropped on the way
            device=device,
            retrain_iterations=retrain_iterations,
            trains=trains,
            lr=lr,
            cancel=cancel,
        )
        acc = val_accuracy(result.model)
        ok = all(100 * (o - v) <= max_drop_points + 1e-9 for o, v in zip(original, acc))
        pred = float(sum(r.predicted_error for r in result.layers))
        return (
            TuneTrial(
                dict(shares), pred, acc, result.saved_fraction, ok, time.perf_counter() - start
            ),
            result,
        )

    # 2. order and 3. confirm
    current = dict.fromkeys(names, 0.0)
    best: tuple[TuneTrial, ZipResult] | None = None
    capped: set[str] = set()
    trials: list[TuneTrial] = []
    cancelled = False

    def next_share(name: str) -> float | None:
        later = [s for s in grid_l if s > current[name]]
        return later[0] if later else None

    def priority(name: str) -> float:
        nxt, by = next_share(name), estimates[name]
        added = by[nxt][0] - by[current[name]][0]
        saved = by[nxt][1] - by[current[name]][1]
        return added / saved if saved > 0 else math.inf

    while True:
        open_ = [n for n in names if n not in capped and next_share(n) is not None]
        if not open_:
            break
        if cancel is not None and cancel.cancelled:
            cancelled = True
            break
        name = min(open_, key=lambda n: (priority(n), names.index(n)))
        plan = {**current, name: next_share(name)}
        if progress is not None:
            progress(len(trials), total, f"trying {name} at share {plan[name]:g}")
        try:
            tr, result = trial(plan)
        except ZipCancelled:
            if cancel is None or not cancel.cancelled:
                raise
            cancelled = True  # the trial under way is dropped; the best plan so far stands
            break
        trials.append(tr)
        if tr.accepted:
            current = plan
            best = (tr, result)
        else:
            capped.add(name)
    if progress is not None and not cancelled:
        progress(total, total, "done")
    if best is None:
        return TunePlan(
            dict(current),
            0.0,
            original,
            original,
            0.0,
            float(max_drop_points),
            trials,
            time.perf_counter() - t0,
            None,
            cancelled,
            estimates,
        )
    tr, result = best
    return TunePlan(
        dict(current),
        tr.saved_fraction,
        original,
        tr.val_accuracy,
        tr.predicted_error,
        float(max_drop_points),
        trials,
        time.perf_counter() - t0,
        result,
        cancelled,
        estimates,
    )
