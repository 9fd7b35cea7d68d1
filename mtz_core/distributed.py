"""Zipping across processes with `torch.distributed`: sharded Hessians, DDP retraining.

Launched the standard way (`torchrun --nproc-per-node N -m mtz_core.cli zip ...`, or
`mtz zip --nproc N`, which runs that; `mtz sweep` and `mtz tune` likewise, for every zip they
make), every process runs the same zip; when a process group of more than one process is
initialised the engine shares the work:

* **Hessians** (and the measured pair / held-out errors): calibration batch i belongs to rank
  i mod N. Each rank streams its own batches through the current zipped network into its float64
  sums (Σ x̄x̄ᵀ, Σ x̄, counts), and the sums are all-reduced, so every rank holds the same Hessians
  (to float64 round-off of the summation order). Costs, matching and merge then run on every
  rank deterministically; after each step the ranks check that they chose the same pairs and
  take rank 0's weights (`sync_step`), so they cannot drift apart.
* **Retraining**: `DistributedDataParallel` over the zipped network. Every rank reads the same
  global batch of each task and computes on its contiguous 1/N slice; the loss is the slice's
  summed cross-entropy × N / (global batch size), so DDP's averaged gradient is the gradient of
  the global batch's mean loss: the same optimizer step as one process with that batch (float32
  summation order aside). Reported losses are all-reduced: the global batch's mean. A network
  with dropout draws each rank's masks from its own seed (`SEED_STRIDE`), so it equals one
  process in distribution only.

Nothing here changes a single-process run: without an initialised group of size > 1 every
function is the identity (and `counts` still records what the one process streamed).
NCCL on GPUs, gloo on the CPU (`backend_for`). Batch norm kept per task (`batch_norm="keep"`)
normalises each rank's slice with that slice's statistics during retraining (as DDP without
SyncBatchNorm does), so that case is not equal to one process; each rank's running statistics
follow its slices, and at the end of every retraining they are averaged over the ranks
(`average_norm_statistics`), so every rank holds the same ones, near one process's.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "active",
    "world_size",
    "rank",
    "is_main",
    "init_from_env",
    "backend_for",
    "rank_device",
    "shard_batches",
    "all_reduce_",
    "sum_int",
    "all_reduce_moment",
    "sync_step",
    "TaskLosses",
    "norm_statistics",
    "average_norm_statistics",
    "counts",
    "reset_counts",
    "gather_counts",
    "barrier",
    "disabled",
    "under_launcher",
    "launch",
    "shutdown",
    "report_section",
]

#: retraining seeds rank r's random numbers (dropout) with seed + r · SEED_STRIDE: the ranks'
#: slices get independent masks (one process draws other numbers: with dropout, distributed
#: retraining equals one process in distribution, not draw for draw)
SEED_STRIDE = 1_000_003
_DISABLED = [False]
_OWNED = [False]  # the default group was initialised here (`shutdown` destroys it)
#: samples this process streamed for Hessians ("calib") and retrained on ("train"), per task
_COUNTS: dict[str, dict[int, int]] = {"calib": defaultdict(int), "train": defaultdict(int)}


def _dist():
    import torch.distributed as dist

    return dist


def active() -> bool:
    """True when a process group of more than one process is initialised (and not disabled)."""
    if _DISABLED[0]:
        return False
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return _dist().get_world_size() if active() else 1


def rank() -> int:
    return _dist().get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and prints."""
    return rank() == 0


@contextmanager
def disabled():
    """Run single-process inside an initialised group (e.g. a rank-0-only evaluation)."""
    old = _DISABLED[0]
    _DISABLED[0] = True
    try:
        yield
    finally:
        _DISABLED[0] = old


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for everything else."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: torch.device) -> torch.device:
    """A CUDA device without an index becomes this process's GPU (LOCAL_RANK under torchrun)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_from_env(device: torch.device, timeout_s: float = 1800) -> torch.device:
    """Under torchrun (WORLD_SIZE > 1 in the environment): initialise the default process group
    for `device` (NCCL on CUDA, gloo otherwise) unless it is already, and return this rank's
    device. A plain process (no WORLD_SIZE, or 1) is left alone and keeps `device`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return torch.device(device)
    dev = rank_device(device)
    dist = _dist()
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        kw: dict[str, Any] = {}
        if dev.type == "cuda":
            kw["device_id"] = dev
        dist.init_process_group(backend_for(dev), timeout=timedelta(seconds=timeout_s), **kw)
        _OWNED[0] = True
    return dev


def shutdown() -> None:
    """Destroy the default group if `init_from_env` created it."""
    if _OWNED[0]:
        _OWNED[0] = False
        _dist().destroy_process_group()


