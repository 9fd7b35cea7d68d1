"""`ZipSession` on two torchvision ResNets at 32×32, share 1.0 through every channel group:
seconds per stage against a floor measured in the same run, and a ResNet-50 table.

Models: `mtz_core.models.resnet.torchvision_resnet(name, 10, width=w)` (torchvision's
architecture; width 1 is torchvision's own model), seeds 0 and 1 for A and B, in eval mode with
**non-trivial batch norms**: every norm gets a random affine (γ ∈ [0.5, 1.5), β ~ 0.2·N(0, 1))
and running statistics estimated on 64 random images of its own (one train-mode pass with a
cumulative average), as a trained model's would be.

Calibration data: ``--images`` (default 256) **random normal 3×32×32 images per task**, different
for A and B (seeds 10, 20), in batches of ``--batch-size`` (64). Random images cost what real
ones cost: the work depends on the shapes only.

Part (a), ResNet-18: one `ZipSession(..., batch_norm=…)` per batch-norm mode (``keep`` first, the
realistic case: every task keeps its own norm; then ``fold``), `session.step(1.0)` for every
group. Total = wall time from the constructor (tracing, checks, building the zipped net) to the
last step. Stage seconds come from the records (`record.seconds`, summed over the group's
members); "re-merge" is the time inside `merge` spent re-merging a stream's already-shared rows
over newly shared inputs (timed by wrapping the session's `_remerge`; "–" if that method is
gone); "merge" is the rest of that stage (applied errors, building the zipped group).

Part (b), ResNet-50: the same zip at each width of ``--resnet50-widths`` (default 0.25, 0.5) in
each mode of ``--resnet50-batch-norm`` (default fold).

The **floor** is measured in the same run, before and after each zip (the ratio uses their mean):
the least work any exact-Hessian MTZ zip of the pair does, on tensors of the real shapes —

* forward: one eval-mode float32 forward pass of each model over its calibration data;
* Hessians: for every convolution, for each task, the unfolded k·k·C_in patches of the layer's
  input (random, of its real shape) and the float64 product X̄ᵀX̄;
* algebra: for every convolution (n outputs, D = k·k·C_in + 1), the cross term A Ĥ Bᵀ of the
  costs with Ĥ = H_B − H_B S⁻¹ H_B, S = H_A + H_B + λI, done the cheap way when n < D: one
  Cholesky factor of S, ``H_B @ [Aᵀ Bᵀ]``, one triangular solve with those 2n columns and two
  n × D × n products (D³/3 + about 6·n·D² flops; no Ĥ formed, no diagonal terms, no matching,
  no merge).

It counts each layer once: a re-merge computes a layer's Hessians and algebra a second time, and
kept norms make the costs n²·D element-wise work instead of a product; both show in the ratio.
Nothing asserts on a time.

Run: ``python -m benchmarks.resnet [--width 1] [--images 256] [--resnet50-widths 0.25 0.5]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import mtz_core
from mtz_core.models.resnet import torchvision_resnet

from ._common import fmt, gemm_probe, machine_line, markdown_table
from .vgg import make_data

SMOKE_ARGV = [
    *("--width", "0.125", "--images", "8", "--batch-size", "8"),
    *("--resnet50-widths", "0.0625"),
]
STAGES = ("hessian", "costs", "matching", "merge")
STATS_IMAGES = 64


# -- models and data ------------------------------------------------------------------------
def build_resnet(name: str, width: float, seed: int) -> nn.Module:
    """torchvision's `name` with 10 classes at `width`, with trained-looking batch norms."""
    torch.manual_seed(seed)
    model = torchvision_resnet(name, 10, width=width)
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the statistics pass
        model.train()
        model(torch.randn(STATS_IMAGES, 3, 32, 32, generator=gen))
    return model.eval()


def conv_inputs(model: nn.Module) -> list[tuple[nn.Conv2d, tuple[int, ...]]]:
    """Every convolution with the shape (C, H, W) of one sample's input to it."""
    shapes: list[tuple[nn.Conv2d, tuple[int, ...]]] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, a: shapes.append((mod, tuple(a[0].shape[1:]))))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))
    finally:
        for h in hooks:
            h.remove()
    return shapes


