"""Sharing costs and merges when each task rescales a shared unit: batch norm kept per task.

A layer followed by batch norm, kept per task, computes for task t and unit i

    y_t,i = s_t,i (w_i · x − m_t,i) + β_t,i,      s_t,i = γ_t,i / √(var_t,i + ε)

(any bias of the layer itself is folded into the running mean m). When units i of A and j of B
share one weight vector w, each task keeps its own s, m and β. The error of task t is the mean
squared change of its post-norm output; its running mean m_t is free, and the best m_t absorbs
the mean change δwᵀμ_t, leaving

    E_t = ½ s_t² δwᵀ Σ_t δw,          Σ_t = Cov_t(x)   (the centred Hessian, no bias entry).

So the two-Hessian form holds with H_A := α Σ_A and H_B := β Σ_B, where α = s_A,i² and
β = s_B,j² depend on the *pair*: the cost is no longer one matrix product. With the generalised
eigenvectors L of (Σ_A, Σ_B) (LᵀΣ_A L = diag μ, LᵀΣ_B L = diag ν, μ + ν = 1 on the range of
S = Σ_A + Σ_B) and coordinates p = Lᵀ S w, both errors are diagonal:

    cost  d[i, j] = ½ Σ_k αμ_k βν_k / (αμ_k + βν_k) · (p_A,ik − p_B,jk)²
    merge p̃_k = (αμ_k p_A,k + βν_k p_B,k) / (αμ_k + βν_k),   w̃ = L p̃ + the plain average of a, b
                in the null space of S (directions no data excites).

With α = β = 1 this is exactly `costs.sharing_operator`'s cost and merge for the centred Hessians.
The costs cost O(N_A · N_B · D) (chunked, float64): no matrix product can form them, since the
weight of each coordinate depends on both units' scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .hessian import LayerHessian

__all__ = ["ScaledSharing", "scaled_sharing", "scaled_error", "centred"]

#: bytes of the (chunk × N_B × R) float64 temporaries in `ScaledSharing.cost_matrix`
_CHUNK_BYTES = 64 * 2**20


def centred(h: LayerHessian) -> LayerHessian:
    """The covariance part of a Hessian: no mean term, and a bias entry (if any) of zero
    curvature (the running mean of a kept batch norm absorbs both)."""
    beta = None if h.beta is None else torch.zeros_like(h.beta)
    return LayerHessian(
        h.blocks,
        beta,
        h.vecs[:, :0],
        h.core[:0, :0],
        h.k,
        h.kind,
        h.n_rows,
        h.n_samples,
    )


@dataclass(frozen=True)
class ScaledSharing:
    """The generalised eigenbasis of one layer's two centred Hessians (see the module docstring).

    Vectors are (m, D) incoming vectors in `LayerHessian.split` layout; a bias entry, if any,
    costs nothing and merges to the plain average (each task's running mean absorbs it).
    """

    layout: LayerHessian
    basis: torch.Tensor  # (Bh, s, r): L per stored block, zero columns beyond each block's rank
    metric: torch.Tensor  # (Bh, s, s): S, so that p = Lᵀ S w
    mu: torch.Tensor  # (Bh, r): Σ_A's weight per coordinate (0 ≤ μ ≤ 1; 0 on padded columns)
    nu: torch.Tensor  # (Bh, r)
    range_proj: torch.Tensor  # (Bh, s, s): projector onto the range of S
    pseudo_inverse: bool

    def coords(self, v: torch.Tensor) -> torch.Tensor:
        """p = Lᵀ S w per block, flattened to (m, K·r)."""
        ws, _ = self.layout.split(v)  # (K, m, s)
        p = ws @ self.metric @ self.basis  # (K, m, r)
        return p.transpose(0, 1).reshape(v.shape[0], -1)

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.layout.k
        mu = self.mu.expand(k, -1).reshape(-1)
        nu = self.nu.expand(k, -1).reshape(-1)
        return mu, nu

    def cost_matrix(
        self, va: torch.Tensor, vb: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor
    ) -> torch.Tensor:
        """d[i, j] for rows of va (n_a, D), vb (n_b, D) with units' batch-norm scales s (not
        squared) `scale_a` (n_a,), `scale_b` (n_b,)."""
        pa, pb = self.coords(va), self.coords(vb)
        mu, nu = self._weights()
        alpha, beta = scale_a.to(pa.dtype).square(), scale_b.to(pa.dtype).square()
        bnu = beta[:, None] * nu[None, :]  # (n_b, R)
        n_a, n_b, r = pa.shape[0], pb.shape[0], pa.shape[1]
        out = torch.zeros(n_a, n_b, dtype=pa.dtype, device=pa.device)
        step = max(1, _CHUNK_BYTES // (8 * max(1, n_b * r)))
        for start in range(0, n_a, step):
            amu = alpha[start : start + step, None, None] * mu[None, None, :]  # (c, 1, R)
            den = amu + bnu[None]
            g = torch.where(den > 0, amu * bnu[None] / den.clamp_min(1e-300), 0.0)
            diff = pa[start : start + step, None, :] - pb[None, :, :]
            out[start : start + step] = 0.5 * (g * diff.square()).sum(-1)
        return out

    def merge(
        self, a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor
    ) -> torch.Tensor:
        """w̃ for each pair of rows of a, b (k, D), given each row's batch-norm scale."""
        alpha = scale_a.to(a.dtype).square()[None, :, None]
        beta = scale_b.to(a.dtype).square()[None, :, None]
        wa, ta = self.layout.split(a)  # (K, m, s)
        wb, tb = self.layout.split(b)
        pa = wa @ self.metric @ self.basis  # (K, m, r)
        pb = wb @ self.metric @ self.basis
        amu, bnu = alpha * self.mu[:, None, :], beta * self.nu[:, None, :]
        den = amu + bnu
        p = torch.where(den > 0, (amu * pa + bnu * pb) / den.clamp_min(1e-300), 0.5 * (pa + pb))
        avg = 0.5 * (wa + wb)
        null = avg - avg @ self.range_proj  # range_proj is symmetric
        bias = None if ta is None else 0.5 * (ta + tb)  # absorbed by the running means
        return self.layout.join(p @ self.basis.transpose(-1, -2) + null, bias)


