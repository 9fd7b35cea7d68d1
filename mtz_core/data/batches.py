"""Re-iterable mini-batches over in-memory tensors.

Hessian accumulation walks the calibration set once per layer and retraining walks it once per
epoch, so the batch source must be iterable many times. A generator or a one-shot iterator would
silently yield nothing the second time; `Batches` instead rebuilds its order on every `iter()`.

Order: without shuffling, every pass yields the same batches. With shuffling, pass number `e`
(counted from 0 for each `Batches` object) uses the permutation drawn from
`numpy.random.default_rng([seed, e])`, so a run is reproducible pass by pass yet each pass differs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["Batches"]


class Batches:
    """`(x, y)` mini-batches of the first `limit` rows of `x`, `y`; `len()` is the batch count."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        seed: int = 0,
        limit: int | None = None,
        drop_last: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(
                f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}"
            )
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; they must match")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"limit must be a positive int or None, got {limit!r}")
            x, y = x[:limit], y[:limit]  # more than available: all of them
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.device = None if device is None else torch.device(device)
        self._passes = 0

    @property
    def num_samples(self) -> int:
        """Rows actually served (after `limit`; `drop_last` may leave out up to a batch)."""
        return int(self.x.shape[0])

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_samples
        order: torch.Tensor | None = None
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self._passes])
            order = torch.from_numpy(rng.permutation(n))
        self._passes += 1
        return self._generate(order, len(self))

    def _generate(
        self, order: torch.Tensor | None, count: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = self.batch_size
        for b in range(count):
            if order is None:
                xb, yb = self.x[b * bs : (b + 1) * bs], self.y[b * bs : (b + 1) * bs]
            else:
                idx = order[b * bs : (b + 1) * bs]
                xb, yb = self.x[idx], self.y[idx]
            if self.device is not None:
                xb, yb = xb.to(self.device), yb.to(self.device)
            yield xb, yb

    def __repr__(self) -> str:
        return (
            f"Batches(samples={self.num_samples}, batch_size={self.batch_size}, "
            f"batches={len(self)}, shuffle={self.shuffle})"
        )
