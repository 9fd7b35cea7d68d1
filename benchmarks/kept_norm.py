"""Costs for a layer whose batch norm each task keeps (`mtz_core.scaled`) against the plain
operator on the same Hessians.

A conv-like layer with n output channels per model and D = C_in·9 incoming weights (3×3 kernels,
no bias), the Hessians second moments of 2·D random rows plus damping. "plain" is
`sharing_operator` + `cost_matrix` (one matrix product: Ĥ does not depend on the pair); "kept
norm" is `scaled_sharing` + `cost_matrix` with random per-unit scales (the weight of each
coordinate depends on both units' scales, so it costs n²·D element-wise operations instead of a
product). The ratio kept / plain, measured interleaved in one run, is what keeping the norm costs.

Run: ``python -m benchmarks.kept_norm [--sizes 32 64 128 256] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import torch

from mtz_core.costs import sharing_operator
from mtz_core.hessian import LayerHessian
from mtz_core.scaled import centred, scaled_sharing

from ._common import markdown_table

SIZES = (32, 64, 128, 256)
SMOKE_ARGV = ["--sizes", "16", "32", "--repeats", "1"]


def _problem(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    d = n * 9  # C_in = n, 3×3 kernels

    def hessian() -> LayerHessian:
        x = torch.randn(2 * d, d, generator=gen, dtype=torch.float64)
        mom = torch.zeros(1, d + 1, d + 1, dtype=torch.float64)
        mom[0, :d, :d] = x.T @ x / x.shape[0]
        mom[0, :d, d] = mom[0, d, :d] = x.mean(0)
        mom[0, d, d] = 1
        return centred(LayerHessian.from_moment(mom, 1, False, "exact").damped(0.1)[0])

    va = torch.randn(n, d, generator=gen, dtype=torch.float64)
    vb = torch.randn(n, d, generator=gen, dtype=torch.float64)
    sa = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    sb = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    return hessian(), hessian(), va, vb, sa, sb


def _plain(h_a, h_b, va, vb, sa, sb) -> float:
    t0 = time.perf_counter()
    sharing_operator(h_a, h_b).cost_matrix(va, vb)
    return time.perf_counter() - t0


def _kept(h_a, h_b, va, vb, sa, sb) -> float:
    t0 = time.perf_counter()
    scaled_sharing(h_a, h_b).cost_matrix(va, vb, sa, sb)
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> str:
    rows = []
    for n in args.sizes:
        problem = _problem(n, args.seed)
        plain, kept = [], []
        for i in range(args.repeats + 1):  # round 0 warms up; interleaved against load changes
            gc.collect()
            p = _plain(*problem)
            gc.collect()
            k = _kept(*problem)
            if i:
                plain.append(p)
                kept.append(k)
        p, k = float(np.median(plain)), float(np.median(kept))
        rows.append([n, n * 9, p, k, k / p])
    header = ["n", "D", "plain (s)", "kept norm (s)", "kept / plain"]
    return (
        markdown_table(header, rows)
        + f"\n\nMedians of {args.repeats} interleaved repeats after one warm-up; float64."
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> None:
    print(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
