"""Training one model, and retraining a zipped network jointly on both tasks.

Retraining is what recovers accuracy after each zipped layer (the method page): all parameters,
the sum of the two task losses, one batch of each task per step, for a short number of
iterations. Both loops share one engine: iterate re-iterable batch sources round and round, take
an optimizer step, report progress, stop cleanly when cancelled (keeping the weights of the last
completed step) and restore the starting weights if the loss turns NaN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed, resume
from .config import TASK_LETTERS
from .devices import place, resolve_device
from .progress import CancelToken

__all__ = [
    "OPTIMIZERS",
    "RETRAIN_CLIP",
    "RETRAIN_LR",
    "SYNC_EVERY",
    "TrainProgress",
    "TrainReport",
    "TrainingDiverged",
    "resolve_device",
    "train",
    "retrain",
]

#: sgd is the default: momentum 0.9 for `train`, plain SGD for `retrain` (as the method).
#: retraining's default learning rate, chosen on the validation split (docs/results.md: the
#: learning-rate table and "Defaults and the split that chose them").
RETRAIN_LR = 0.03
#: retraining clips the gradient's global norm here (None: never); see `retrain`.
RETRAIN_CLIP = 5.0
OPTIMIZERS = ("sgd", "adam", "adamw")
#: iterations per host read of the losses on an accelerator (`sync_cadence`): a read drains
#: the device queue, so reading every step would make each step wait for the previous one
SYNC_EVERY = 20
#: constant lr (retraining's short runs), or cosine decay to 0 over the run (training originals).
SCHEDULES = ("constant", "cosine")


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or Inf; the model was put back to its weights before training."""


@dataclass(frozen=True)
class TrainProgress:
    """Iteration `iteration` of `total` done; `losses` per task for that iteration."""

    iteration: int
    total: int
    losses: tuple[float, ...]


@dataclass
class TrainReport:
    """What a (re)training run did."""

    iterations: int  # completed optimizer steps
    samples: int  # training samples seen, all tasks together
    losses: list[tuple[float, ...]] = field(default_factory=list)  # per step, per task
    seconds: float = 0.0
    cancelled: bool = False
    device: str = "cpu"
    clipped: int = 0  # steps whose gradient norm was clipped

    def final_losses(self, window: int = 20) -> tuple[float, ...]:
        """Mean loss per task over the last `window` steps (empty when nothing ran)."""
        tail = self.losses[-window:]
        if not tail:
            return ()
        return tuple(sum(step[t] for step in tail) / len(tail) for t in range(len(tail[0])))


