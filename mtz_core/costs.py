"""The cost of sharing a neuron pair, and the merged weights: pure float64 matrix algebra.

Notation (see docs/method.md): a, b are the incoming vectors of neuron i of A and neuron j of B
over the layer's shared inputs, laid out [w_1; …; w_K; bias] (`hessian.LayerHessian`); H_A, H_B
the (damped) layer Hessians, S = H_A + H_B.

* cost      d[i, j] = ½ (a − b)ᵀ Ĥ (a − b),   Ĥ = H_A S⁺ H_B  (= (H_A⁻¹ + H_B⁻¹)⁻¹ when invertible)
* merge     w̃ = ½(a + b) + ½ S⁺ (H_A − H_B)(a − b)   (= S⁻¹(H_A a + H_B b) when S is invertible;
            directions no data excites get the plain average)
* error     ½ (w − a)ᵀ H_A (w − a) + ½ (w − b)ᵀ H_B (w − b)  for any applied w (d for w = w̃)

Every Hessian has the form blockdiag(W_1 … W_K, β) + V C Vᵀ with V of small rank r. So does S,
and Woodbury's identity gives S⁻¹ = D⁻¹ − P (C⁻¹ + VᵀP)⁻¹ Pᵀ with D the block diagonal and
P = D⁻¹V: one Cholesky factor per block and an r × r solve. (Before damping the bias's own
diagonal entry β is 0; the bias is then moved into the low-rank part, D + ε e eᵀ − ε e eᵀ, so D
stays invertible.) Then Ĥ = H_X − H_X S⁻¹ H_X, for the X of smaller trace, has the same form:

    Ĥ = blockdiag(W_X − W_X D⁻¹ W_X, …) + L M Lᵀ,      L = [V_X, D_X D⁻¹ V_X, H_X P]

so all N_A × N_B costs come from one product per block plus rank-r corrections: nothing loops
over pairs, and the bias is counted once however many blocks the weights split into. When a
block of S is singular (dead units at damping 0) its eigendecomposition gives the block's
pseudo-inverse, which with V orthogonal to the blocks' null spaces gives exactly S⁺. When V is
not (an input that is constant, so collinear with the bias), the dense pseudo-inverse of S is
used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .hessian import LayerHessian

__all__ = [
    "SharingOperator",
    "DENSE_PSEUDO_INVERSE_MAX_DIM",
    "sharing_operator",
    "average_merge",
    "merge_error",
    "squared_distance",
]

#: Largest D for which a singular blocked layout falls back to the dense D × D pseudo-inverse
#: (a 134 MB float64 matrix); above it, the error asks for damping > 0.
DENSE_PSEUDO_INVERSE_MAX_DIM = 4097
#: A Cholesky factor whose diagonal spans more than this (condition number 1e14) is not trusted.
_MAX_DIAG_SPAN = 1e7
#: Woodbury's small matrix is trusted up to this condition number.
_MAX_SMALL_CONDITION = 1e12
#: A low-rank direction whose share in the blocks' null space exceeds this is not orthogonal.
_NULL_TOLERANCE = 1e-8


class SharingOperator:
    """Ĥ and a solver for S = H_A + H_B, for one layer: all pair costs, and merges.

    `pseudo_inverse` says the solve fell back from Cholesky to a pseudo-inverse (S singular or
    badly conditioned: typically damping 0 with dead units or constant inputs).
    """

    pseudo_inverse: bool

    def cost_matrix(self, va: torch.Tensor, vb: torch.Tensor) -> torch.Tensor:
        """All pair costs d[i, j] (n_a × n_b, clamped at 0) for vectors va (n_a, D), vb."""
        raise NotImplementedError

    def merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """w̃ for each pair of rows of a and b, shape (k, D)."""
        raise NotImplementedError


@dataclass(frozen=True)
class _BlockInverse:
    """D⁺ for D = blockdiag(W_1 … W_K, β): W⁺ = GᵀG per stored block, with G = L⁻¹ (Cholesky)
    or G = Λ⁺^½ Vᵀ (eigendecomposition), and 1/β."""

    layout: LayerHessian
    chol: torch.Tensor | None
    eig: tuple[torch.Tensor, torch.Tensor] | None = None  # (vectors, √(1/λ) with 0 for λ ≈ 0)
    bias_inv: torch.Tensor | None = None

    def half(self, x: torch.Tensor) -> torch.Tensor:
        """G x for x of shape (Bh, s, m)."""
        if x.shape[-2] == 0:
            return x
        if self.chol is not None:
            return torch.linalg.solve_triangular(self.chol, x, upper=False)
        vecs, root_inv = self.eig
        return root_inv[..., None] * (vecs.transpose(-1, -2) @ x)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """D⁺ v for each row of v (m, D)."""
        ws, t = self.layout.split(v)
        x = ws.transpose(1, 2)  # (K, s, m)
        if x.shape[1] == 0:
            out = x
        elif self.chol is not None:
            out = torch.cholesky_solve(x, self.chol.expand(x.shape[0], -1, -1))
        else:
            vecs, root_inv = self.eig
            out = vecs @ ((root_inv**2)[..., None] * (vecs.transpose(-1, -2) @ x))
        return self.layout.join(out.transpose(1, 2), None if t is None else self.bias_inv * t)

    def null_share(self, v: torch.Tensor) -> float:
        """The largest share of a row of v (m, D) that lies in the blocks' null space."""
        if self.eig is None:
            return 0.0
        vecs, root_inv = self.eig
        ws, _ = self.layout.split(v)
        coords = vecs.transpose(-1, -2) @ ws.transpose(1, 2)  # (K, s, m)
        null = (root_inv == 0)[..., None]
        inside = (coords * null).square().sum(dim=(0, 1)).sqrt()
        return float((inside / v.norm(dim=1).clamp_min(1e-300)).max()) if v.numel() else 0.0


