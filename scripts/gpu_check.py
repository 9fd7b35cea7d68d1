#!/usr/bin/env python
"""One prepared check for a lent GPU machine: the engine tests on CUDA, then a table to put in
docs/benchmarks.md (with the card named).

    python scripts/gpu_check.py                      # on the GPU: under 8 minutes
    python scripts/gpu_check.py --tiny --device cpu  # the same code paths, tiny (CI)

Needs torch, numpy and scipy only (no torchvision: the VGG-16 is the model registry's, which
keeps torchvision's layout and configuration itself; no app packages; no network). Rows of the
table:

* **float64 GEMM**: n × n float64 products on the device (n = 4096): the floor's rate.
* **costs + matching, n = 4096**: `sharing_operator` + `cost_matrix` + `greedy_pairs` for one
  layer of n neurons per model (D = n + 1, random SPD Hessians) against the floor: float64
  `solve(H_A + H_B, H_B)`, `A @ X`, `(AX) @ Bᵀ` on the same device (the dense products any
  implementation needs; as benchmarks/cost_matching.py). Goal: ≤ 2×.
* **VGG-16 pair, 224×224, share 1.0, 256 images per task**: `zip_models` on the device (exact
  conv Hessians; fc6 with the exact 25,089-wide Hessian when the device has ≥ 48 GB, else the
  block form), wall time against the GEMM floor of its float64 work (Hessian products
  2·rows·D² per task, and per layer 8/3·D³ + 2nD² + 2n²D for the costs). Goal: < 60 s.
* **host reads in the VGG-16 zip**: counted the same way (information: the solver's choices
  and the checks read a few values per layer; streaming a batch reads none).
* **host reads in retraining**: how often `retrain_tasks` (at the accelerators' read cadence,
  `SYNC_EVERY`) makes the host wait for the device over 3 × 20 steps: CUDA's sync debug mode
  counts them (on the CPU, reads of tensor values). Goal: one per cadence plus a constant,
  not one per step.
* **retraining**: iterations per second of `retrain_tasks` on the zipped VGG-16 (two tasks,
  32 images each per step) against a plain PyTorch loop of the same network and step (SGD,
  the same clip). Goal: ≥ 0.8×. Again with bf16 autocast (`retrain_tasks(autocast="bf16")`),
  both sides.

`--budget` (seconds, default 450) skips what would not fit; the engine tests are
`MTZ_TEST_DEVICE=<device> pytest tests/test_gpu_check.py -k engine` (every engine path on the
device, compared with the CPU). Exit code 1 when a test fails (the table still prints).
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mtz_core  # noqa: E402, I001  (before torch: thread defaults)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from mtz_core.costs import sharing_operator  # noqa: E402
from mtz_core.hessian import LayerHessian  # noqa: E402
from mtz_core.matching import greedy_pairs  # noqa: E402
from mtz_core.models.vgg import VGG_CFGS, build_vgg  # noqa: E402
from mtz_core.training import (  # noqa: E402
    RETRAIN_CLIP,
    RETRAIN_LR,
    SYNC_EVERY,
    retrain_tasks,
)

#: VGG-16's layers (torchvision's configuration "D", kept in mtz_core: no torchvision needed here)
VGG16 = VGG_CFGS["D"]


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of fn() on `dev` (synchronised)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def gemm_rate(dev: torch.device, n: int) -> float:
    """float64 GEMM FLOP/s on `dev` at n × n."""
    a = torch.randn(n, n, dtype=torch.float64, device=dev)
    b = torch.randn(n, n, dtype=torch.float64, device=dev)
    return 2 * n**3 / timed(lambda: a @ b, dev, repeats=5)


# -- costs + matching ----------------------------------------------------------------------
def _hessian(n: int, gen: torch.Generator, dev: torch.device) -> LayerHessian:
    m = 2 * n
    x = torch.randn(m, n, generator=gen, dtype=torch.float64).to(dev)
    x = torch.cat([x, torch.ones(m, 1, dtype=torch.float64, device=dev)], dim=1)
    return LayerHessian.from_moment((x.T @ x / m)[None], 1, True, "exact").damped(0.1)[0]


def costs_check(dev: torch.device, n: int) -> tuple[float, float]:
    """(ours, floor) median seconds at n neurons per model."""
    gen = torch.Generator().manual_seed(0)
    h_a, h_b = _hessian(n, gen, dev), _hessian(n, gen, dev)
    scale = (n + 1) ** -0.5
    va = (torch.randn(n, n + 1, generator=gen, dtype=torch.float64) * scale).to(dev)
    vb = (torch.randn(n, n + 1, generator=gen, dtype=torch.float64) * scale).to(dev)

    def ours():
        greedy_pairs(sharing_operator(h_a, h_b).cost_matrix(va, vb), n)

    s, hb = h_a.dense() + h_b.dense(), h_b.dense()

    def floor():
        x = torch.linalg.solve(s, hb)
        (va @ x) @ vb.T

    return timed(ours, dev), timed(floor, dev)


# -- VGG-16 --------------------------------------------------------------------------------
def vgg_floor_flops(model: nn.Module, side: int, images: int) -> float:
    """float64 FLOPs of a VGG zip's unavoidable products: each hidden layer's Hessian per task
    (2·rows·D²) and its costs (8/3·D³ + 2nD² + 2n²D)."""
    flops, h = 0.0, side
    c = 3
    for v in VGG16:
        if v == "M":
            h //= 2
            continue
        out = next(m for m in model.features if isinstance(m, nn.Conv2d) and m.in_channels == c)
        d, n = c * 9 + 1, out.out_channels
        flops += 2 * 2 * images * h * h * d * d + 8 / 3 * d**3 + 2 * n * d * d + 2 * n * n * d
        c = out.out_channels
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)][:2]
    for fc in fcs:
        d, n = fc.in_features + 1, fc.out_features
        flops += 2 * 2 * images * d * d + 8 / 3 * d**3 + 2 * n * d * d + 2 * n * n * d
    return flops


def make_vgg_pair(dev: torch.device, side: int, div: int) -> tuple[nn.Module, nn.Module]:
    """Two torchvision-shaped VGG-16s (the registry's, 10 classes), every width / `div`."""
    pair = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model, _ = build_vgg("vgg16", (3, side, side), 10, width=1 / div)
        pair.append(model.to(dev).eval())
    return pair[0], pair[1]


def vgg_check(dev, side, images, batch, div, fc6):
    a, b = make_vgg_pair(dev, side, div)
    gen = torch.Generator().manual_seed(2)
    calib = [
        [torch.randn(batch, 3, side, side, generator=gen) for _ in range(images // batch)]
        for _ in range(2)
    ]
    sync(dev)
    t0 = time.perf_counter()
    got = []

    def run() -> None:
        got.append(
            mtz_core.zip_models(
                a, b, calib[0], calib[1], share=1.0, device=dev, flatten_hessian=fc6
            )
        )
        sync(dev)

    reads = host_reads(dev, run)  # per layer a few (solver choices), none per batch
    seconds = time.perf_counter() - t0
    result = got[0]
    stages: dict[str, float] = {}
    for r in result.layers:
        for k, v in r.seconds.items():
            stages[k] = stages.get(k, 0.0) + v
    return result, seconds, stages, vgg_floor_flops(a, side, images), reads


def retrain_check(dev, result, side, batch, iterations, autocast=None):
    """(ours, plain) iterations per second on the zipped network (`autocast="bf16"`: both
    under bfloat16 autocast)."""
    gen = torch.Generator().manual_seed(3)
    trains = [
        [
            (
                torch.randn(batch, 3, side, side, generator=gen).to(dev),
                torch.randint(0, 10, (batch,), generator=gen).to(dev),
            )
            for _ in range(2)
        ]
        for _ in range(2)
    ]
    net = copy.deepcopy(result.model)

    def ours():
        retrain_tasks(net, trains, iterations=iterations, device=dev, autocast=autocast)

    plain_net = copy.deepcopy(result.model).to(dev)
    params = [p for p in plain_net.parameters() if p.numel()]
    opt = torch.optim.SGD(params, lr=RETRAIN_LR)

    def plain():
        plain_net.train()
        for it in range(iterations):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast is not None):
                loss = sum(
                    F.cross_entropy(plain_net.logits(x, t), y).float()
                    for t, (x, y) in enumerate(b[it % 2] for b in trains)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, RETRAIN_CLIP)
            opt.step()

    t_ours = timed(ours, dev, repeats=3)
    t_plain = timed(plain, dev, repeats=3)
    return iterations / t_ours, iterations / t_plain


def host_reads(dev: torch.device, fn) -> int | None:
    """How many times fn() makes the host wait for the device. CUDA: the synchronising calls
    that `torch.cuda.set_sync_debug_mode("warn")` reports; the CPU: the reads of tensor values
    into Python (item, float, int, bool, tolist, numpy), each of which would be one on a GPU.
    None when it cannot be counted here."""
    import warnings

    if dev.type == "cuda":
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    fn()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            return sum("synchroniz" in str(w.message) for w in caught)
        except Exception as exc:  # a check that cannot count is reported, not fatal
            print(f"gpu_check: host reads not counted ({exc})", flush=True)
            return None
    count = [0]
    names = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist", "numpy")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def counting(original):
        def spy(self, *args, **kwargs):
            count[0] += 1
            return original(self, *args, **kwargs)

        return spy

    try:
        for n, original in saved.items():
            setattr(torch.Tensor, n, counting(original))
        fn()
    finally:
        for n, original in saved.items():
            setattr(torch.Tensor, n, original)
    return count[0]


def sync_check(dev, result, side, batch, iterations):
    """Host reads of `retrain_tasks` over `iterations` steps: bounded by the read cadence
    (`SYNC_EVERY` on an accelerator), not by the iterations."""
    gen = torch.Generator().manual_seed(4)
    trains = [
        [
            (
                torch.randn(batch, 3, side, side, generator=gen).to(dev),
                torch.randint(0, 10, (batch,), generator=gen).to(dev),
            )
        ]
        for _ in range(2)
    ]
    net = copy.deepcopy(result.model)
    cadence = SYNC_EVERY  # the accelerators' default, also on the CPU (whose default is 1)

    def run() -> None:
        retrain_tasks(net, trains, iterations=iterations, device=dev, sync_every=cadence)

    return host_reads(dev, run), cadence


def run_tests(device: str) -> tuple[str, bool]:
    env = dict(os.environ, MTZ_TEST_DEVICE=device)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    cmd += [str(ROOT / "tests" / "test_gpu_check.py"), "-k", "engine"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", flush=True)
    return f"{last} ({time.perf_counter() - t0:.0f} s)", proc.returncode == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (CPU, CI): same code paths")
    p.add_argument("--skip-tests", action="store_true", help="only the table")
    p.add_argument("--budget", type=float, default=450, help="seconds; later rows are skipped")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here (use --device cpu --tiny)", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    if a.tiny:
        n_gemm, n_cost, side, images, batch, div, its = 256, 256, 32, 4, 2, 32, 3
    else:
        n_gemm, n_cost, side, images, batch, div, its = 4096, 4096, 224, 256, 32, 1, 20
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        card = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
        big = props.total_memory >= 48 * 2**30
    else:
        card, big = f"CPU, {torch.get_num_threads()} threads", False
    fc6 = "exact" if big else ("auto" if a.tiny else "block")
    print(f"gpu_check: {card}; torch {torch.__version__}; tiny={a.tiny}", flush=True)
    ok = True
    rows: list[tuple[str, str, str, str, str, str]] = []

    def left() -> float:
        return a.budget - (time.perf_counter() - t_start)

    if not a.skip_tests:
        text, ok = run_tests(a.device)
        rows.append(("engine tests on " + a.device, text, "", "", "all pass", _yes(ok)))
    rate = gemm_rate(dev, n_gemm)
    rows.append((f"float64 GEMM, n = {n_gemm}", f"{rate / 1e12:.2f} TFLOP/s", "", "", "", ""))
    ours, floor = costs_check(dev, n_cost)
    rows.append(
        (
            f"costs + matching, n = {n_cost}",
            f"{ours:.3f} s",
            f"floor {floor:.3f} s",
            f"{ours / floor:.2f}x",
            "<= 2x",
            _yes(ours / floor <= 2),
        )
    )
    result = None
    if left() > 60 or a.tiny:
        name = f"VGG-16 pair, {side}x{side}, share 1.0, {images} images/task, fc6 {fc6}"
        if div > 1:
            name += f", widths/{div}"
        result, seconds, stages, flops, reads = vgg_check(dev, side, images, batch, div, fc6)
        split = ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if v >= 0.05 or a.tiny)
        rows.append(
            (
                name,
                f"{seconds:.1f} s ({split})",
                f"floor {flops / rate:.1f} s",
                f"{seconds / (flops / rate):.2f}x",
                "< 60 s",
                _yes(seconds < 60),
            )
        )
        n_layers, batches = len(result.layers), images // batch
        rows.append(
            (
                f"host reads in that zip ({n_layers} layers, 2 x {batches} batches each)",
                "not counted" if reads is None else f"{reads} ({reads / n_layers:.0f} per layer)",
                f"{n_layers * 2 * batches} batches streamed",
                "",
                "a few per layer, none per batch",
                "-",
            )
        )
    else:
        rows.append(("VGG-16 pair", "skipped (budget)", "", "", "< 60 s", "-"))
    if result is not None and (left() > 30 or a.tiny):
        ours_its, plain_its = retrain_check(dev, result, side, batch, its)
        rows.append(
            (
                f"retraining, VGG-16 zipped, 2 x {batch} images/step",
                f"{ours_its:.2f} it/s",
                f"plain loop {plain_its:.2f} it/s",
                f"{ours_its / plain_its:.2f}x",
                ">= 0.8x",
                _yes(ours_its / plain_its >= 0.8),
            )
        )
    else:
        rows.append(("retraining", "skipped (budget)", "", "", ">= 0.8x", "-"))
    if result is not None and (left() > 20 or a.tiny):
        steps = 3 * its
        reads, cadence = sync_check(dev, result, side, batch, steps)
        bound = steps // cadence + 8  # the reads at the cadence, the end, a few at the start
        rows.append(
            (
                f"host reads in {steps} retraining steps",
                "not counted" if reads is None else f"{reads}",
                f"1 per {cadence} steps + 8: {bound}",
                "",
                "<= bound",
                "-" if reads is None else _yes(reads <= bound),
            )
        )
    if result is not None and (left() > 30 or a.tiny):
        ours_its, plain_its = retrain_check(dev, result, side, batch, its, autocast="bf16")
        rows.append(
            (
                "retraining, bf16 autocast (Hessians stay float64)",
                f"{ours_its:.2f} it/s",
                f"plain loop {plain_its:.2f} it/s",
                f"{ours_its / plain_its:.2f}x",
                ">= 0.8x",
                _yes(ours_its / plain_its >= 0.8),
            )
        )
    print()
    print("| check | measured | reference | ratio | goal | met |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    total = time.perf_counter() - t_start
    print(f"\n{card}; torch {torch.__version__}; {total:.0f} s in all", flush=True)
    return 0 if ok else 1


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


if __name__ == "__main__":
    sys.exit(main())
