"""Background work: one worker thread per long job (retraining, zipping, sweeps, training).

The page never waits for a job: it starts one, and a fragment polls its progress (done/total,
text, the live loss curve) every half second until it ends. A job reports through `progress`
and `add_losses`, stops at its cancel token, and ends `done`, `cancelled` or `failed` (with the
error's message, never a traceback, for the page). Jobs never call Streamlit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from mtz_core import CancelToken, ZipCancelled

__all__ = ["Job", "JobCancelled", "NullJob", "SubJob"]

log = logging.getLogger("explorer.jobs")


def worker_threads(cpus: int | None = None) -> int:
    """Intra-op threads for a job's worker thread: every core but one (at least one).

    The page's thread (Streamlit, the poll that draws the progress and the loss chart) needs a
    core too. With the worker's pool on every core, each poll stalled a pool thread and the
    others waited for it at the next barrier: on two cores retraining ran at a fraction of the
    library's speed. `torch.set_num_threads` called in the worker sets that thread's own
    pool; the page's thread keeps all its threads for its own computations."""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(n - 1, torch.get_num_threads()))


class JobCancelled(RuntimeError):
    """Raised by job code that notices its cancel token."""


class Job:
    """A unit of background work with progress, live losses, cancel and an outcome."""

    def __init__(
        self,
        kind: str,
        title: str,
        target: Callable[[Job], Any],
        *,
        on_done: Callable[[Job], None] | None = None,
    ) -> None:
        self.kind = kind
        self.title = title
        self._target = target
        self._on_done = on_done
        self.token = CancelToken()
        self._cancel_hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.status = "pending"  # running | done | cancelled | failed
        self.done = 0
        self.total: int | None = None
        self.text = ""
        self.losses: list[tuple[float, ...]] = []  # (iteration, loss_a, loss_b)
        self.result: Any = None
        self.error: str | None = None
        self.message: str | None = None  # what the page says when it ends
        self.started = 0.0
        self.finished: float | None = None
        self.dismissed = False  # the user closed the outcome's message
        self.outcome = "running"  # the status the job ends with (set before on_done runs)
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------
    def start(self) -> Job:
        self.status = "running"
        self.started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name=f"mtz-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the job to stop (at its next check: a batch, an iteration, a layer)."""
        self.token.cancel()
        for hook in list(self._cancel_hooks):
            try:
                hook()
            except Exception:  # noqa: BLE001 - cancelling must never fail the page
                log.exception("cancel hook failed")

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Call `hook` when the job is cancelled (e.g. the engine session's own cancel)."""
        self._cancel_hooks.append(hook)
        if self.token.cancelled:
            hook()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests and scripts); True if it ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    # -- reporting -----------------------------------------------------------------------
    def progress(self, done: int, total: int | None, text: str = "") -> None:
        with self._lock:
            self.done, self.total = int(done), total
            if text:
                self.text = text

    def add_losses(self, iteration: float, losses: tuple[float, ...]) -> None:
        with self._lock:
            self.losses.append((float(iteration), *(float(v) for v in losses)))

    def check(self) -> None:
        if self.token.cancelled:
            raise JobCancelled("cancelled")

    # -- state ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.status in ("pending", "running")

    @property
    def fraction(self) -> float:
        if not self.total:
            return 0.0
        return max(0.0, min(1.0, self.done / self.total))

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.perf_counter()
        return end - self.started if self.started else 0.0

    def loss_rows(self) -> list[tuple[float, ...]]:
        with self._lock:
            return list(self.losses)

    def _run(self) -> None:
        torch.set_num_threads(worker_threads())  # this thread's own pool (OpenMP, per thread)
        outcome = "done"
        try:
            self.result = self._target(self)
            if self.token.cancelled:
                outcome = "cancelled"
        except (ZipCancelled, JobCancelled, InterruptedError) as exc:
            outcome = "cancelled"
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported to the page as a message
            log.error("job %s failed:\n%s", self.kind, traceback.format_exc())
            outcome = "failed"
            self.error = f"{exc}" if str(exc) else type(exc).__name__
        self.outcome = outcome
        if self._on_done is not None:
            try:
                self._on_done(self)
            except Exception as exc:  # noqa: BLE001
                log.error("job %s on_done failed:\n%s", self.kind, traceback.format_exc())
                self.outcome = "failed"
                self.error = self.error or str(exc) or type(exc).__name__
        self.finished = time.perf_counter()
        self.status = self.outcome  # last: the page sees the end only when all is in place


class NullJob:
    """A stand-in for `Job` where work runs in the page's own thread (short work, tests)."""

    def __init__(self) -> None:
        self.token = CancelToken()

    def progress(self, done: int, total: int | None, text: str = "") -> None:
        pass

    def add_losses(self, iteration: float, losses: tuple[float, ...]) -> None:
        pass

    def on_cancel(self, hook: Callable[[], None]) -> None:
        pass

    def check(self) -> None:
        if self.token.cancelled:
            raise JobCancelled("cancelled")


class SubJob:
    """A part of a bigger job: its progress is shifted by `offset` within the job's `total`
    (and its loss curve by `loss_offset` iterations); cancel and checks go to the job."""

    def __init__(self, job: Any, offset: int, total: int | None, loss_offset: int = 0) -> None:
        self.job, self.offset, self.total, self.loss_offset = job, offset, total, loss_offset
        self.token = job.token

    def progress(self, done: int, total: int | None, text: str = "") -> None:
        self.job.progress(self.offset + done, self.total, text)

    def add_losses(self, iteration: float, losses: tuple[float, ...]) -> None:
        self.job.add_losses(self.loss_offset + iteration, losses)

    def on_cancel(self, hook: Callable[[], None]) -> None:
        self.job.on_cancel(hook)

    def check(self) -> None:
        self.job.check()
