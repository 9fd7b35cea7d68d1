"""Where work runs: one meaning for every `device=` argument of `mtz_core`.

* ``None`` — where the model already is (its parameters' device); nothing moves.
* ``"auto"`` — CUDA, then MPS, then the CPU.
* a device name or `torch.device` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) — it must
  exist on this machine.

The defaults differ by call (training a model from scratch: ``"auto"``; retraining or zipping
models the user already placed: ``None``), the meaning of each value does not.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["resolve_device", "device_of", "place"]


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """A named device, checked to exist here; "auto" picks CUDA, then MPS, then the CPU.

    None (where the model already is) needs the model: use `place(None, model)`.
    """
    if device is None:
        raise ValueError(
            "device=None means 'where the model already is' and needs the model "
            "(mtz_core.devices.place); name a device or pass 'auto'"
        )
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} was asked for, but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {str(dev)!r} does not exist; this machine has {torch.cuda.device_count()} "
            "CUDA device(s)"
        )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' was asked for, but MPS is not available here")
    return dev


def place(device: Any, model: nn.Module) -> torch.device:
    """The device `device=` names for work on `model` (None: where the model is)."""
    return device_of(model) if device is None else resolve_device(device)