def under_launcher() -> bool:
    """Started by torchrun (or another launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _without_nproc(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run `mtz <argv>` (without its --nproc) in `nproc` processes on this machine through
    torchrun (`python -m torch.distributed.run --standalone`: a free local port, no network
    beyond localhost); returns its exit code (the first failing rank's)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={int(nproc)}", "-m", "mtz_core.cli", *_without_nproc(argv)]
    return subprocess.call(cmd)


def report_section(per_rank: list[dict[str, Any]], letters: Sequence[str]) -> dict[str, Any]:
    """The JSON report's `distributed`: world size, backend and, per rank, the calibration
    samples it streamed for Hessians and the training samples it computed on, per task."""
    backend = _dist().get_backend() if active() else None

    def by_task(values: list[int]) -> dict[str, int]:
        return {w: int(values[t]) if t < len(values) else 0 for t, w in enumerate(letters)}

    ranks = [
        dict(rank=r["rank"], calib_samples=by_task(r["calib"]), train_samples=by_task(r["train"]))
        for r in per_rank
    ]
    return dict(world_size=len(per_rank), backend=backend, ranks=ranks)


def barrier() -> None:
    if active():
        _dist().barrier()


# -- sharded streaming ---------------------------------------------------------------------
def shard_batches(data: Any) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(batch index, global offset of its first sample, inputs) for this rank's batches of a
    `CalibrationData`; every batch when not distributed. Batch i belongs to rank i mod N; the
    other ranks' batches are only counted (their size fixes the global offsets that
    damping="auto" needs to hold out the same samples as one process would)."""
    if not active():
        offset = 0
        for i, x in enumerate(data):
            yield i, offset, x
            offset += x.shape[0]
        return
    world, me = world_size(), rank()
    offset = 0
    for i, x, own in data.indexed(lambda i: i % world == me):
        if own:
            yield i, offset, x
        offset += x.shape[0]


def all_reduce_(*tensors: torch.Tensor) -> None:
    """Sum tensors over the ranks, in place (nothing when not distributed)."""
    if not active():
        return
    dist = _dist()
    for t in tensors:
        dist.all_reduce(t)


def sum_int(value: int, device: torch.device | str = "cpu") -> int:
    """An integer summed over the ranks."""
    if not active():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=_comm_device(device))
    _dist().all_reduce(t)
    return int(t.item())


def all_reduce_moment(moment: Any) -> None:
    """All-reduce a `SecondMoment`'s float64 sums (Σ x xᵀ, Σ x) and its row count."""
    if not active():
        return
    all_reduce_(moment.xx, moment.xs)
    moment.n = sum_int(moment.n, moment.xx.device)


def _comm_device(device: torch.device | str) -> torch.device:
    """Where a small tensor for a collective must live (NCCL: on the GPU)."""
    if _dist().get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if torch.device(device).type != "cuda" else torch.device(device)


def record(kind: str, task: int, samples: int) -> None:
    """Count samples this process handled (kind "calib": Hessian streams; "train": retraining)."""
    _COUNTS[kind][task] += int(samples)


def counts() -> dict[str, list[int]]:
    """This process's samples per task: {"calib": [...], "train": [...]}."""
    n = max([*_COUNTS["calib"], *_COUNTS["train"], -1]) + 1
    return {k: [int(v.get(t, 0)) for t in range(n)] for k, v in _COUNTS.items()}


def reset_counts() -> None:
    for v in _COUNTS.values():
        v.clear()


def gather_counts() -> list[dict[str, Any]]:
    """Every rank's `counts()`, in rank order (one entry when not distributed)."""
    mine = dict(rank=rank(), **counts())
    if not active():
        return [mine]
    out: list[Any] = [None] * world_size()
    _dist().all_gather_object(out, mine)
    return out


def sync_step(model: nn.Module, pairs: Any) -> None:
    """After a zip step on every rank: check every rank chose the same pairs (their Hessians
    are equal to round-off, so a differing choice means a near-tie broken differently, or
    different data), then give every rank rank 0's parameters and buffers."""
    if not active():
        return
    import hashlib

    import numpy as np

    digest = hashlib.sha256(np.ascontiguousarray(np.asarray(pairs, dtype=np.int64))).hexdigest()
    everyone: list[Any] = [None] * world_size()
    _dist().all_gather_object(everyone, digest)
    if len(set(everyone)) != 1:
        raise RuntimeError(
            "the ranks chose different pairs for one layer (their Hessians differ by more than "
            "round-off: is every rank given the same calibration data?)"
        )
    broadcast_state(model)


