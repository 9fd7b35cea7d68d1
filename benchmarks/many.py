"""`zip_many` on three MLPs: units shared by all three (the default) against units shared by
subsets of the tasks (`subsets=True`, the paper's scheme), timed interleaved in one process.

Models: three independently initialised ``nn.Sequential(nn.Linear(w - 1, w), nn.ReLU(),
nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10))`` (default w = 512: two hidden layers of n = 512
units, D = 512 entries with the bias), 4 batches of 256 random inputs per task, damping 0.1.
The subsets scheme solves one system per pool and stage and forms each task's exact Hessian over
all its inputs, where the default forms the shared inputs' only: the ratio says what the
paper's scheme costs on top.

Run: ``python -m benchmarks.many [--width 512] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import gc

import numpy as np
import torch
from torch import nn

import mtz_core

from ._common import Timer, gemm_probe, machine_line, markdown_table

SMOKE_ARGV = ["--width", "64", "--repeats", "1"]
STAGES = ("hessian", "matching", "merge")


def make_models(width: int, seed: int = 0) -> list[nn.Module]:
    def build(s: int) -> nn.Module:
        torch.manual_seed(s)
        return nn.Sequential(
            nn.Linear(width - 1, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, 10),
        ).eval()  # fmt: skip

    return [build(seed + t) for t in range(3)]


def make_data(width: int, batches: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, width - 1, generator=gen) for _ in range(batches)]


def once(models, data, share: float, subsets: bool) -> dict[str, float]:
    with Timer() as t:
        result = mtz_core.zip_many(models, data, share=share, damping=0.1, subsets=subsets)
    out = {s: sum(float(r.seconds.get(s, 0.0)) for r in result.layers) for s in STAGES}
    out["total"] = t.seconds
    out["saved"] = result.saved_fraction
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--shares", type=float, nargs="+", default=[0.5, 1.0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace) -> str:
    probe = gemm_probe()
    models = make_models(args.width, args.seed)
    data = [
        make_data(args.width, args.batches, args.batch_size, args.seed + 10 * t) for t in (1, 2, 3)
    ]
    rows = []
    for share in args.shares:
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for i in range(args.repeats + 1):  # round 0 is the warm-up
            for subsets in (False, True):
                gc.collect()
                r = once(models, data, share, subsets)
                if i > 0:
                    runs[subsets].append(r)
        med = {s: {k: float(np.median([r[k] for r in v])) for k in v[0]} for s, v in runs.items()}
        for subsets in (False, True):
            m = med[subsets]
            rows.append(
                [
                    f"{share:g}",
                    "subsets" if subsets else "all three (default)",
                    f"{100 * m['saved']:.2f}",
                    m["total"],
                    *(m[s] for s in STAGES),
                    m["total"] / med[False]["total"],
                ]
            )
    header = [
        "share",
        "scheme",
        "saved %",
        "zip_many total (s)",
        *(f"{s} (s)" for s in STAGES),
        "total / default's",
    ]
    return "\n".join(
        [
            f"#### zip_many on three MLPs of width {args.width}, "
            f"{args.batches * args.batch_size} samples per task",
            "",
            f"Machine: {machine_line()}. Medians of {args.repeats} runs after a warm-up, the two "
            f"schemes interleaved; float64 GEMM probe (1024²): {probe:.0f} GFLOP/s.",
            "",
            markdown_table(header, rows),
        ]
    )


if __name__ == "__main__":
    print(run(build_parser().parse_args()))
