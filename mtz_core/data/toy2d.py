"""Generated 2-D classification datasets: moons, circles, spirals, xor, blobs.

Two-dimensional tasks are where zipping can be *seen*: the explorer draws decision boundaries of
the two original networks and of the zipped one. They are generated here with a seeded
`numpy.random.Generator` (no scikit-learn needed), so any sample count is available and the same
seed always gives the same points.

Every generator returns exactly balanced classes (counts differ by at most one), points at roughly
unit scale (no normalisation is applied later), and rows in a random order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["generate_points", "POINT_GENERATORS", "balanced_counts"]


def balanced_counts(n: int, k: int) -> list[int]:
    """`n` split into `k` class counts differing by at most one (the first classes get extra)."""
    if k < 1 or n < k:
        raise ValueError(f"need at least one point per class: n={n}, classes={k}")
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _finish(parts: list[np.ndarray], rng: np.random.Generator, noise: float):
    x = np.concatenate(parts).astype(np.float64)
    y = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)])
    if noise > 0:
        x = x + rng.normal(0.0, noise, size=x.shape)
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order]


def make_moons(n: int, rng: np.random.Generator, noise: float = 0.1):
    """Two half circles (as scikit-learn's make_moons), shifted so their centre is the origin."""
    n0, n1 = balanced_counts(n, 2)
    t0, t1 = rng.uniform(0, np.pi, n0), rng.uniform(0, np.pi, n1)
    upper = np.stack([np.cos(t0), np.sin(t0)], 1)
    lower = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)
    shift = np.array([0.5, 0.25])
    return _finish([upper - shift, lower - shift], rng, noise)


def make_circles(n: int, rng: np.random.Generator, noise: float = 0.05, factor: float = 0.5):
    """Outer unit circle (class 0) around an inner circle of radius `factor` (class 1)."""
    n0, n1 = balanced_counts(n, 2)
    t0, t1 = rng.uniform(0, 2 * np.pi, n0), rng.uniform(0, 2 * np.pi, n1)
    outer = np.stack([np.cos(t0), np.sin(t0)], 1)
    inner = factor * np.stack([np.cos(t1), np.sin(t1)], 1)
    return _finish([outer, inner], rng, noise)


def make_spirals(
    n: int, rng: np.random.Generator, noise: float = 0.05, arms: int = 2, turns: float = 1.0
):
    """`arms` interleaved Archimedean spirals of radius up to 1, arm j rotated by 2*pi*j/arms."""
    parts = []
    for j, count in enumerate(balanced_counts(n, arms)):
        r = rng.uniform(0.05, 1.0, count)
        theta = 2 * np.pi * (turns * r + j / arms)
        parts.append(np.stack([r * np.cos(theta), r * np.sin(theta)], 1))
    return _finish(parts, rng, noise)


def make_xor(n: int, rng: np.random.Generator, noise: float = 0.1):
    """Points uniform in the four unit quadrants; class 0 = same-sign quadrants, 1 = opposite."""
    parts = []
    for cls, count in enumerate(balanced_counts(n, 2)):
        mag = rng.uniform(0.05, 1.0, size=(count, 2))
        s = rng.choice([-1.0, 1.0], size=count)
        signs = np.stack([s, s if cls == 0 else -s], 1)
        parts.append(mag * signs)
    return _finish(parts, rng, noise)


def make_blobs(n: int, rng: np.random.Generator, centers: int = 3, std: float = 0.5):
    """Isotropic Gaussian blobs with centres evenly spaced on a circle of radius 2."""
    parts = []
    for j, count in enumerate(balanced_counts(n, centers)):
        angle = 2 * np.pi * j / centers
        centre = 2.0 * np.array([np.cos(angle), np.sin(angle)])
        parts.append(centre + rng.normal(0.0, std, size=(count, 2)))
    return _finish(parts, rng, 0.0)


POINT_GENERATORS = {
    "moons": make_moons,
    "circles": make_circles,
    "spirals": make_spirals,
    "xor": make_xor,
    "blobs": make_blobs,
}


def generate_points(name: str, seed: int, **params) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (n, 2), y int64 (n,)) for dataset `name`; `params` as in `catalog.DATASETS`."""
    if name not in POINT_GENERATORS:
        raise ValueError(f"unknown 2-D dataset {name!r}; known: {', '.join(POINT_GENERATORS)}")
    params = dict(params)
    n = int(params.pop("n"))
    rng = np.random.default_rng(seed)
    return POINT_GENERATORS[name](n, rng, **params)