@dataclass(frozen=True)
class _HatForm:
    """Ĥ = blockdiag(blocks, beta) + L M Lᵀ, formed (module docstring)."""

    blocks: torch.Tensor  # (Bh, s, s)
    beta: torch.Tensor | None
    vecs: torch.Tensor  # (D, q)
    core: torch.Tensor  # (q, q)


@dataclass
class _LowRankSharing(SharingOperator):
    """S⁻¹ by Woodbury (module docstring); all pair costs from Ĥ formed, or by solves.

    Forming Ĥ's blocks takes a solve with s right-hand sides and an s × s × s product per
    block; the costs of n_a + n_b < s vectors are cheaper by solves with those vectors alone
    (`_cost_matrix_solved`: a convolution at a small map has D = 9·C_in far above its C_out
    units). A merge never needs Ĥ, so it is formed only when a cost matrix asks for it.
    """

    h_a: LayerHessian
    h_b: LayerHessian
    x: LayerHessian  # the Hessian of smaller trace: Ĥ = H_X − H_X S⁻¹ H_X without cancellation
    inv: _BlockInverse
    p: torch.Tensor  # (D, r'): D⁻¹ V'
    small_inv: torch.Tensor  # (r', r')
    pseudo_inverse: bool
    _hat: _HatForm | None = None

    def hat(self) -> _HatForm:
        """Ĥ in its structured form (formed once)."""
        if self._hat is None:
            x, inv, p = self.x, self.inv, self.p
            gw = inv.half(x.blocks)
            hat_blocks = x.blocks - gw.transpose(-1, -2) @ gw
            hat_blocks = 0.5 * (hat_blocks + hat_blocks.transpose(-1, -2))
            hat_beta = None if not x.has_bias else x.beta - x.beta * x.beta * inv.bias_inv
            gv = inv.apply(x.vecs.T).T  # D⁻¹ V_X
            y = x.block_matvec(gv.T).T  # D_X D⁻¹ V_X
            z = x.matvec(p.T).T  # H_X P
            c = x.core
            r_x, r_p = c.shape[0], p.shape[1]
            core = torch.zeros(2 * r_x + r_p, 2 * r_x + r_p, dtype=c.dtype, device=c.device)
            core[:r_x, :r_x] = c - c @ (x.vecs.T @ gv) @ c
            core[:r_x, r_x : 2 * r_x] = -c
            core[r_x : 2 * r_x, :r_x] = -c
            core[2 * r_x :, 2 * r_x :] = self.small_inv
            core = 0.5 * (core + core.T)
            vecs = torch.cat([x.vecs, y, z], dim=1)
            self._hat = _HatForm(hat_blocks, hat_beta, vecs, core)
        return self._hat

    def _terms(self, v: torch.Tensor):
        hat = self.hat()
        ws, t = self.h_a.split(v)
        wm = ws @ hat.blocks
        proj = v @ hat.vecs
        q = (wm * ws).sum(dim=(0, 2)) + ((proj @ hat.core) * proj).sum(dim=1)
        if t is not None:
            q = q + hat.beta * t * t
        return ws, wm, t, proj, q

    def cost_matrix(self, va: torch.Tensor, vb: torch.Tensor) -> torch.Tensor:
        if self._hat is None and va.shape[0] + vb.shape[0] < self.h_a.s:
            return self._cost_matrix_solved(va, vb)
        return self._cost_matrix_formed(va, vb)

    def _cost_matrix_formed(self, va: torch.Tensor, vb: torch.Tensor) -> torch.Tensor:
        hat = self.hat()
        n_a, n_b, width = va.shape[0], vb.shape[0], self.h_a.k * self.h_a.s
        _, wm_a, t_a, proj_a, q_a = self._terms(va)
        ws_b, _, t_b, proj_b, q_b = self._terms(vb)
        cross = (
            wm_a.transpose(0, 1).reshape(n_a, width) @ ws_b.transpose(0, 1).reshape(n_b, width).T
        )
        cross += (proj_a @ hat.core) @ proj_b.T
        if t_a is not None:
            cross += hat.beta * t_a[:, None] * t_b[None, :]
        d = 0.5 * (q_a[:, None] + q_b[None, :]) - cross
        return d.clamp_min_(0)

    def _cost_matrix_solved(self, va: torch.Tensor, vb: torch.Tensor) -> torch.Tensor:
        """The same costs without Ĥ: with Y = V H_X, S⁻¹ = GᵀG − P small⁻¹ Pᵀ (G = D^-½ per
        block), V Ĥ V'ᵀ = V Y'ᵀ − (G Yᵀ)ᵀ (G Y'ᵀ) + (Y P) small⁻¹ (Y' P)ᵀ."""
        n_a = va.shape[0]
        v = torch.cat([va, vb])
        y = self.x.matvec(v)
        ys, t = self.x.split(y)
        g = self.inv.half(ys.transpose(1, 2))  # (K, s, m)
        g = g.transpose(0, 1).reshape(-1, g.shape[-1])  # (K·s, m)
        yp = y @ self.p
        yps = yp @ self.small_inv
        q = (v * y).sum(dim=1) - g.square().sum(dim=0) + (yps * yp).sum(dim=1)
        cross = va @ y[n_a:].T - g[:, :n_a].T @ g[:, n_a:] + yps[:n_a] @ yp[n_a:].T
        if t is not None:
            q = q - self.inv.bias_inv * t * t
            cross -= self.inv.bias_inv * t[:n_a, None] * t[None, n_a:]
        d = 0.5 * (q[:n_a, None] + q[None, n_a:]) - cross
        return d.clamp_min_(0)

    def solve(self, r: torch.Tensor) -> torch.Tensor:
        """S⁺ r for rows r (m, D)."""
        return self.inv.apply(r) - ((r @ self.p) @ self.small_inv) @ self.p.T

    def merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        delta = a - b
        return 0.5 * (a + b) + 0.5 * self.solve(self.h_a.matvec(delta) - self.h_b.matvec(delta))