def broadcast_state(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank."""
    if not active():
        return
    dist = _dist()
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.numel():
                dist.broadcast(t.data, src=0)


# -- DDP retraining ------------------------------------------------------------------------
class _Losses(nn.Module):
    """One forward for every task (what DDP wraps): each task's summed cross-entropy on this
    rank's slice, times `scales[t]`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batches, scales):  # type: ignore[override]
        logits = getattr(self.net, "logits", self.net)
        return [
            F.cross_entropy(logits(x, t), y, reduction="sum") * s
            for t, ((x, y), s) in enumerate(zip(batches, scales))
        ]


class TaskLosses:
    """The retraining loss of `retrain_tasks` under DDP: `loss_fn(batches)` takes the global
    batches, slices out this rank's rows and returns each task's loss scaled so that DDP's
    gradient average is the global batch's mean-loss gradient; `reduce(losses)` gives the
    global mean losses (for reports and the divergence check, the same on every rank)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.world, self.rank = world_size(), rank()
        wrapper = _Losses(model)
        kw: dict[str, Any] = {}
        if device.type == "cuda":
            kw.update(device_ids=[device.index], output_device=device.index)
        # zipped nets hold zero-size blocks (e.g. a fully shared layer's own rows)
        ignore = [f"net.{n}" for n, p in model.named_parameters() if not p.numel()]
        if ignore:
            DDP._set_params_and_buffers_to_ignore_for_model(wrapper, ignore)
        # no buffer broadcast before each forward (DDP's default): batch norm in training mode
        # normalises with the batch's statistics and only updates the running ones, so each
        # rank keeps its own running statistics and `average_norm_statistics` averages them
        # once at the end (the same, by linearity, as averaging after every step)
        params = inspect.signature(DDP.__init__).parameters  # newer torch: forward_sync_buffers
        no_sync = (
            "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
        )
        kw[no_sync] = False
        self.ddp = DDP(wrapper, **kw)

    def loss_fn(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        local, scales = [], []
        for t, (x, y) in enumerate(batches):
            n = x.shape[0]
            lo, hi = _slice(n, self.world, self.rank)
            local.append((x[lo:hi], y[lo:hi]))
            scales.append(self.world / n)
            record("train", t, hi - lo)
        return self.ddp(local, scales)

    def reduce(self, losses: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        flat = torch.stack([v.detach() for v in losses]).to(torch.float64)
        _dist().all_reduce(flat)
        return list((flat / self.world).unbind())


def norm_statistics(model: nn.Module) -> list[torch.Tensor]:
    """The running means and variances of every batch norm in `model`: each task's of a kept
    norm (`mtz_core.norms.TaskNorm`), and those of any plain `nn.BatchNorm*`."""
    from .norms import TaskNorm

    out: list[torch.Tensor] = []
    for m in model.modules():
        if isinstance(m, TaskNorm):
            for t in range(len(m.widths)):
                out.extend(m.stats(t))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            out.extend([m.running_mean, m.running_var])
    return [t for t in out if t.numel()]


def average_norm_statistics(model: nn.Module) -> None:
    """Every rank's batch-norm running statistics replaced by their mean over the ranks.

    During DDP retraining each rank updates its norms' running statistics with its own
    slice's batch statistics. The update is an exponential average, linear in the batch
    statistics, so the mean over ranks of the ranks' averages is the average of the slices'
    mean statistics: for the running mean, the global batch's mean (equal slices), what one
    process computes; for the running variance, the mean of the slices' variances, which
    lacks the spread of the slice means (a relative 1/slice-size or so below one process's;
    docs/distributed.md). Afterwards every rank holds the same statistics."""
    if not active():
        return
    stats = norm_statistics(model)
    if not stats:
        return
    with torch.no_grad():
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in stats])
        flat = flat.to(_comm_device(flat.device))
        _dist().all_reduce(flat)
        flat /= world_size()
        offset = 0
        for t in stats:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n


def _slice(n: int, world: int, me: int) -> tuple[int, int]:
    """Rows [lo, hi) of a batch of n for rank `me`: contiguous, sizes differing by at most 1
    (as `torch.tensor_split`)."""
    q, r = divmod(n, world)
    lo = me * q + min(me, r)
    return lo, lo + q + (1 if me < r else 0)


def task_losses(model: nn.Module, device: torch.device) -> TaskLosses | None:
    """A `TaskLosses` when distributed, else None (the caller keeps its own loss)."""
    if not active():
        return None
    model.to(device)  # DDP wraps parameters where they are
    return TaskLosses(model, device)
