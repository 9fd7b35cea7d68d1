"""Progress reports and cancellation for long work (Hessian passes, costs, whole zips)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

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
    """A progress callback drawing one tqdm bar per layer and stage (for scripts and the CLI)."""
    from tqdm.auto import tqdm

    state: dict[str, object] = {"key": None, "bar": None}

    def report(event: ProgressEvent) -> None:
        key = (event.index, event.stage, event.task)
        bar = state["bar"]
        if key != state["key"]:
            if bar is not None:
                bar.close()  # type: ignore[attr-defined]
            task = (
                ""
                if event.task is None
                else f" task {'AB'[event.task] if event.task < 2 else event.task}"
            )
            desc = f"[{event.index + 1}/{event.n_layers}] {event.layer} {event.stage}{task}"
            bar = tqdm(total=event.total, desc=desc, leave=False, **tqdm_kwargs)
            state.update(key=key, bar=bar)
        bar.n = event.done  # type: ignore[attr-defined]
        bar.refresh()  # type: ignore[attr-defined]
        if event.stage == "done":
            bar.close()  # type: ignore[attr-defined]
            state.update(key=None, bar=None)

    return report