@dataclass(frozen=True)
class _DenseSharing(SharingOperator):
    """The dense pseudo-inverse forms, for an S whose bias direction is (nearly) dependent."""

    h_a: torch.Tensor  # (D, D)
    h_b: torch.Tensor
    h_hat: torch.Tensor
    vecs: torch.Tensor
    inv: torch.Tensor
    pseudo_inverse: bool = True

    def cost_matrix(self, va: torch.Tensor, vb: torch.Tensor) -> torch.Tensor:
        ah = va @ self.h_hat
        d = 0.5 * ((ah * va).sum(1)[:, None] + ((vb @ self.h_hat) * vb).sum(1)[None, :])
        d -= ah @ vb.T
        return d.clamp_min_(0)

    def merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        rhs = (a - b) @ (self.h_a - self.h_b)  # symmetric
        corr = ((rhs @ self.vecs) * self.inv) @ self.vecs.T
        return 0.5 * (a + b) + 0.5 * corr


def _block_inverse(s: LayerHessian, bias_entry: torch.Tensor | None) -> _BlockInverse:
    """Cholesky per block when every block is well conditioned, else eigendecompositions."""
    bias_inv = None if bias_entry is None else 1.0 / bias_entry
    if s.s == 0:
        return _BlockInverse(s, s.blocks, None, bias_inv)
    chol, info = torch.linalg.cholesky_ex(s.blocks)
    if not bool((info != 0).any()) and well_conditioned(chol):
        return _BlockInverse(s, chol, None, bias_inv)
    lam, vecs = torch.linalg.eigh(s.blocks)
    tol = lam.amax().clamp_min(0) * s.s * torch.finfo(lam.dtype).eps
    root_inv = torch.where(lam > tol, lam.clamp_min(tol).rsqrt(), torch.zeros_like(lam))
    return _BlockInverse(s, None, (vecs, root_inv), bias_inv)