def _cycle(
    data: Any, label: str, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (x, y) batches from a re-iterable collection, restarted as needed."""
    if isinstance(data, Iterator) or data is None or iter(data) is data:
        raise TypeError(
            f"{label} must be a re-iterable collection of (inputs, labels) batches (a list or a "
            f"DataLoader), got {type(data).__name__}"
        )
    while True:
        empty = True
        for i, batch in enumerate(data):
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise TypeError(f"{label} batch {i} must be an (inputs, labels) pair")
            x, y = batch[0], batch[1]
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise TypeError(f"{label} batch {i}: inputs and labels must be tensors")
            if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
                raise ValueError(
                    f"{label} batch {i}: labels must be a 1-D integer tensor with one label per "
                    f"input, got shape {tuple(y.shape)} for {x.shape[0]} inputs"
                )
            empty = False
            yield x.to(device, non_blocking=True), y.to(device, torch.long, non_blocking=True)
        if empty:
            raise ValueError(f"{label} yielded no batches")


def _optimizer(
    params: Sequence[nn.Parameter], name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")


def sync_cadence(sync_every: int | None, device: torch.device) -> int:
    """Iterations per host read of the loop's losses: `sync_every`, or by default 1 on the CPU
    (its tensors are host memory: reading a loss waits for nothing) and `SYNC_EVERY` elsewhere
    (a read waits for the device queue to drain; every read stalls the next iteration)."""
    if sync_every is None:
        return 1 if torch.device(device).type == "cpu" else SYNC_EVERY
    if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
        raise ValueError(f"sync_every must be an int >= 1 (iterations) or None, got {sync_every!r}")
    return sync_every


class _Window:
    """The iterations since the last host read: per iteration the reported losses (one stacked
    device tensor) and whether the gradient was clipped, read in one transfer by `flush`.

    Nothing in an iteration waits for the device: the divergence check, the loss history, the
    progress events and the clip count all come from the rows, at the loop's cadence. An
    iteration adds one small op (the stack); the rest happens once per read."""

    def __init__(self, first: int) -> None:
        self.first = first  # 0-based iteration of the first row
        self.losses: list[torch.Tensor] = []
        self.clipped: list[torch.Tensor | None] = []

    def add(self, losses: Sequence[torch.Tensor], clipped: torch.Tensor | None) -> None:
        self.losses.append(torch.stack([v.detach() for v in losses]))
        self.clipped.append(clipped)

    def flush(self) -> tuple[int, list[list[float]]]:
        """(0-based iteration of the first row, the rows on the host: each iteration's losses,
        then 1.0 when it was clipped); empties the window."""
        first, losses, clipped = self.first, self.losses, self.clipped
        self.first, self.losses, self.clipped = first + len(losses), [], []
        if not losses:
            return first, []
        table = torch.stack(losses).to(torch.float64)
        flags = [
            torch.zeros((), dtype=torch.float64, device=table.device) if c is None else c
            for c in clipped
        ]
        table = torch.cat([table, torch.stack(flags).to(table)[:, None]], dim=1)
        return first, table.tolist()


def _run(
    model: nn.Module,
    sources: Sequence[tuple[Any, str]],
    loss_fn: Callable[[Sequence[tuple[torch.Tensor, torch.Tensor]]], list[torch.Tensor]],
    *,
    iterations: int,
    lr: float,
    optimizer: str,
    momentum: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    progress: Callable[[TrainProgress], None] | None,
    cancel: CancelToken | None,
    schedule: str = "constant",
    clip_grad_norm: float | None = None,
    reduce_losses: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
    resume: Any = None,
    sync_every: int | None = None,
) -> TrainReport:
    """The loop. `reduce_losses`: the reported losses from this process's (distributed: every
    rank's, `mtz_core.distributed.TaskLosses.reduce`); `resume`: a `mtz_core.resume` hook that
    may restore a checkpointed iteration (`begin`) and writes checkpoints (`after`).

    The host reads the device once every `sync_every` iterations (`sync_cadence`), at the end,
    and before a checkpoint: the losses of those iterations arrive together, each with its own
    `TrainProgress` event, and a non-finite loss among them restores the starting weights and
    raises `TrainingDiverged` naming its iteration and the range read with it (the steps after
    it in that range ran on non-finite values and are discarded with the rest). Cancellation
    is checked before every iteration; the weights kept are those of the last completed one.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    if clip_grad_norm is not None and not (
        isinstance(clip_grad_norm, (int, float)) and clip_grad_norm > 0
    ):
        raise ValueError(
            f"clip_grad_norm must be a positive number or None, got {clip_grad_norm!r}"
        )
    cadence = sync_cadence(sync_every, device)
    report = TrainReport(0, 0, device=str(device))
    if iterations == 0:
        return report
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad and p.numel()]
    opt = _optimizer(params, optimizer, lr, momentum, weight_decay)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
        if schedule == "cosine"
        else None
    )
    cycles = [_cycle(data, label, device) for data, label in sources]
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    t0 = time.perf_counter()
    model.train()

    def flush(window: _Window) -> None:
        """The window's rows on the host: check, record, report (in iteration order)."""
        first, rows = window.flush()
        for i, row in enumerate(rows):
            values, clipped = tuple(row[:-1]), row[-1]
            if not all(math.isfinite(v) for v in values):
                model.load_state_dict(start)
                bad = next(v for v in values if not math.isfinite(v))
                span = f"iterations {first + 1}-{first + len(rows)} were read together"
                raise TrainingDiverged(
                    f"the loss became {bad} at iteration {first + i + 1} ({span}); the weights "
                    f"were restored to before training (try a lower lr than {lr})"
                )
            report.losses.append(values)
            report.clipped += int(clipped)
            if progress is not None:
                progress(TrainProgress(first + i + 1, iterations, values))

    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            first = 0 if resume is None else resume.begin(model, opt, cycles, report)
            window = _Window(first)
            for it in range(first, iterations):
                if cancel is not None and cancel.cancelled:
                    report.cancelled = True
                    break
                batches = [next(c) for c in cycles]
                losses = loss_fn(batches)
                total = torch.stack(losses).sum()
                shown = losses if reduce_losses is None else reduce_losses(losses)
                opt.zero_grad(set_to_none=True)
                total.backward()
                clipped = None
                if clip_grad_norm is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
                    clipped = norm > clip_grad_norm
                opt.step()
                if sched is not None:
                    sched.step()
                window.add(shown, clipped)
                report.iterations = it + 1
                report.samples += sum(b[0].shape[0] for b in batches)
                writes = resume is not None and resume.writes_at(it + 1)
                if writes or (it + 1 - first) % cadence == 0:
                    flush(window)
                if writes:
                    resume.after(it + 1, model, opt, report)
            flush(window)
    finally:
        model.train(was_training)
        report.seconds = time.perf_counter() - t0
    return report


def train(
    model: nn.Module,
    data: Any,
    *,
    iterations: int,
    lr: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: CancelToken | None = None,
    schedule: str = "constant",
    sync_every: int | None = None,
) -> TrainReport:
    """Train one model for one task (cross-entropy), in place; the model moves to `device`
    ("auto": CUDA, then MPS, then the CPU; None: where it is; see `mtz_core.devices`).
    `sync_every`: iterations per host read of the losses (`sync_cadence`)."""
    dev = place(device, model)

    def loss_fn(batches):
        ((x, y),) = batches
        return [F.cross_entropy(model(x), y)]

    return _run(
        model,
        [(data, "data")],
        loss_fn,
        iterations=iterations,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
        device=dev,
        progress=progress,
        cancel=cancel,
        schedule=schedule,
        sync_every=sync_every,
    )