def scaled_error(
    w: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    h_a: LayerHessian,
    h_b: LayerHessian,
) -> torch.Tensor:
    """½ s_A² (w − a)ᵀ Σ_A (w − a) + ½ s_B² (w − b)ᵀ Σ_B (w − b) per row, with Σ the centred
    part of the given (usually undamped) Hessians: the error left after re-centring."""
    sa, sb = scale_a.to(w.dtype).square(), scale_b.to(w.dtype).square()
    return 0.5 * (sa * centred(h_a).quad(w - a) + sb * centred(h_b).quad(w - b))


def scaled_sharing(h_a: LayerHessian, h_b: LayerHessian) -> ScaledSharing:
    """The `ScaledSharing` of two (damped) Hessians of one layer; only their covariance blocks
    are used (`centred`)."""
    if (h_a.k, h_a.s, h_a.blocks.shape) != (h_b.k, h_b.s, h_b.blocks.shape):
        raise ValueError(
            f"Hessians must have one layout, got K={h_a.k}, s={h_a.s} and K={h_b.k}, s={h_b.s}"
        )
    wa, wb = h_a.blocks, h_b.blocks
    s_mat = wa + wb
    lam, q = torch.linalg.eigh(s_mat)  # (Bh, s), (Bh, s, s)
    tol = lam.amax(dim=-1, keepdim=True).clamp_min(0) * max(1, h_a.s) * torch.finfo(lam.dtype).eps
    keep = lam > tol
    root_inv = torch.where(keep, lam.clamp_min(1e-300).rsqrt(), torch.zeros_like(lam))
    r_mat = q * root_inv[:, None, :]  # (Bh, s, s); zero columns outside the range
    m = r_mat.transpose(-1, -2) @ wa @ r_mat
    m = 0.5 * (m + m.transpose(-1, -2))
    # directions outside the range of S get eigenvalue 2 (μ lies in [0, 1] on the range), so
    # eigh never mixes them with range directions of μ = 0; their basis columns are zero
    m = m + torch.diag_embed(2.0 * (~keep).to(m.dtype))
    mu, u = torch.linalg.eigh(m)
    inside = mu < 1.5
    basis = r_mat @ (u * inside[:, None, :].to(u.dtype))
    mu = torch.where(inside, mu.clamp(0, 1), torch.zeros_like(mu))
    nu = torch.where(inside, 1 - mu, torch.zeros_like(mu))
    proj = (q * keep[:, None, :].to(q.dtype)) @ q.transpose(-1, -2)
    return ScaledSharing(
        layout=centred(h_a),
        basis=basis,
        metric=s_mat,
        mu=mu,
        nu=nu,
        range_proj=proj,
        pseudo_inverse=not bool(keep.all()),
    )
