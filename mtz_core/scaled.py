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
The costs cost O(N_A · N_B · R) element-wise work (float64) for the R coordinates of distinct
μ: no matrix product can form them, since the weight of each coordinate depends on both units'
scales. Coordinates that share one μ (a cluster) take one matrix product each.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .costs import well_conditioned as _well_conditioned
from .hessian import LayerHessian

__all__ = ["ScaledSharing", "scaled_sharing", "scaled_error", "centred"]

#: elements of the (rows × cols × R) float64 temporaries in `ScaledSharing.cost_matrix`: 2 MB,
#: so that the element-wise passes over them stay in cache
_BLOCK_ELEMENTS = 2**18
#: generalised eigenvalues μ this close are one (eigh's round-off is about 1e-15 here)
_SAME_WEIGHT = 1e-12


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
    range_proj: torch.Tensor | None  # (Bh, s, s): projector onto the range of S; None: all
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

    @cached_property
    def _columns(self) -> tuple[torch.Tensor, list[tuple[torch.Tensor, float, float]]]:
        """The coordinates that carry weight, split into single ones and clusters of one
        (μ, ν): (single column indices, [(cluster columns, μ, ν)]).

        Coordinates outside the range of S (μ = ν = 0) cost nothing. Coordinates with one
        (μ, ν) cost g(α, β) ‖p_A − p_B‖² over the cluster, a matrix product: a kernel position
        of the ``channel`` kind repeats every μ K times, and a damped Hessian of fewer samples
        than inputs puts every direction the data never reach at μ = λ_A / (λ_A + λ_B), which
        at a small feature map is most of them. μ values closer than `_SAME_WEIGHT` are one
        eigenvalue up to eigh's round-off.
        """
        device = self.mu.device
        # one read of the weights (K·r numbers) and the clustering on the host: on a GPU the
        # mask, the breaks and every cluster's range and means would each wait for the device
        mu, nu = torch.stack(self._weights()).cpu().unbind()
        live = torch.nonzero((mu > 0) | (nu > 0)).squeeze(1)
        values, order = torch.sort(mu[live])
        breaks = torch.nonzero(values.diff() > _SAME_WEIGHT).squeeze(1) + 1
        bounds = [0, *breaks.tolist(), len(values)]
        single, clusters = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            cols = live[order[lo:hi]]
            if hi - lo >= 2 and float(values[hi - 1] - values[lo]) <= 8 * _SAME_WEIGHT:
                mean_mu, mean_nu = float(mu[cols].mean()), float(nu[cols].mean())
                clusters.append((cols.to(device), mean_mu, mean_nu))
            else:
                single.append(cols)
        empty = torch.zeros(0, dtype=torch.long)
        return (torch.cat(single) if single else empty).to(device), clusters

    def cost_matrix(
        self, va: torch.Tensor, vb: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor
    ) -> torch.Tensor:
        """d[i, j] for rows of va (n_a, D), vb (n_b, D) with units' batch-norm scales s (not
        squared) `scale_a` (n_a,), `scale_b` (n_b,).

        Per coordinate the weight is αμβν / (αμ + βν) = 1 / (1/(αμ) + 1/(βν)) (0 when either
        is 0: 1/0 = inf), summed element-wise over blocks small enough to stay in cache for
        single coordinates, and through one matrix product per cluster (`_columns`)."""
        pa, pb = self.coords(va), self.coords(vb)
        mu, nu = self._weights()
        alpha, beta = scale_a.to(pa.dtype).square(), scale_b.to(pa.dtype).square()
        n_a, n_b = pa.shape[0], pb.shape[0]
        out = torch.zeros(n_a, n_b, dtype=pa.dtype, device=pa.device)
        single, clusters = self._columns
        if single.numel():
            qa, qb = pa[:, single], pb[:, single]
            inv_a = (alpha[:, None] * mu[single][None, :]).reciprocal_()
            inv_b = (beta[:, None] * nu[single][None, :]).reciprocal_()
            r = single.numel()
            cols = max(1, min(n_b, _BLOCK_ELEMENTS // r))
            rows = max(1, _BLOCK_ELEMENTS // (cols * r))
            for i in range(0, n_a, rows):
                for j in range(0, n_b, cols):
                    den = inv_a[i : i + rows, None, :] + inv_b[None, j : j + cols, :]
                    diff = qa[i : i + rows, None, :] - qb[None, j : j + cols, :]
                    out[i : i + rows, j : j + cols] = diff.square_().div_(den).sum(-1)
        for cols_c, mu_c, nu_c in clusters:
            qa, qb = pa[:, cols_c], pb[:, cols_c]
            sq = (qa * qa).sum(1)[:, None] + (qb * qb).sum(1)[None, :] - 2 * qa @ qb.T
            inv = (alpha * mu_c).reciprocal()[:, None] + (beta * nu_c).reciprocal()[None, :]
            out += sq.clamp_min_(0).div_(inv)
        return out.mul_(0.5)

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
        null = 0.0 if self.range_proj is None else avg - avg @ self.range_proj  # symmetric
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
    if h_a.s:
        chol, info = torch.linalg.cholesky_ex(s_mat)
        if not bool((info != 0).any()) and _well_conditioned(chol):
            return _by_cholesky(h_a, wa, s_mat, chol)
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


def _by_cholesky(
    h_a: LayerHessian, wa: torch.Tensor, s_mat: torch.Tensor, chol: torch.Tensor
) -> ScaledSharing:
    """S = L Lᵀ positive definite (any damping > 0): the generalised eigenvectors are L⁻ᵀ U
    with U the eigenvectors of L⁻¹ Σ_A L⁻ᵀ (one Cholesky factor, two triangular solves and one
    eigh, where the pseudo-inverse path needs two eighs: about half the time at D = 4,609)."""
    half = torch.linalg.solve_triangular(chol, wa, upper=False)  # L⁻¹ Σ_A
    m = torch.linalg.solve_triangular(chol, half.transpose(-1, -2), upper=False)
    m = 0.5 * (m + m.transpose(-1, -2))
    mu, u = torch.linalg.eigh(m)
    basis = torch.linalg.solve_triangular(chol.transpose(-1, -2), u, upper=True)
    mu = mu.clamp(0, 1)
    return ScaledSharing(
        layout=centred(h_a),
        basis=basis,
        metric=s_mat,
        mu=mu,
        nu=1 - mu,
        range_proj=None,
        pseudo_inverse=False,
    )
