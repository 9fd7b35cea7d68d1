"""How a layer's weights map to the incoming vectors the cost algebra works on, and back.

Vectors are (n, B, D): B blocks of D entries with the bias last in each block.

=====================  ===========================================  ======================
layer / Hessian kind   block b holds                                B × D
=====================  ===========================================  ======================
linear, exact          all s·P shared-input weights                 1 × (s·P + 1)
linear, block          weights from the s units at position b       P × (s + 1)
conv, exact            the k·k·s kernel (channel, row, column)      1 × (s·k² + 1)
conv, channel          the s weights at kernel position b           k² × (s + 1)
=====================  ===========================================  ======================

In the blocked layouts the bias sits in every block, as the method page's channel approximation
does; going back, the merged bias is the mean of the blocks' biases.
"""

from __future__ import annotations

import torch

from .architecture import LayerSpec

__all__ = ["incoming_vectors", "vectors_to_weights"]


def incoming_vectors(
    weight: torch.Tensor, bias: torch.Tensor, spec: LayerSpec, shared: int, kind: str
) -> torch.Tensor:
    """Vectors (n, B, D) from a layer's weights restricted to its `shared` input units.

    `weight` is the layer's full per-task weight whose first input units are the shared ones.
    """
    n = weight.shape[0]
    if spec.kind == "conv":
        w = weight[:, :shared]
        if kind == "exact":
            blocks = w.reshape(n, 1, -1)
        else:  # channel
            blocks = w.reshape(n, shared, -1).transpose(1, 2)
    else:
        p = spec.positions
        w = weight[:, : shared * p]
        if kind == "exact":
            blocks = w.reshape(n, 1, -1)
        else:  # block
            blocks = w.reshape(n, shared, p).transpose(1, 2)
    b = bias.reshape(n, 1, 1).expand(n, blocks.shape[1], 1)
    return torch.cat([blocks, b.to(blocks.dtype)], dim=2)


def vectors_to_weights(
    vectors: torch.Tensor, spec: LayerSpec, shared: int, kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared weight block (k, s·P) or (k, s, kh, kw) and bias (k,) from merged vectors."""
    k = vectors.shape[0]
    w, b = vectors[:, :, :-1], vectors[:, :, -1].mean(dim=1)
    if spec.kind == "conv":
        kh, kw = spec.kernel_size
        if kind == "exact":
            return w.reshape(k, shared, kh, kw), b
        return w.transpose(1, 2).reshape(k, shared, kh, kw), b
    if kind == "exact":
        return w.reshape(k, shared * spec.positions), b
    return w.transpose(1, 2).reshape(k, shared * spec.positions), b