def _low_rank(h_a: LayerHessian, h_b: LayerHessian) -> _LowRankSharing | None:
    """The structured operator, or None when S is singular in a way only the dense
    pseudo-inverse handles (a low-rank direction in the blocks' null space, or Woodbury's
    small matrix singular)."""
    s = h_a.plus(h_b)
    vecs, core = s.vecs, s.core
    bias_entry = None
    if s.has_bias:
        bias_entry = s.beta
        if not float(s.beta) > 0:  # before damping: move the bias into the low-rank part
            eps = torch.ones((), dtype=s.blocks.dtype, device=s.blocks.device)
            unit = torch.zeros(s.dim, 1, dtype=vecs.dtype, device=vecs.device)
            unit[-1] = 1.0
            vecs = torch.cat([vecs, unit], dim=1)
            core = torch.block_diag(core, -eps[None, None])
            bias_entry = s.beta + eps
    inv = _block_inverse(s, bias_entry)
    pinv = inv.chol is None
    if pinv and inv.null_share(vecs.T) > _NULL_TOLERANCE:
        return None
    p = inv.apply(vecs.T).T  # (D, r')
    small = torch.linalg.inv(core) + vecs.T @ p
    small = 0.5 * (small + small.T)
    sv = torch.linalg.svdvals(small)
    if sv.numel() and not float(sv.min()) > float(sv.max()) / _MAX_SMALL_CONDITION:
        return None
    small_inv = torch.linalg.inv(small)
    x = h_a if float(h_a.trace()) <= float(h_b.trace()) else h_b
    return _LowRankSharing(h_a, h_b, x, inv, p, small_inv, pinv)


def _dense(h_a: LayerHessian, h_b: LayerHessian) -> _DenseSharing:
    da, db = h_a.dense(), h_b.dense()
    s = da + db
    lam, vecs = torch.linalg.eigh(s)
    tol = lam.amax().clamp_min(0) * s.shape[-1] * torch.finfo(s.dtype).eps
    inv = torch.where(lam > tol, 1.0 / lam, torch.zeros_like(lam))
    h_hat = da @ (vecs @ (inv[:, None] * (vecs.T @ db)))
    return _DenseSharing(da, db, 0.5 * (h_hat + h_hat.T), vecs, inv)


def sharing_operator(
    h_a: LayerHessian, h_b: LayerHessian, *, name: str = "layer"
) -> SharingOperator:
    """The `SharingOperator` for two (damped) Hessians of one layer.

    The structured form (Cholesky per block, or per-block pseudo-inverses) whenever it is
    exact; otherwise the dense D × D pseudo-inverse, for D ≤ `DENSE_PSEUDO_INVERSE_MAX_DIM`
    or K = 1. `name` labels the error for a singular blocked layout too large for that.
    """
    if (h_a.k, h_a.s, h_a.has_bias, h_a.blocks.shape) != (
        h_b.k,
        h_b.s,
        h_b.has_bias,
        h_b.blocks.shape,
    ):
        raise ValueError(
            f"Hessians must have one layout, got K={h_a.k}, s={h_a.s} and K={h_b.k}, s={h_b.s}"
        )
    op = _low_rank(h_a, h_b)
    if op is not None:
        return op
    if h_a.k == 1 or h_a.dim <= DENSE_PSEUDO_INVERSE_MAX_DIM:
        return _dense(h_a, h_b)
    raise ValueError(
        f"{name}: H_A + H_B is singular in a direction that includes the bias (an input is "
        f"constant on the calibration data), and its blocked layout is too large ({h_a.dim} > "
        f"{DENSE_PSEUDO_INVERSE_MAX_DIM}) for a dense pseudo-inverse; zip with damping > 0"
    )


def well_conditioned(chol: torch.Tensor) -> bool:
    """A Cholesky factor whose diagonal spans < 1e7 (condition number < 1e14) is trusted."""
    d = torch.diagonal(chol, dim1=-2, dim2=-1).abs()
    if d.numel() == 0:
        return True
    return bool(d.amin() > d.amax() / _MAX_DIAG_SPAN)


def average_merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The plain average ½(a + b) used by the baselines."""
    return 0.5 * (a + b)


def merge_error(
    w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, h_a: LayerHessian, h_b: LayerHessian
) -> torch.Tensor:
    """½ (w − a)ᵀ H_A (w − a) + ½ (w − b)ᵀ H_B (w − b) for each row, shape (k,): the increase
    of E_A + E_B that applying w causes under these Hessians (exact for the exact kinds and
    undamped Hessians)."""
    return 0.5 * (h_a.quad(w - a) + h_b.quad(w - b))


def squared_distance(va: torch.Tensor, vb: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² for all pairs, over the whole incoming vectors (the euclidean baseline)."""
    d = (va * va).sum(1)[:, None] + (vb * vb).sum(1)[None, :] - 2 * va @ vb.T
    return d.clamp_min_(0)