# -- the floor ------------------------------------------------------------------------------
def _hessian(conv: nn.Conv2d, shape: tuple[int, ...], samples: int, gen) -> torch.Tensor:
    x = torch.randn(samples, *shape, generator=gen)
    patches = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    rows = patches.transpose(1, 2).reshape(-1, patches.shape[1]).to(torch.float64)
    rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return rows.T @ rows / rows.shape[0]


def floor_seconds(model_a, model_b, data_a, data_b, convs, samples: int) -> dict[str, float]:
    """One measurement of the floor (see the module docstring), by part."""
    gen = torch.Generator().manual_seed(7)
    out = {"forward": 0.0, "hessians": 0.0, "algebra": 0.0}
    t0 = time.perf_counter()
    with torch.no_grad():
        for m, data in ((model_a, data_a), (model_b, data_b)):
            for x in data:
                m(x)
    out["forward"] = time.perf_counter() - t0
    for conv, shape in convs:
        t0 = time.perf_counter()
        h_a = _hessian(conv, shape, samples, gen)
        h_b = _hessian(conv, shape, samples, gen)
        t1 = time.perf_counter()
        d, n = h_a.shape[0], conv.out_channels
        lam = float(torch.diagonal(h_a).mean() + torch.diagonal(h_b).mean())
        eye = torch.eye(d, dtype=torch.float64)
        ab = torch.randn(2 * n, d, generator=gen, dtype=torch.float64)  # [A; B]
        t2 = time.perf_counter()
        chol = torch.linalg.cholesky(h_a + h_b + lam * eye)
        hv = h_b @ ab.T  # H_B [Aᵀ Bᵀ]
        y = torch.linalg.solve_triangular(chol, hv, upper=False)
        ab[:n] @ hv[:, n:] - y[:, :n].T @ y[:, n:]  # A Ĥ Bᵀ, Ĥ = H_B − H_B S⁻¹ H_B
        t3 = time.perf_counter()
        out["hessians"] += t1 - t0
        out["algebra"] += t3 - t2
        del h_a, h_b, chol, hv, y
    out["total"] = out["forward"] + out["hessians"] + out["algebra"]
    return out


def measure_floor(args, pair, repeats: int) -> dict[str, float]:
    """The fastest of `repeats` floor measurements (per part: the parts of that fastest one)."""
    runs = [floor_seconds(*pair, args.images) for _ in range(max(1, repeats))]
    return min(runs, key=lambda r: r["total"])


# -- the zip --------------------------------------------------------------------------------
def zip_pair(model_a, model_b, data_a, data_b, batch_norm: str, args, log: Callable) -> dict:
    """Zip every group at `args.share`; total seconds, per-group rows and the result."""
    t0 = time.perf_counter()
    session = mtz_core.ZipSession(
        model_a, model_b, data_a, data_b, batch_norm=batch_norm, damping=args.damping
    )
    setup = time.perf_counter() - t0
    remerge = [0.0]
    timed = hasattr(session, "_remerge")
    if timed:
        inner = session._remerge

        def _remerge(*a, **kw):
            start = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                remerge[0] += time.perf_counter() - start

        session._remerge = _remerge
    groups = []
    while not session.done:
        remerge[0] = 0.0
        start = time.perf_counter()
        rec = session.step(args.share)
        wall = time.perf_counter() - start
        secs = {s: float(rec.seconds.get(s, 0.0)) for s in STAGES}
        re = remerge[0] if timed else None
        if re is not None:
            secs["merge"] -= re
        groups.append({"record": rec, "wall": wall, "stages": secs, "remerge": re})
        log(f"    {batch_norm} {rec.name}: {wall:.2f} s")
    total = time.perf_counter() - t0
    result = session.result()
    return {
        "total": total,
        "setup": setup,
        "groups": groups,
        "params": result.params,
        "timed_remerge": timed,
    }


def _sums(run: dict) -> dict[str, float | None]:
    out: dict[str, float | None] = {s: 0.0 for s in STAGES}
    out["remerge"] = 0.0 if run["timed_remerge"] else None
    for g in run["groups"]:
        for s in STAGES:
            out[s] += g["stages"][s]
        if g["remerge"] is not None:
            out["remerge"] += g["remerge"]
    return out


def _pair(name: str, width: float, args) -> tuple:
    model_a = build_resnet(name, width, args.seed)
    model_b = build_resnet(name, width, args.seed + 1)
    data_a = make_data(args.images, args.batch_size, args.seed + 10)
    data_b = make_data(args.images, args.batch_size, args.seed + 20)
    return model_a, model_b, data_a, data_b, conv_inputs(model_a)


