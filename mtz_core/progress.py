"""Progress reports and cancellation for long work (Hessian passes, costs, whole zips)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .config import TASK_LETTERS

__all__ = ["ProgressEvent", "ProgressCallback", "ZipCancelled", "CancelToken", "tqdm_progress"]


@dataclass(frozen=True)
class ProgressEvent:
    """Where a zip stands: layer `index` of `n_layers`, `stage`, `done` of `total` units.

    Stages: ``"hessian"`` (task in `task`, units = batches; total is None for data without a
    length), ``"costs"``, ``"matching"``, ``"merge"``, ``"done"`` (units = 1), ``"heldout"``
    (measuring the layer error on held-out data, units = batches), ``"retrain"`` (units =
    iterations, with `losses`).
    """

    layer: str
    index: int
    n_layers: int
    stage: str
    done: int
    total: int | None
    task: int | None = None
    losses: tuple[float, ...] | None = None  # stage "retrain": this iteration's loss per task


ProgressCallback = Callable[[ProgressEvent], None]


class ZipCancelled(RuntimeError):
    """A cancel request stopped the work; the network is as it was before the interrupted step."""


class CancelToken:
    """A thread-safe cancel flag that long work checks between batches and stages."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event.clear()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise ZipCancelled("cancelled; the network is unchanged by the interrupted step")


def tqdm_progress(**tqdm_kwargs) -> ProgressCallback:
    """A progress callback for scripts and the CLI: one tqdm bar per layer, counting the
    Hessian and held-out batches of both tasks, with the stage and losses as its postfix."""
    from tqdm.auto import tqdm

    state: dict[str, object] = {"index": None, "bar": None, "units": 0}

    def report(event: ProgressEvent) -> None:
        if event.index != state["index"]:
            if state["bar"] is not None:
                state["bar"].close()  # type: ignore[attr-defined]
            desc = f"layer {event.index + 1}/{event.n_layers} {event.layer}"
            state.update(
                index=event.index, units=0, bar=tqdm(desc=desc, unit="batch", **tqdm_kwargs)
            )
        bar = state["bar"]
        if event.stage in ("hessian", "heldout"):
            bar.update(1)  # type: ignore[attr-defined]
        if event.stage == "retrain":
            losses = "/".join(f"{v:.3f}" for v in event.losses or ())
            bar.set_postfix_str(f"retrain {event.done}/{event.total} loss {losses}", refresh=False)  # type: ignore[attr-defined]
        else:
            task = "" if event.task is None else f" task {TASK_LETTERS[event.task].upper()}"
            bar.set_postfix_str(f"{event.stage}{task}", refresh=False)  # type: ignore[attr-defined]

    return report
