"""One layer's analysis: Hessians, incoming vectors, and the algebra per damping factor.

A `LayerAnalysis` is computed once per layer and network state and reused: re-stepping a layer
with another share, previewing its cost matrix, and damping="auto" (which tries several factors)
all read the same Hessians. Choosing pairs and merging them for a method live here too, so the
session only orchestrates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .batches import all_finite
from .config import AUTO_DAMPING_GRID, ZipConfig
from .costs import (
    SharingOperator,
    average_merge,
    cost_matrix,
    hessian_merge,
    merge_error,
    sharing_operator,
    squared_distance,
)
from .hessian import AUTO_EXACT_MAX_DIM, LayerHessian, damp
from .matching import greedy_pairs, optimal_pairs
from .zipped import ZippedLayer

__all__ = ["DampingVariant", "LayerAnalysis", "hessian_kind"]


def hessian_kind(layer: ZippedLayer, config: ZipConfig) -> str:
    """Which Hessian a layer gets: the conv option, exact for plain linear layers, and for a
    linear layer after a flatten exact below `AUTO_EXACT_MAX_DIM` (auto) or as asked."""
    spec, s = layer.spec, layer.sizes.in_shared
    if spec.kind == "conv":
        return config.hessian
    if spec.positions == 1:
        return "exact"
    if config.flatten_hessian == "auto":
        return "exact" if s * spec.positions + 1 <= AUTO_EXACT_MAX_DIM else "block"
    return config.flatten_hessian


@dataclass
class DampingVariant:
    """The algebra for one damping factor: damped Hessians, Ĥ and the cost matrix."""

    damping: float
    damped_a: torch.Tensor
    damped_b: torch.Tensor
    lambdas: tuple[float, float]
    op: SharingOperator
    cost: torch.Tensor


@dataclass
class LayerAnalysis:
    """Hessians (and, for damping="auto", held-out second moments) and incoming vectors."""

    kind: str
    h_a: LayerHessian
    h_b: LayerHessian
    held: tuple[torch.Tensor, torch.Tensor] | None
    va: torch.Tensor
    vb: torch.Tensor
    seconds: dict[str, float]
    variants: dict[float, DampingVariant] = field(default_factory=dict)

    @property
    def full_share(self) -> int:
        return min(len(self.va), len(self.vb))

    def variant(self, damping: float) -> DampingVariant:
        if damping in self.variants:
            return self.variants[damping]
        damped_a, lam_a = damp(self.h_a.blocks, damping)
        damped_b, lam_b = damp(self.h_b.blocks, damping)
        op = sharing_operator(damped_a, damped_b)
        cost = cost_matrix(self.va, self.vb, op.h_hat)
        if not all_finite(cost):
            raise ValueError("the cost matrix has NaN or Inf entries (activations overflowed?)")
        lambdas = (float(lam_a.mean()), float(lam_b.mean()))
        self.variants[damping] = DampingVariant(damping, damped_a, damped_b, lambdas, op, cost)
        return self.variants[damping]

    def choose(
        self, variant: DampingVariant, k: int, config: ZipConfig, index: int
    ) -> torch.Tensor:
        """k pairs by the method: MTZ costs, incoming-vector distance, or seeded random."""
        solver = greedy_pairs if config.matching == "greedy" else optimal_pairs
        if config.method in ("mtz", "mtz-avg"):
            return solver(variant.cost, k)
        if config.method == "euclidean":
            return solver(squared_distance(self.va, self.vb), k)
        n_a, n_b = variant.cost.shape
        rng = np.random.default_rng([config.seed, index])
        rows = rng.choice(n_a, size=k, replace=False)
        cols = rng.choice(n_b, size=k, replace=False)
        return torch.as_tensor(np.stack([rows, cols], axis=1), dtype=torch.long)

    def merge(
        self, variant: DampingVariant, pairs: torch.Tensor, method: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Merged vectors for the pairs (Hessian-weighted for mtz, plain average otherwise) and
        each merge's predicted error."""
        a, b = self.va[pairs[:, 0]], self.vb[pairs[:, 1]]
        merged = hessian_merge(a, b, variant.op) if method == "mtz" else average_merge(a, b)
        return merged, merge_error(merged, a, b, variant.damped_a, variant.damped_b)

    def select_damping(
        self,
        k: int,
        config: ZipConfig,
        index: int,
        pairs: torch.Tensor | None = None,
        check: Callable[[], None] | None = None,
    ) -> tuple[float, dict[float, float]]:
        """damping="auto": per factor of the grid, match, merge, and score the merge by its
        error on the held-out samples; the best factor (ties: the stronger) and all scores."""
        if self.held is None:
            raise ValueError("damping selection needs held-out second moments")
        held_a, held_b = self.held
        scores: dict[float, float] = {}
        for damping in AUTO_DAMPING_GRID:
            if check is not None:
                check()
            variant = self.variant(damping)
            chosen = pairs if pairs is not None else self.choose(variant, k, config, index)
            chosen = chosen.to(self.va.device)
            merged, _ = self.merge(variant, chosen, config.method)
            a, b = self.va[chosen[:, 0]], self.vb[chosen[:, 1]]
            scores[damping] = float(merge_error(merged, a, b, held_a, held_b).sum())
        best = min(scores, key=lambda d: (scores[d], -d))
        return best, scores