def _summary_row(label: str, run: dict, floor: float) -> list:
    sums = _sums(run)
    staged = sum(v for v in sums.values() if v is not None)
    return [
        label,
        len(run["groups"]),
        run["total"],
        *(sums[s] for s in STAGES),
        sums["remerge"],
        run["total"] - staged,
        floor,
        run["total"] / floor,
    ]


# -- the report -----------------------------------------------------------------------------
def _resnet18(args, log: Callable) -> dict | None:
    """Part (a): the floor, then each mode's zip followed by the floor again."""
    modes = list(dict.fromkeys(args.batch_norm))
    if not modes:
        return None
    pair = _pair("resnet18", args.width, args)
    n_params = sum(p.numel() for p in pair[0].parameters())
    floors = [measure_floor(args, pair, args.floor_repeats)]
    log(f"  floor: {floors[-1]['total']:.2f} s")
    runs = {}
    for mode in modes:
        runs[mode] = zip_pair(*pair[:4], mode, args, log)
        floors.append(measure_floor(args, pair, args.floor_repeats))
        log(f"  {mode}: {runs[mode]['total']:.2f} s; floor {floors[-1]['total']:.2f} s")
    return {"modes": modes, "runs": runs, "floors": floors, "params": n_params}


def _resnet50(args, log: Callable) -> list[tuple]:
    """Part (b): per width, the floor, then each mode's zip followed by the floor again."""
    out = []
    for width in args.resnet50_widths:
        pair = _pair("resnet50", width, args)
        n_params = sum(p.numel() for p in pair[0].parameters())
        floors = [measure_floor(args, pair, args.floor_repeats)["total"]]
        for mode in dict.fromkeys(args.resnet50_batch_norm):
            run_ = zip_pair(*pair[:4], mode, args, log)
            floors.append(measure_floor(args, pair, args.floor_repeats)["total"])
            log(f"  resnet50 x{width:g} {mode}: {run_['total']:.2f} s")
            out.append((width, mode, n_params, run_, 0.5 * (floors[-2] + floors[-1])))
    return out


def _report18(args, part: dict, probes: tuple[float, float]) -> list[str]:
    modes, runs, floors = part["modes"], part["runs"], part["floors"]
    width_txt = "" if args.width == 1 else f" at width {args.width:g}"
    lines = [
        f"#### ZipSession on two torchvision resnet18{width_txt} at 32×32, "
        f"{args.images} random images per task, share = {args.share:g}",
        "",
        f"- parameters per model {part['params']:,}; damping {args.damping:g}; batches of "
        f"{args.batch_size}",
    ]
    for mode in modes:
        r = runs[mode]
        p = r["params"]
        lines.append(
            f"- batch_norm={mode}: **{fmt(r['total'])} s** in all ({len(r['groups'])} groups; "
            f"constructor {fmt(r['setup'])} s); zipped {p['zipped']:,} parameters "
            f"(saved {p['a'] + p['b'] - p['zipped']:,} of {p['a'] + p['b']:,})"
        )
    fl = floors[0]
    lines += [
        f"- floor (first measurement): forward {fmt(fl['forward'])} s + Hessians "
        f"{fmt(fl['hessians'])} s + algebra {fmt(fl['algebra'])} s = {fmt(fl['total'])} s; "
        f"all measurements in order: {', '.join(fmt(f['total']) for f in floors)} s",
        "",
    ]
    header = [
        "zip",
        "groups",
        "total (s)",
        *(f"{s} (s)" for s in STAGES),
        "re-merge (s)",
        "other (s)",
        "floor (s)",
        "total / floor",
    ]
    rows = [
        _summary_row(
            f"resnet18 batch_norm={m}",
            runs[m],
            0.5 * (floors[i]["total"] + floors[i + 1]["total"]),
        )
        for i, m in enumerate(modes)
    ]
    lines += [markdown_table(header, rows), ""]

    # per group: the first mode in full, the others' step times beside it
    first = modes[0]
    g_header = [
        "group",
        "members",
        "n",
        "s",
        "re-merged",
        *(f"{first}: {s} (s)" for s in STAGES),
        f"{first}: re-merge (s)",
        f"{first}: step (s)",
        *(f"{m}: step (s)" for m in modes[1:]),
    ]
    g_rows = []
    for i, g in enumerate(runs[first]["groups"]):
        rec = g["record"]
        g_rows.append(
            [
                rec.name,
                len(rec.members) or 1,
                rec.n_a,
                rec.shared_inputs,
                ", ".join(rec.remerged) or "–",
                *(g["stages"][s] for s in STAGES),
                g["remerge"],
                g["wall"],
                *(runs[m]["groups"][i]["wall"] for m in modes[1:]),
            ]
        )
    lines += [
        markdown_table(g_header, g_rows),
        "",
        "n = units of the group's stream, s = its shared inputs when zipped; merge excludes the "
        "re-merge; other = constructor + everything outside the stages. floor = mean of the "
        "measurements before and after the zip (forward passes, every conv's two Hessians, the "
        "costs' cross term via one Cholesky factor).",
    ]
    if args.width == 1 and args.share == 1 and args.images >= 256:
        for mode in modes:
            t = runs[mode]["total"]
            lines.append(
                f"- Target resnet18 pair at share 1.0 under 60 s on this machine "
                f"(batch_norm={mode}): {'met' if t < 60 else 'NOT met'} ({fmt(t)} s at "
                f"{probes[0]:.0f}–{probes[1]:.0f} GFLOP/s)"
            )
    return lines


