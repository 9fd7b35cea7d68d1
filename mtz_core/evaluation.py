"""Accuracy per task on held-out data, and the one name for parameters saved.

`saved = a + b − zipped` and `saved_fraction = saved / (a + b)`: the share of the two models'
parameters that the zipped network does not store. Docs, CLI and app all use this name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .devices import place

__all__ = ["TaskScore", "evaluate", "evaluate_zipped", "param_summary", "EVAL_BATCH_SIZE"]

#: Evaluation only reads the data, so it can use larger batches than training.
EVAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class TaskScore:
    accuracy: float
    loss: float
    samples: int

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy

    def to_dict(self) -> dict[str, float]:
        return dict(asdict(self), error=self.error)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Any, *, task: int | None = None, device: Any = None
) -> TaskScore:
    """Accuracy and mean cross-entropy of `model` on (x, y) batches (task t of a zipped net,
    whose loss is taken on its logits: `ZippedNet.logits`). `device`: None evaluates where the
    model is (see `mtz_core.devices`)."""
    dev = place(device, model)
    logits_of = getattr(model, "logits", None) if task is not None else None
    was_training = model.training
    model.eval()
    correct, total, loss = 0, 0, 0.0
    try:
        for i, batch in enumerate(data):
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise TypeError(f"evaluation batch {i} must be an (inputs, labels) pair")
            x, y = batch[0].to(dev), batch[1].to(dev, torch.long)
            if task is None:
                logits = model(x)
            elif logits_of is not None:
                logits = logits_of(x, task)
            else:
                logits = model(x, task)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            total += y.shape[0]
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluation data yielded no samples")
    return TaskScore(correct / total, loss / total, total)


def evaluate_zipped(model: nn.Module, test_a: Any, test_b: Any) -> tuple[TaskScore, TaskScore]:
    """Both tasks' scores of a zipped network on their held-out data."""
    return evaluate(model, test_a, task=0), evaluate(model, test_b, task=1)


def param_summary(params: dict[str, int]) -> dict[str, Any]:
    """Every model's count (a, b, c, …), zipped, saved and saved_fraction from a
    `ZipResult.params` dict: saved and its fraction over all the original models, as
    `ZipResult.saved` / `saved_fraction` count them."""
    originals = {k: v for k, v in params.items() if k != "zipped"}
    total, z = sum(originals.values()), params["zipped"]
    return {**originals, "zipped": z, "saved": total - z, "saved_fraction": (total - z) / total}
