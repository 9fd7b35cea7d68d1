"""Long zips that resume: a checkpoint directory for `zip_models` / `zip_many` / `mtz zip`.

After every zipped group (its retraining and `after_step` included) and, with `every=N`, every N
retraining iterations, the run's state is written to `<dir>/state.pt`, atomically (a temporary
file, flushed, then renamed over the old one: a kill leaves the previous state or the new one,
never half a file). A run started again with the same arguments and the same directory picks up
there: the zipped network (structure and weights), every `LayerRecord`, the random state, the
position of every `mtz_core.data.Batches` source (its shuffling pass), and inside a retraining
the optimizer state, the iteration, the losses so far (the data are fast-forwarded to it). The
resumed run ends with the same network and records as an uninterrupted one (timings aside;
tests/test_resume.py kills a subprocess mid-run and compares bitwise).

The state records a fingerprint of the arguments (settings, plan, the models' weights, the
data's batch counts); a directory holding another run's state is refused, not overwritten. The
state file is a pickle (`torch.save`): resume only your own runs' directories. Under
`torch.distributed` rank 0 writes and every rank reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Checkpointer", "retraining_hook", "STATE_FILE"]

STATE_FILE = "state.pt"
FORMAT = "mtz-resume"
VERSION = 1

_HOOK: ContextVar[Checkpointer | None] = ContextVar("mtz_checkpointer", default=None)


def retraining_hook() -> _RetrainHook | None:
    """The hook `mtz_core.training.retrain_tasks` gives its loop while a checkpointed zip runs
    (in this thread or context), else None."""
    ck = _HOOK.get()
    return None if ck is None or ck.session is None else ck.retrain_hook()


def _digest_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    if t.numel():
        h.update(
            t.view(torch.uint8).numpy().tobytes()
            if t.dtype == torch.bfloat16
            else t.numpy().tobytes()
        )


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        a = np.asarray(obj.detach().cpu() if isinstance(obj, torch.Tensor) else obj)
        return {"array": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(type(obj).__name__)


def fingerprint(settings: Any, models: Iterable[torch.nn.Module], data: Iterable[Any]) -> str:
    """A hash of what makes two runs the same run: the settings, every model's parameters and
    buffers, and each data source's batch count (when it has one)."""
    h = hashlib.sha256(json.dumps(_jsonable(settings), sort_keys=True).encode())
    for m in models:
        for name, t in m.state_dict().items():
            h.update(name.encode())
            _digest_tensor(h, t)
    for d in data:
        try:
            h.update(str(len(d)).encode())
        except TypeError:
            h.update(b"?")
    return h.hexdigest()


def _source_state(source: Any) -> Any:
    """The iteration state of a data source that has one (`Batches`: its shuffling pass)."""
    return getattr(source, "_passes", None)


def _set_source_state(source: Any, state: Any) -> None:
    if state is not None and hasattr(source, "_passes"):
        source._passes = state