def _report50(args, r50: list[tuple]) -> list[str]:
    header = [
        "width",
        "batch_norm",
        "parameters / model",
        "groups",
        "zipped parameters",
        "total (s)",
        "s / group",
        *(f"{s} (s)" for s in STAGES),
        "re-merge (s)",
        "floor (s)",
        "total / floor",
    ]
    rows = []
    for width, mode, n_params, run_, floor in r50:
        sums = _sums(run_)
        n_groups = len(run_["groups"])
        rows.append(
            [
                f"{width:g}",
                mode,
                n_params,
                n_groups,
                run_["params"]["zipped"],
                run_["total"],
                run_["total"] / n_groups,
                *(sums[s] for s in STAGES),
                sums["remerge"],
                floor,
                run_["total"] / floor,
            ]
        )
    return [
        f"#### ZipSession on two torchvision resnet50 at 32×32, {args.images} random images "
        f"per task, share = {args.share:g}",
        "",
        markdown_table(header, rows),
        "",
        "floor = mean of the measurements before and after each zip (as for resnet18).",
    ]


def run(args: argparse.Namespace) -> str:
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.verbose else (lambda m: 0)
    probe_start = gemm_probe()
    part18 = _resnet18(args, log)
    part50 = _resnet50(args, log)
    probes = (probe_start, gemm_probe())
    sections = []
    if part18 is not None:
        sections.append("\n".join(_report18(args, part18, probes)))
    if part50:
        sections.append("\n".join(_report50(args, part50)))
    machine = (
        f"Machine: {machine_line()}. One zip per mode, no warm-up; models built and batch-norm "
        f"statistics estimated before timing. float64 GEMM probe (1024²): {probes[0]:.0f} "
        f"GFLOP/s before, {probes[1]:.0f} after (the whole script)."
    )
    return "\n\n".join([machine, *sections])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=1.0, help="resnet18's width multiplier")
    p.add_argument("--images", type=int, default=256, help="calibration images per task")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--share", type=float, default=1.0)
    p.add_argument("--damping", type=float, default=mtz_core.ZipConfig.default_damping())
    p.add_argument(
        "--batch-norm",
        nargs="*",
        choices=["keep", "fold"],
        default=["keep", "fold"],
        help="resnet18's modes, in order (the per-group table details the first); none: skip",
    )
    p.add_argument(
        "--resnet50-widths",
        type=float,
        nargs="*",
        default=[0.25, 0.5],
        help="resnet50 widths for table (b); none to skip it",
    )
    p.add_argument(
        "--resnet50-batch-norm",
        nargs="+",
        choices=["keep", "fold"],
        default=["fold"],
        help="resnet50's modes (each width zipped in each)",
    )
    p.add_argument(
        "--floor-repeats", type=int, default=1, help="floor measurements per point (fastest)"
    )
    p.add_argument("--verbose", action="store_true", help="log each group's time to stderr")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> None:
    print(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
