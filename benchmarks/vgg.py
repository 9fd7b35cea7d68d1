"""`zip_models` on two torchvision VGG networks at 32×32: total wall time and a per-layer table.

Default: two ``vgg11_bn(weights=None, num_classes=10)`` (seeds 0 and 1, ``.eval()``), 32 random
normal 32×32 calibration images per task (two batches of 16, different for A and B), share 0.5.
``--arch vgg16 --images 256`` zips a VGG-16 pair with 256 images per task (share 1.0 by default
for every architecture but vgg11_bn; ``--share`` overrides). ``--width-div 8`` builds the same
architecture with every width divided by 8 (the smoke run uses this; the table says so).
``--api session`` zips with ``ZipSession.run`` instead (same engine and stages, no between-layer
callback).

One timed run (a VGG zip is not cheap enough to repeat); the model construction is not timed.
Peak memory is the process's maximum resident set size (models included). A memory guard stops
the zip (and says so in the table) when the process passes 75% of the machine's memory
(``--max-rss-gb``) or the machine has under 1.5 GB available, rather than let the OOM killer
choose a process.

Run: ``python -m benchmarks.vgg [--arch vgg11_bn] [--images 32] [--share 0.5] [--verbose]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torchvision
from torch import nn
from torchvision.models.vgg import VGG, cfgs, make_layers

import mtz_core
from mtz_core.matching import resolve_shares

from ._common import (
    MemoryGuard,
    MemoryLimitExceeded,
    fmt,
    gemm_probe,
    machine_line,
    markdown_table,
    physical_memory_gb,
    rss_gb,
)

SMOKE_ARGV = [
    *("--arch", "vgg11_bn", "--width-div", "8", "--images", "8", "--batch-size", "4"),
    *("--flatten-hessian", "block"),
]
STAGES = ("hessian", "costs", "matching", "merge")
_CFG = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def build_vgg(arch: str, seed: int, width_div: int = 1) -> nn.Module:
    """A torchvision VGG with 10 classes, or the same shape with every width / width_div."""
    torch.manual_seed(seed)
    if width_div == 1:
        return getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    bn = arch.endswith("_bn")
    cfg = [c if c == "M" else max(1, c // width_div) for c in cfgs[_CFG[arch.removesuffix("_bn")]]]
    model = VGG(make_layers(cfg, batch_norm=bn), num_classes=10, init_weights=False)
    c_last, hidden = max(1, 512 // width_div), max(1, 4096 // width_div)
    model.classifier = nn.Sequential(
        nn.Linear(c_last * 7 * 7, hidden),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(hidden, hidden),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(hidden, 10),
    )
    for m in model.modules():  # torchvision's VGG initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model.eval()


def make_data(images: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sizes = [batch_size] * (images // batch_size)
    if images % batch_size:
        sizes.append(images % batch_size)
    return [torch.randn(b, 3, 32, 32, generator=gen) for b in sizes]


def _peak_rss_gb() -> float:
    try:
        import resource  # Unix only
    except ImportError:
        return rss_gb()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def _zip(args, share, model_a, model_b, data_a, data_b, guard: MemoryGuard, records, seen):
    """Zip with `zip_models` (or `ZipSession.run`). `ZipSession.run` appends each layer's
    record to `records` as it ends; both append (layer, seconds from its first progress event
    to its "done" event) to `seen`, the only per-layer trace left when `zip_models` is stopped.

    No `after_step` callback is passed to `zip_models`: the call is timed as a user makes it.
    """
    start = time.perf_counter()
    last = [None]
    first: dict[str, float] = {}

    def progress(event) -> None:
        guard.check()
        now = time.perf_counter()
        first.setdefault(event.layer, now)
        if event.stage == "done":
            seen.append((event.layer, now - first[event.layer]))
        key = (event.layer, event.stage)
        if args.verbose and key != last[0]:
            print(
                f"  [{now - start:7.1f} s, {rss_gb():5.1f} GB] {event.layer} {event.stage}",
                file=sys.stderr,
                flush=True,
            )
        last[0] = key

    if args.api == "zip_models":
        return mtz_core.zip_models(
            model_a,
            model_b,
            data_a,
            data_b,
            share=share,
            flatten_hessian=args.flatten_hessian,
            progress=progress,
        )
    session = mtz_core.ZipSession(
        model_a,
        model_b,
        data_a,
        data_b,
        flatten_hessian=args.flatten_hessian,
        progress=progress,
    )
    shares = resolve_shares(share, session.hidden_layers)
    while not session.done:
        name = session.hidden_layers[session.next_index][0]
        records.append(session.step(k=shares[name]))
        guard.check()
    return session.result()


def run(args: argparse.Namespace) -> str:
    probe_start = gemm_probe()
    share = args.share if args.share is not None else (0.5 if args.arch == "vgg11_bn" else 1.0)
    t0 = time.perf_counter()
    model_a = build_vgg(args.arch, args.seed, args.width_div)
    model_b = build_vgg(args.arch, args.seed + 1, args.width_div)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model_a.parameters())
    data_a = make_data(args.images, args.batch_size, args.seed + 10)
    data_b = make_data(args.images, args.batch_size, args.seed + 20)
    limit = args.max_rss_gb if args.max_rss_gb else 0.75 * physical_memory_gb() or 1e9

    records: list = []
    seen: list[tuple[str, float]] = []
    result = None
    aborted = None
    with MemoryGuard(limit) as guard:
        t0 = time.perf_counter()
        try:
            result = _zip(args, share, model_a, model_b, data_a, data_b, guard, records, seen)
            records = list(result.layers)
        except (KeyboardInterrupt, MemoryLimitExceeded):
            if not guard.tripped:
                raise
            aborted = (
                f"**ABORTED** after {time.perf_counter() - t0:.1f} s by the memory guard: "
                f"{guard.reason} (guard: {limit:.1f} GB for the process, 75% of this "
                f"machine's memory unless --max-rss-gb, or under "
                f"{guard.min_available_gb:g} GB available) while zipping the layer after "
                f"{seen[-1][0] if seen else 'none'}; {len(seen)} layers done"
            )
        total = time.perf_counter() - t0
    peak = _peak_rss_gb()
    probe_end = gemm_probe()

    rows = []
    sums = dict.fromkeys(STAGES, 0.0)
    for rec in records:
        secs = [float(rec.seconds.get(s, 0.0)) for s in STAGES]
        for s, v in zip(STAGES, secs, strict=True):
            sums[s] += v
        dim = f"{rec.hessian_dim:,}"
        if getattr(rec, "hessian_blocks", 1) > 1:
            dim = f"{rec.hessian_blocks} × {rec.hessian_dim:,}"
        rows.append(
            [rec.name, rec.kind, rec.n_a, rec.shared_inputs, len(rec.pairs), rec.hessian, dim]
            + secs
            + [sum(secs)]
        )
    stage_total = sum(sums.values())
    if records:
        rows.append(["**Σ**", "", "", "", "", "", ""] + [sums[s] for s in STAGES] + [stage_total])
    else:  # zip_models was stopped: only the progress events' per-layer wall times are left
        rows = [[name, "", "", "", "", "", "", "–", "–", "–", "–", sec] for name, sec in seen]
        rows.append(["**Σ**", "", "", "", "", "", "", "–", "–", "–", "–", sum(x for _, x in seen)])
    header = [
        "layer",
        "kind",
        "n_a",
        "s",
        "k",
        "Hessian",
        "Hessian dim",
        *(f"{s} (s)" for s in STAGES),
        "layer (s)",
    ]
    name = args.arch if args.width_div == 1 else f"{args.arch} with widths ÷ {args.width_div}"
    api = "zip_models" if args.api == "zip_models" else "ZipSession.run"
    title = f"### {api} on two {name} at 32×32, {args.images} images per task, share = {share}"
    if args.flatten_hessian != "auto":
        title += f", flatten_hessian = {args.flatten_hessian}"
    lines = [
        title,
        "",
        f"Machine: {machine_line()}. One run, no warm-up; model construction ({fmt(build_s)} s) "
        f"not timed. float64 GEMM probe (1024²): {probe_start:.0f} GFLOP/s before, "
        f"{probe_end:.0f} after.",
        "",
    ]
    if aborted:
        lines.append(f"- {aborted}")
    else:
        saved = result.params["a"] + result.params["b"] - result.params["zipped"]
        lines += [
            f"- {api} total: **{fmt(total)} s** (Σ stages {fmt(stage_total)} s; the rest, "
            f"{fmt(total - stage_total)} s, is outside the four stages: tracing, checks, "
            "building the zipped net, state snapshots between layers)",
            f"- parameters per model {n_params:,}; zipped {result.params['zipped']:,} "
            f"(saved {saved:,} of {result.params['a'] + result.params['b']:,})",
        ]
    if not records and seen:
        lines.append(
            "- the stage split is not available for a stopped `zip_models` call; "
            "layer (s) is the time from the layer's first progress event to its done event"
        )
    lines += [
        f"- peak resident memory of the process: {peak:.1f} GB (models included)",
        "",
        markdown_table(header, rows),
        "",
        "s = shared inputs of the layer (`record.shared_inputs`), k = pairs; Hessian dim = D "
        "with the bias entry (blocks × D for a blocked Hessian).",
    ]
    if args.arch == "vgg11_bn" and args.width_div == 1 and share == 0.5:
        met = not aborted and total < 60
        lines.append(
            f"- Requirement vgg11_bn pair, share 0.5, under a minute on this machine: "
            f"{'met' if met else 'NOT met'} ({fmt(total)} s{', aborted' if aborted else ''})"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vgg11_bn", help="a torchvision VGG name, e.g. vgg16")
    p.add_argument("--images", type=int, default=32, help="calibration images per task")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--share", type=float, default=None, help="default: 0.5 for vgg11_bn, else 1.0")
    p.add_argument("--width-div", type=int, default=1, help="divide every width (smoke: 8)")
    p.add_argument(
        "--flatten-hessian",
        default="auto",
        choices=["auto", "exact", "block"],
        help="zip_models' flatten_hessian (smoke: block, the path full-size VGG takes)",
    )
    p.add_argument(
        "--api",
        choices=["zip_models", "session"],
        default="zip_models",
        help="zip_models (default) or ZipSession.run (no after-step callback)",
    )
    p.add_argument(
        "--max-rss-gb",
        type=float,
        default=None,
        help="stop the zip when resident memory passes this (default: 75%% of the machine's)",
    )
    p.add_argument("--verbose", action="store_true", help="log stages, time and memory")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    base = args.arch.removesuffix("_bn")
    if base not in _CFG:
        raise SystemExit(f"--arch must be one of {sorted(_CFG)} (optionally with _bn)")
    print(run(args))


if __name__ == "__main__":
    main()