class Checkpointer:
    """Writes and reads a run's state in `directory` (see the module docstring). `every`: also
    every N retraining iterations (0: only after each zipped group). `extra`: more settings for
    the fingerprint (what a caller does around the zip, e.g. the CLI's retraining); `sources`:
    more data sources whose position is part of the state (training data the caller's
    `after_step` retrains on)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        every: int = 0,
        extra: Any = None,
        sources: Sequence[Any] = (),
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"checkpoint every must be an int >= 0 (iterations), got {every!r}")
        self.directory = Path(directory)
        self.every = every
        self.extra = extra
        self.session: Any = None
        self.extra_sources = list(sources)
        self.sources: list[Any] = []
        self.key = ""
        self.pending: dict[str, Any] | None = None  # a retraining to resume
        self._calls = 0  # retraining calls since the last group state (their order)
        self.resumed_groups = 0
        self.writes = 0

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    # -- the run's side ------------------------------------------------------------------
    def attach(self, session: Any, settings: Any, models, data, sources: Sequence[Any]) -> bool:
        """Tie to a fresh session; restore a saved state of the same run into it. Returns True
        when a state was restored (the session then has its zipped groups and records)."""
        self.session = session
        self.sources = [*sources, *self.extra_sources]
        self.key = fingerprint([settings, self.extra], models, data)
        if not self.path.is_file():
            return False
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state.get("format") != FORMAT or state.get("version") != VERSION:
            raise ValueError(f"{self.path} is not a resumable zip state of this version")
        if state["key"] != self.key:
            raise ValueError(
                f"{self.directory} holds the state of another run (different models, data or "
                "settings); give a new --checkpoint-dir or delete this one to start again"
            )
        self._restore(state)
        return True

    def _restore(self, state: dict[str, Any]) -> None:
        from .zipped import ZippedNet

        s = self.session
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            net = Path(tmp) / "network.safetensors"
            net.write_bytes(state["network"])
            model = ZippedNet.load(net, device=s.device)
        model.train(s.model.training)
        s.model = model
        s.records = list(state["records"])
        s._undo = []  # a resumed step cannot be undone (its pre-step weights are not kept)
        s._bump()
        for src, st in zip(self.sources, state["sources"]):
            _set_source_state(src, st)
        torch.set_rng_state(state["rng"])
        self.pending = state["retraining"]
        self.resumed_groups = len(s.records)

    @property
    def resuming_retraining(self) -> bool:
        """The state was written inside the last group's retraining (`after_step` of the last
        record must run again, and its retraining resumes from the saved iteration)."""
        return self.pending is not None

    def save_group(self) -> None:
        """After a zipped group and everything that follows it (retraining, `after_step`)."""
        self.pending = None
        self._calls = 0
        self._write(None)

    @contextmanager
    def active(self):
        """While the zip runs: retraining loops find this checkpointer (`retraining_hook`)."""
        token = _HOOK.set(self)
        try:
            yield self
        finally:
            _HOOK.reset(token)

    def retrain_hook(self) -> _RetrainHook:
        self._calls += 1
        group = len(self.session.records)
        pending = self.pending
        if pending is not None and (pending["group"], pending["call"]) != (group, self._calls):
            pending = None
        return _RetrainHook(self, group, self._calls, pending)

    # -- writing -------------------------------------------------------------------------
    def _write(self, retraining: dict[str, Any] | None) -> None:
        from . import distributed

        if not distributed.is_main():
            return
        s = self.session
        self.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            net = Path(tmp) / "network.safetensors"
            s.model.save(net)
            network = net.read_bytes()
        state = dict(
            format=FORMAT,
            version=VERSION,
            key=self.key,
            network=network,
            records=list(s.records),
            sources=[_source_state(src) for src in self.sources],
            rng=torch.get_rng_state(),
            retraining=retraining,
        )
        buf = io.BytesIO()
        torch.save(state, buf)
        fd, tmp_name = tempfile.mkstemp(prefix=".state-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, self.path)  # atomic: the old state or the new one
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        self.writes += 1


class _RetrainHook:
    """One retraining call's side of the checkpointer (`mtz_core.training._run` calls it)."""

    def __init__(self, ck: Checkpointer, group: int, call: int, pending: dict | None) -> None:
        self.ck, self.group, self.call, self.pending = ck, group, call, pending
        self.start_sources: list[Any] = []
        self.rng_at_start = None

    def begin(self, model, opt, cycles, report) -> int:
        """Before the first iteration: restore a saved iteration of this call (weights are the
        restored network's; optimizer state, losses, data position, random state); returns
        the iteration to start from (0 when nothing is pending)."""
        p = self.pending
        if p is None:
            self.start_sources = [_source_state(s) for s in self.ck.sources]
            return 0
        self.ck.pending = None
        self.start_sources = list(p["start_sources"])
        for src, st in zip(self.ck.sources, self.start_sources):
            _set_source_state(src, st)
        for _ in range(p["iteration"]):  # the same batches as the interrupted run took
            for c in cycles:
                next(c)
        opt.load_state_dict(p["optimizer"])
        r = p["report"]
        report.iterations, report.samples = r["iterations"], r["samples"]
        report.losses[:] = [tuple(v) for v in r["losses"]]
        report.clipped = r["clipped"]
        torch.set_rng_state(p["rng"])
        return int(p["iteration"])

    def writes_at(self, iteration: int) -> bool:
        """Whether `after(iteration, ...)` writes a state (the loop then reads its losses from
        the device first, so the state holds every iteration's)."""
        every = self.ck.every
        return bool(every) and iteration % every == 0

    def after(self, iteration: int, model, opt, report) -> None:
        if not self.writes_at(iteration):
            return
        from . import distributed

        # every rank does this at the same iteration: rank 0 saves the ranks' mean batch-norm
        # statistics, the ones every rank resumes from (averaging early changes nothing: the
        # final mean over ranks is the same, the running averages being linear)
        distributed.average_norm_statistics(model)
        self.ck._write(
            dict(
                group=self.group,
                call=self.call,
                iteration=iteration,
                optimizer=opt.state_dict(),
                report=dict(
                    iterations=report.iterations,
                    samples=report.samples,
                    losses=list(report.losses),
                    clipped=report.clipped,
                ),
                rng=torch.get_rng_state(),
                start_sources=self.start_sources,
            )
        )


def begin(
    directory: str | os.PathLike | Checkpointer,
    every: int,
    session: Any,
    settings: Any,
    models: Sequence[torch.nn.Module],
    data: Sequence[Any],
    sources: Sequence[Any],
) -> Checkpointer:
    """A checkpointer for `session` (what `zip_many(checkpoint_dir=...)` calls before any
    step): restores a saved state of the same run, and makes every step's `after_step` end
    with the group's state written. Step inside `activate(checkpointer)`."""
    ck = directory if isinstance(directory, Checkpointer) else Checkpointer(directory, every)
    inner = session.after_step

    def after(s: Any, record: Any) -> None:
        if inner is not None:
            inner(s, record)
        ck.save_group()

    session.after_step = after
    ck.attach(session, settings, models, data, sources)
    return ck


@contextmanager
def activate(ck: Checkpointer | None):
    """While the zip steps: retraining finds `ck`; a state written inside a retraining first
    runs that group's `after_step` again (its retraining resumes at the saved iteration)."""
    if ck is None:
        yield None
        return
    with ck.active():
        s = ck.session
        if ck.resuming_retraining and s.records:
            try:
                s.after_step(s, s.records[-1])
            finally:
                s._bump()  # the weights changed (as `ZipSession.step` does after its callback)
        yield ck
