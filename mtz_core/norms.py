"""Batch norm kept per task: each task's own scale, shift and running statistics per unit.

When a layer is followed by batch norm and the zip keeps it (`ZipConfig(batch_norm="keep")`),
the zipped layer computes its pre-norm output with weights shared between the tasks, and each
task then normalises every unit — shared units included — with its own γ, β and running
statistics (the MTZ authors' ResNet code does the same). A bias of the layer itself stays (it
is redundant before a norm, but dropping it would make share 0 save parameters); the merge
gives it the plain average, since the norm's running mean absorbs any bias change.

`NormState` is one model's norm after one layer; `TaskNorm` is the zipped layer's per-task
norm; `recalibrate` re-estimates every task's running statistics on its own data (REPAIR's and
ZipIt!'s reset of batch-norm statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NormState", "TaskNorm", "norm_state", "recalibrate"]


@dataclass(frozen=True)
class NormState:
    """One batch norm's parameters and statistics (γ, β None when it has no affine part)."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None
    mean: torch.Tensor
    var: torch.Tensor
    eps: float
    momentum: float | None

    @property
    def scale(self) -> torch.Tensor:
        """s = γ / √(var + ε): what the norm multiplies the layer's output by (eval mode)."""
        g = self.weight if self.weight is not None else torch.ones_like(self.var)
        return g / torch.sqrt(self.var + self.eps)


def norm_state(bn: nn.Module, name: str) -> NormState:
    """The state (cloned) of batch norm `bn`, named `name` in errors."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"batch norm {name!r} has no running statistics (track_running_stats=False): its "
            "eval-mode output depends on the batch, so it cannot be zipped"
        )
    mean = bn.running_mean.detach().clone()
    return NormState(
        None if bn.weight is None else bn.weight.detach().clone(),
        None if bn.bias is None else bn.bias.detach().clone(),
        mean,
        bn.running_var.detach().clone(),
        float(bn.eps),
        None if bn.momentum is None else float(bn.momentum),
    )


class TaskNorm(nn.Module):
    """Per-task batch norm over a zipped layer's units, laid out per task [shared; own].

    Task t's γ_t, β_t (parameters, when the originals had them) and running statistics have
    the width of task t's output. In training mode a task's batch statistics update its own
    running statistics only.
    """

    def __init__(
        self, widths: Sequence[int], affine: bool, eps: float, momentum: float | None, like
    ) -> None:
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.affine, self.eps, self.momentum = bool(affine), float(eps), momentum
        kw = {"dtype": like.dtype, "device": like.device}
        if self.affine:
            self.weight = nn.ParameterList([nn.Parameter(torch.ones(w, **kw)) for w in widths])
            self.bias = nn.ParameterList([nn.Parameter(torch.zeros(w, **kw)) for w in widths])
        for t, w in enumerate(self.widths):
            self.register_buffer(f"mean_{t}", torch.zeros(w, **kw))
            self.register_buffer(f"var_{t}", torch.ones(w, **kw))
            self.register_buffer(f"batches_{t}", torch.zeros((), dtype=torch.long))

    def stats(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"mean_{task}"), getattr(self, f"var_{task}")

    def params(self, task: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.affine:
            return None, None
        return self.weight[task], self.bias[task]

    def state(self, task: int) -> NormState:
        mean, var = self.stats(task)
        w, b = self.params(task)
        return NormState(w, b, mean, var, self.eps, self.momentum)

    def scale(self, task: int) -> torch.Tensor:
        return self.state(task).scale

    def set_state(self, task: int, state: NormState, rows: torch.Tensor | None = None) -> None:
        """Copy `state` (its entries `rows`, in that order, when given) into task `task`."""

        def pick(v: torch.Tensor) -> torch.Tensor:
            return v if rows is None else v[rows.to(v.device)]

        mean, var = self.stats(task)
        with torch.no_grad():
            mean.copy_(pick(state.mean))
            var.copy_(pick(state.var))
            if self.affine:
                self.weight[task].copy_(pick(state.weight))
                self.bias[task].copy_(pick(state.bias))

    def load_counter(self, task: int, other: TaskNorm) -> None:
        """Take `other`'s count of training batches for task `task` (cumulative averages)."""
        getattr(self, f"batches_{task}").copy_(getattr(other, f"batches_{task}"))

    def forward(self, y: torch.Tensor, task: int) -> torch.Tensor:
        mean, var = self.stats(task)
        w, b = self.params(task)
        if self.training:
            getattr(self, f"batches_{task}").add_(1)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.momentum is None:  # cumulative average, as nn.BatchNorm
            momentum = 1.0 / float(getattr(self, f"batches_{task}"))
        return F.batch_norm(y, mean, var, w, b, self.training, momentum, self.eps)

    def to_module(self, task: int, dims: int) -> nn.Module:
        """A plain nn.BatchNorm1d/2d with task `task`'s parameters and statistics."""
        cls = nn.BatchNorm2d if dims == 4 else nn.BatchNorm1d
        mean, _ = self.stats(task)
        bn = cls(
            self.widths[task],
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
            dtype=mean.dtype,
            device=mean.device,
        )
        with torch.no_grad():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(self.stats(task)[1])
            if self.affine:
                bn.weight.copy_(self.weight[task])
                bn.bias.copy_(self.bias[task])
        return bn.train(self.training)


def recalibrate(
    model: nn.Module,
    batches: Sequence[Any],
    run: Callable[[torch.Tensor, int], Any],
    *,
    norms: Sequence[TaskNorm] | None = None,
    check: Callable[[], None] | None = None,
) -> int:
    """Re-estimate the running statistics of `norms` (default: every `TaskNorm` of `model`),
    task by task, on `batches[t]` (an iterable of input batches per task) by forward passes
    `run(x, t)`: the plain average over all batches (momentum None), weights untouched, every
    other module in eval mode. Returns the number of samples used."""
    if norms is None:
        norms = [m for m in model.modules() if isinstance(m, TaskNorm)]
    if not norms:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    saved = [(n, n.momentum) for n in norms]
    seen = 0
    try:
        model.eval()  # dropout off; only the norms gather batch statistics
        for n in norms:
            n.train()
        for t, source in enumerate(batches):
            for n in norms:
                mean, var = n.stats(t)
                mean.zero_()
                var.fill_(1.0)
                getattr(n, f"batches_{t}").zero_()
                n.momentum = None
            with torch.no_grad():
                for x in source:
                    if check is not None:
                        check()
                    run(x, t)
                    seen += x.shape[0]
    finally:
        for n, momentum in saved:
            n.momentum = momentum
        for m, mode in modes:
            m.training = mode
    return seen
