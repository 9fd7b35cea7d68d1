"""Layer-wise Hessians H = (1/n) Σ x̄ x̄ᵀ, streamed and accumulated in float64.

The Hessian of layer l for task X is a second moment of the layer's *shared* inputs (plus the
constant 1 for the bias) on task X's calibration data, taken through the current zipped network.
It is streamed: a forward pre-hook on the layer hands each batch's input to a `SecondMoment`
accumulator (init / update / finalize) and stops the forward pass there, so no more than one
batch of activations is alive at a time and nothing above layer l is computed.

Hessian kinds (all returned as a stack of blocks of shape (blocks, dim+1, dim+1)):

* ``exact``   — one block over every incoming weight: the input features of a linear layer, or
  the unfolded k·k·C_in patch of a convolution (mean over samples × output positions).
* ``channel`` — convolutions only: one (C_in+1)² channel covariance (mean over samples × input
  positions), used for every kernel position (the method page's cheaper approximation).
* ``block``   — a linear layer after a flatten: one (C_in+1)² block per spatial position, cross-
  position terms dropped. This keeps the Hessian-weighted merge where the exact Hessian would be
  (C·P+1)² (25,089² for VGG-16's fc6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import LayerSpec
from .batches import all_finite

__all__ = ["SecondMoment", "LayerHessian", "hessian_rows", "capture_inputs", "damp"]

#: Largest exact Hessian side that `flatten_hessian="auto"` accepts: a float64 matrix of
#: 4,097² is 134 MB and the cost algebra holds about five of them per task pair.
AUTO_EXACT_MAX_DIM = 4097
#: Rows per float64 product when accumulating (keeps a chunk near 64 MB).
_CHUNK_BYTES = 64 * 2**20


class SecondMoment:
    """Streaming (1/n) Σ [x; 1][x; 1]ᵀ over rows x, per block, in float64."""

    def __init__(self, dim: int, blocks: int = 1, device: torch.device | str = "cpu") -> None:
        self.dim, self.blocks = int(dim), int(blocks)
        self.xx = torch.zeros(self.blocks, self.dim, self.dim, dtype=torch.float64, device=device)
        self.xs = torch.zeros(self.blocks, self.dim, dtype=torch.float64, device=device)
        self.n = 0

    def update(self, rows: torch.Tensor) -> None:
        """Add rows of shape (m, dim) (one block) or (m, blocks, dim)."""
        if rows.dim() == 2:
            rows = rows.unsqueeze(1)
        if rows.shape[1:] != (self.blocks, self.dim):
            raise ValueError(
                f"expected rows of shape (m, {self.blocks}, {self.dim}), got {tuple(rows.shape)}"
            )
        step = max(1, _CHUNK_BYTES // (8 * max(1, self.blocks * self.dim)))
        for start in range(0, rows.shape[0], step):
            chunk = rows[start : start + step].to(device=self.xx.device, dtype=torch.float64)
            chunk = chunk.transpose(0, 1)  # (blocks, m, dim)
            self.xx.baddbmm_(chunk.transpose(1, 2), chunk)
            self.xs += chunk.sum(dim=1)
        self.n += rows.shape[0]

    def finalize(self) -> torch.Tensor:
        """The augmented second moment, shape (blocks, dim+1, dim+1)."""
        if self.n == 0:
            raise ValueError("no samples were accumulated")
        d = self.dim
        h = torch.empty(self.blocks, d + 1, d + 1, dtype=torch.float64, device=self.xx.device)
        h[:, :d, :d] = self.xx
        h[:, :d, d] = self.xs
        h[:, d, :d] = self.xs
        h[:, d, d] = self.n
        h /= self.n
        h = 0.5 * (h + h.transpose(1, 2))
        if not all_finite(h):
            raise ValueError("the Hessian has NaN or Inf entries (activations overflowed?)")
        return h


@dataclass(frozen=True)
class LayerHessian:
    """One task's Hessian of one layer: blocks (B, D, D) and how it was made."""

    blocks: torch.Tensor
    kind: str
    n_rows: int
    n_samples: int

    @property
    def dim(self) -> int:
        return self.blocks.shape[-1]


def hessian_rows(x_shared: torch.Tensor, spec: LayerSpec, kind: str) -> torch.Tensor:
    """The rows x (without the 1) that a batch of shared inputs contributes to the Hessian."""
    s = x_shared.shape[1]
    if spec.kind == "conv":
        if kind == "exact":
            patches = F.unfold(
                x_shared, spec.kernel_size, spec.dilation, spec.padding, spec.stride
            )  # (N, s·k², L)
            return patches.transpose(1, 2).reshape(-1, patches.shape[1])
        if kind == "channel":
            return x_shared.permute(0, 2, 3, 1).reshape(-1, s)
        raise ValueError(f"unknown conv Hessian kind {kind!r}; use 'exact' or 'channel'")
    if kind == "exact":
        return x_shared
    if kind == "block":
        units = s // spec.positions
        return x_shared.reshape(-1, units, spec.positions).transpose(1, 2)  # (N, P, units)
    raise ValueError(f"unknown linear Hessian kind {kind!r}; use 'exact' or 'block'")


def hessian_shape(spec: LayerSpec, shared_units: int, kind: str) -> tuple[int, int]:
    """(blocks, dim) of the rows for a layer with `shared_units` shared inputs."""
    if spec.kind == "conv":
        if kind == "exact":
            return 1, shared_units * spec.kernel_positions
        return 1, shared_units
    if kind == "exact":
        return 1, shared_units * spec.positions
    return spec.positions, shared_units


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass at the captured layer."""


@contextmanager
def capture_inputs(
    layer: nn.Module, take: Callable[[torch.Tensor], None], stop: bool = True
) -> Iterator[Callable[[Callable[[], object]], None]]:
    """Hand every input of `layer` to `take`; the yielded runner runs a forward pass.

    The hook is removed in `finally`. With `stop=True` the forward pass ends at the layer, so
    computing a Hessian costs only the layers below it.
    """

    def hook(_module: nn.Module, args: tuple) -> None:
        take(args[0])
        if stop:
            raise _Stop

    handle = layer.register_forward_pre_hook(hook)

    def run(forward: Callable[[], object]) -> None:
        try:
            forward()
        except _Stop:
            pass

    try:
        yield run
    finally:
        handle.remove()


def damp(blocks: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """H + λI per block with λ = damping · trace(H) / dim; returns (damped, λ per block)."""
    dim = blocks.shape[-1]
    lam = damping * torch.diagonal(blocks, dim1=-2, dim2=-1).sum(-1) / dim
    if damping == 0:
        return blocks, lam
    eye = torch.eye(dim, dtype=blocks.dtype, device=blocks.device)
    return blocks + lam[:, None, None] * eye, lam
