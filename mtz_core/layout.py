"""How a layer's weights map to the incoming vectors the cost algebra works on, and back.

A vector is one row of length D = K·s + 1: K blocks of s weights, then the bias once (no bias
entry for a layer without bias), matching `hessian.LayerHessian`:

=====================  ===========================================  ======================
layer / Hessian kind   block p holds                                K × s
=====================  ===========================================  ======================
linear, exact          all S·P shared-input weights                 1 × (S·P)
linear, block          weights from the S units at position p       P × S
conv, exact            the k·k·S kernel (channel, row, column)      1 × (S·k²)
conv, channel          the S weights at kernel position p           k² × S
=====================  ===========================================  ======================

(S: the layer's shared input units.) Going back is exact: the merged vector's bias is the bias
applied, whatever the layout.
"""

from __future__ import annotations

import torch

from .architecture import LayerSpec

__all__ = ["incoming_vectors", "vectors_to_weights"]


def incoming_vectors(
    weight: torch.Tensor, bias: torch.Tensor | None, spec: LayerSpec, shared: int, kind: str
) -> torch.Tensor:
    """Vectors (n, D) from a layer's weights restricted to its `shared` input units.

    `weight` is the layer's full per-task weight whose first input units are the shared ones;
    `bias` is None for a layer without bias.
    """
    n = weight.shape[0]
    if spec.kind == "conv":
        w = weight[:, :shared]
        if kind == "channel":  # (n, S, kh, kw) -> blocks by kernel position
            w = w.reshape(n, shared, spec.kernel_positions).transpose(1, 2)
    else:
        w = weight[:, : shared * spec.positions]
        if kind == "block":  # columns are channel-major: (n, S, P) -> blocks by position
            w = w.reshape(n, shared, spec.positions).transpose(1, 2)
    per = spec.kernel_positions if spec.kind == "conv" else spec.positions
    flat = w.reshape(n, shared * per)
    if bias is None:
        return flat
    return torch.cat([flat, bias.reshape(n, 1).to(flat.dtype)], dim=1)


def vectors_to_weights(
    vectors: torch.Tensor, spec: LayerSpec, shared: int, kind: str, has_bias: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The shared weight block (k, S·P) or (k, S, kh, kw) and bias (k,) (None without bias)."""
    k = vectors.shape[0]
    w = vectors[:, :-1] if has_bias else vectors
    b = vectors[:, -1] if has_bias else None
    if spec.kind == "conv":
        kh, kw = spec.kernel_size
        if kind == "channel":
            return w.reshape(k, kh * kw, shared).transpose(1, 2).reshape(k, shared, kh, kw), b
        return w.reshape(k, shared, kh, kw), b
    if kind == "block":
        width = shared * spec.positions
        return w.reshape(k, spec.positions, shared).transpose(1, 2).reshape(k, width), b
    return w.reshape(k, shared * spec.positions), b