def retrain(
    model: nn.Module,
    train_a: Any,
    train_b: Any,
    *,
    iterations: int,
    lr: float = RETRAIN_LR,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    clip_grad_norm: float | None = RETRAIN_CLIP,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: CancelToken | None = None,
    sync_every: int | None = None,
) -> TrainReport:
    """Joint retraining of a zipped network: loss_A + loss_B, one batch of each task per step.

    `device=None` keeps the network where it is (see `mtz_core.devices`); labels index each
    task's own head. The loss is the cross-entropy of each task's logits: for a network whose
    head is followed by a softmax or log-softmax, the output before it (`ZippedNet.logits`).

    The defaults are plain SGD as in the method (no momentum) at lr 0.03, three times the
    method's, with the gradient's global norm clipped at 5; the lr and the clip are chosen on
    the validation split by `python -m experiments.paper` (docs/results.md; the test split only
    reports). On the different-task LeNet-300-100 pairs, 300 iterations per layer after a full
    zip reach 98.11% mean validation accuracy at lr 0.03 against 98.01% at 0.02 (the earlier
    default) and 97.73% at 0.01; 0.05 ties 0.03 within 0.1 points and the smaller step is
    kept. Momentum 0.9 at the same effective step (lr 0.003) is 0.11 points ahead on validation
    after 600 iterations (one seed pair; it tied at the earlier lr 0.02), and a point behind at
    a 10× larger step; plain SGD stays until the lr sweep is rerun with momentum
    (docs/results.md flags the difference).

    A batch-norm VGG whose norm is folded into its convolutions has nothing to rescale the
    steps: unclipped at lr 0.03, 150 steps take the unzipped pair to 51.6 / 97.6% validation
    accuracy and a full zip to 46.7 / 15.5%; clipped at 5 they keep 99.4 / 97.6% and reach
    96.1 / 93.5%, and the clip acts on 127 of the 150 steps after a full zip. With the norms
    kept per task (`ZipConfig(batch_norm="keep")`) no clip is needed
    (docs/results-batchnorm.md).
    """
    return retrain_tasks(
        model,
        [train_a, train_b],
        iterations=iterations,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        clip_grad_norm=clip_grad_norm,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
        progress=progress,
        cancel=cancel,
        sync_every=sync_every,
    )


def retrain_tasks(
    model: nn.Module,
    trains: Sequence[Any],
    *,
    iterations: int,
    lr: float = RETRAIN_LR,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    clip_grad_norm: float | None = RETRAIN_CLIP,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: CancelToken | None = None,
    autocast: str | None = None,
    sync_every: int | None = None,
) -> TrainReport:
    """`retrain` for T tasks: the sum of the T task losses, one batch of each task per step
    (`trains[t]` the training data of task t). `autocast="bf16"`: the forward and backward in
    bfloat16 autocast (the weights, the optimizer and every Hessian stay in their own dtype).
    `sync_every`: iterations per host read of the losses (`sync_cadence`: by default every
    iteration on the CPU, every `SYNC_EVERY` on an accelerator); progress events, the
    divergence check and cancellation's granularity follow it."""
    if autocast not in (None, "bf16"):
        raise ValueError(f"autocast must be None or 'bf16', got {autocast!r}")
    dev = place(device, model)
    logits = getattr(model, "logits", model)

    def loss_fn(batches):
        for t, (x, _) in enumerate(batches):
            distributed.record("train", t, x.shape[0])
        return [F.cross_entropy(logits(x, t), y) for t, (x, y) in enumerate(batches)]

    reduce_losses = None
    ddp = distributed.task_losses(model, dev) if iterations else None
    if ddp is not None:  # DistributedDataParallel: each rank its slice of every global batch
        loss_fn, reduce_losses = ddp.loss_fn, ddp.reduce
        seed += distributed.SEED_STRIDE * distributed.rank()  # dropout: each rank its own masks
    if autocast is not None:
        plain_loss = loss_fn

        def loss_fn(batches):  # noqa: F811  (the same loss, under bf16 autocast)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                return [v.float() for v in plain_loss(batches)]

    report = _run(
        model,
        [(d, f"train_{TASK_LETTERS[t]}") for t, d in enumerate(trains)],
        loss_fn,
        iterations=iterations,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
        device=dev,
        progress=progress,
        cancel=cancel,
        clip_grad_norm=clip_grad_norm,
        reduce_losses=reduce_losses,
        resume=resume.retraining_hook(),
        sync_every=sync_every,
    )
    if ddp is not None:  # each rank's norms followed its own slices: one mean for all
        distributed.average_norm_statistics(model)
    return report
