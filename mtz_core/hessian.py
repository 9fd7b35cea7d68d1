"""Layer-wise Hessians H = (1/n) Σ x̄ x̄ᵀ, streamed and accumulated in float64.

The Hessian of layer l for task X is a second moment of the layer's *shared* inputs (plus the
constant 1 for the bias) on task X's calibration data, taken through the current zipped network.
It is streamed: a forward pre-hook on the layer hands each batch's input to a `SecondMoment`
accumulator (init / update / finalize) and stops the forward pass there, so no more than one
batch of activations is alive at a time and nothing above layer l is computed.

Hessian kinds (all held as a `LayerHessian`: K weight blocks sharing one bias entry):

* ``exact``   — one block over every incoming weight: the input features of a linear layer, or
  the unfolded k·k·C_in patch of a convolution (mean over samples × output positions).
* ``channel`` — convolutions only: one C_in² channel covariance (mean over samples × input
  positions), used for every one of the k² kernel positions (the method page's cheaper
  approximation), with the bias once.
* ``block``   — a linear layer after a flatten: one C_in² block per spatial position, cross-
  position terms dropped, the bias once. This keeps the Hessian-weighted merge where the exact
  Hessian would be (C·P+1)² (25,089² for VGG-16's fc6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import LayerSpec
from .batches import all_finite

__all__ = [
    "SecondMoment",
    "LayerHessian",
    "hessian_rows",
    "hessian_shape",
    "weight_blocks",
    "capture_inputs",
]

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

    def layer_hessian(self, k: int, has_bias: bool, kind: str, n_samples: int = 0) -> LayerHessian:
        """`LayerHessian.from_moment(self.finalize(), k, has_bias, kind, self.n, n_samples)`
        without the augmented copy: the covariance is formed in the accumulator's own memory
        (a D × D float64 matrix is 170 MB at D = 4,609, and each extra pass over it costs as
        much as a sizeable part of the accumulation), so the accumulator is used up."""
        if self.n == 0:
            raise ValueError("no samples were accumulated")
        if self.xx.shape[-1] and not (
            all_finite(self.xs) and all_finite(torch.diagonal(self.xx, dim1=-2, dim2=-1))
        ):  # finite Σx² and Σx bound every Σ x_i x_j (Cauchy-Schwarz)
            raise ValueError("the Hessian has NaN or Inf entries (activations overflowed?)")
        mean = self.xs / self.n
        cov = self.xx.div_(self.n)
        # Σ x xᵀ / n − μ μᵀ: both triangles come from the same products, so the matrix is as
        # symmetric as the accumulating GEMMs leave it (bitwise, for XᵀX on the CPUs tried);
        # no symmetrising pass, which at D = 4,609 costs as much as 20% of the accumulation.
        # Cholesky and eigh read one triangle only.
        cov.baddbmm_(mean[:, :, None], mean[:, None, :], alpha=-1)
        self.xx = torch.empty(0, dtype=torch.float64, device=self.xx.device)  # used up
        return LayerHessian.from_mean_cov(mean, cov, k, has_bias, kind, self.n, n_samples)

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
    """One task's Hessian of one layer over the incoming vector v = [w_1; …; w_K; bias].

    The weights split into K blocks of s entries (K = 1 for the exact kinds; the k² kernel
    positions for ``channel``; the P flatten positions for ``block``); the bias, when the layer
    has one, is a single last entry. With x = [x_1; …; x_K] the block inputs, μ their mean and
    Σ_p the covariance of block p, the layer error of a change δ is

        E = ½ mean (δ_wᵀ x + δ_t)² = ½ δ_wᵀ Cov(x) δ_w + ½ (μᵀ δ_w + δ_t)²,

    so H = blockdiag(Σ_1 … Σ_K, β) + u uᵀ with u = [μ; 1] and β = 0: exactly E[x̄ x̄ᵀ] for K = 1.
    The blocked kinds drop only the covariances *between* blocks; the mean term stays whole,
    so H stays positive semi-definite and the bias is counted once. In general the matrix is

        H = blockdiag(blocks, β) + V C Vᵀ          (V: D × r, C: r × r, r small)

    which is also the form of damped Hessians (blocks + λI, β + λ) and of their sums.
    `blocks` holds one block shared by all K (``channel``: every kernel position sees the same
    channel statistics) or K blocks.
    """

    blocks: torch.Tensor  # (Bh, s, s), Bh = 1 or K
    beta: torch.Tensor | None  # () the bias's own diagonal entry; None: the layer has no bias
    vecs: torch.Tensor  # (D, r)
    core: torch.Tensor  # (r, r), symmetric
    k: int
    kind: str
    n_rows: int = 0
    n_samples: int = 0

    @staticmethod
    def from_moment(
        moment: torch.Tensor,
        k: int,
        has_bias: bool,
        kind: str,
        n_rows: int = 0,
        n_samples: int = 0,
    ) -> LayerHessian:
        """From `SecondMoment.finalize()` blocks (Bh, s+1, s+1), whose last entry is the 1."""
        s = moment.shape[-1] - 1
        mean = moment[:, :s, s]
        cov = moment[:, :s, :s] - mean[:, :, None] * mean[:, None, :]
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        return LayerHessian.from_mean_cov(mean, cov, k, has_bias, kind, n_rows, n_samples)

    @staticmethod
    def from_mean_cov(
        mean: torch.Tensor,
        cov: torch.Tensor,
        k: int,
        has_bias: bool,
        kind: str,
        n_rows: int = 0,
        n_samples: int = 0,
    ) -> LayerHessian:
        """From the block inputs' means (Bh, s) and (symmetric) covariances (Bh, s, s)."""
        s = cov.shape[-1]
        u = (mean.expand(k, s) if mean.shape[0] == 1 else mean).reshape(k * s)
        beta = None
        if has_bias:
            u = torch.cat([u, torch.ones(1, dtype=u.dtype, device=u.device)])
            beta = torch.zeros((), dtype=u.dtype, device=u.device)
        core = torch.ones(1, 1, dtype=u.dtype, device=u.device)
        return LayerHessian(cov, beta, u[:, None], core, int(k), kind, int(n_rows), int(n_samples))

    @property
    def s(self) -> int:
        """Entries per block (shared input units, times k² for the exact conv kind)."""
        return self.blocks.shape[-1]

    @property
    def has_bias(self) -> bool:
        return self.beta is not None

    @property
    def dim(self) -> int:
        """D: the length of an incoming vector (K·s, plus 1 for the bias)."""
        return self.k * self.s + int(self.has_bias)

    @property
    def repeats(self) -> int:
        """How many of the K blocks each stored block stands for."""
        return self.k // self.blocks.shape[0]

    def trace(self) -> torch.Tensor:
        t = self.repeats * torch.diagonal(self.blocks, dim1=-2, dim2=-1).sum()
        t = t + (self.core * (self.vecs.T @ self.vecs)).sum()
        return t + self.beta if self.has_bias else t

    def damped(self, factor: float) -> tuple[LayerHessian, float]:
        """H + λI with λ = factor · trace(H) / D over the whole matrix; returns (H', λ)."""
        if factor == 0 or self.dim == 0:
            return self, 0.0
        lam = factor * self.trace() / self.dim
        blocks = self.blocks.clone()
        torch.diagonal(blocks, dim1=-2, dim2=-1).add_(lam)
        beta = self.beta + lam if self.has_bias else None
        return replace(self, blocks=blocks, beta=beta), float(lam)

    def plus(self, other: LayerHessian) -> LayerHessian:
        """H + H' for two Hessians of one layout (the low-rank parts side by side)."""
        if (self.k, self.s, self.has_bias) != (other.k, other.s, other.has_bias):
            raise ValueError("Hessians of different layouts cannot be added")
        beta = self.beta + other.beta if self.has_bias else None
        return replace(
            self,
            blocks=self.blocks + other.blocks,
            beta=beta,
            vecs=torch.cat([self.vecs, other.vecs], dim=1),
            core=torch.block_diag(self.core, other.core),
        )

    def split(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vectors (m, D) as weight blocks (K, m, s) and biases (m,) (None without bias)."""
        m = v.shape[0]
        ws = v[:, : self.k * self.s].reshape(m, self.k, self.s).transpose(0, 1)
        return ws, (v[:, -1] if self.has_bias else None)

    def join(self, ws: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """The inverse of `split`."""
        flat = ws.transpose(0, 1).reshape(ws.shape[1], self.k * self.s)
        return flat if t is None else torch.cat([flat, t[:, None]], dim=1)

    def block_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """blockdiag(blocks, β) v for each row of v (m, D)."""
        ws, t = self.split(v)
        return self.join(ws @ self.blocks, None if t is None else self.beta * t)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for each row of v (m, D)."""
        return self.block_matvec(v) + (v @ self.vecs) @ self.core @ self.vecs.T

    def quad(self, v: torch.Tensor) -> torch.Tensor:
        """vᵀ H v for each row of v (m, D), shape (m,)."""
        ws, t = self.split(v)
        q = ((ws @ self.blocks) * ws).sum(dim=(0, 2))
        if t is not None:
            q = q + self.beta * t * t
        proj = v @ self.vecs
        return q + ((proj @ self.core) * proj).sum(dim=1)

    def dense(self) -> torch.Tensor:
        """The full D × D matrix (for oracles, and the dense pseudo-inverse fallback)."""
        k, s = self.k, self.s
        h = self.vecs @ self.core @ self.vecs.T
        wb = self.blocks.expand(k, s, s) if self.blocks.shape[0] == 1 else self.blocks
        for p in range(k):
            h[p * s : (p + 1) * s, p * s : (p + 1) * s] += wb[p]
        if self.has_bias:
            h[-1, -1] += self.beta
        return h


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


def weight_blocks(spec: LayerSpec, kind: str) -> int:
    """K: the blocks a layer's incoming weights split into (k² kernel positions for
    ``channel``, P flatten positions for ``block``, 1 for the exact kinds)."""
    if kind == "channel":
        return spec.kernel_positions
    if kind == "block":
        return spec.positions
    return 1


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
