"""Engine paths on every available device, and scripts/gpu_check.py on a tiny configuration.

`test_engine_on_device` is parametrised by device: "cpu" always, "cuda" when a GPU is there
(`MTZ_TEST_DEVICE=cuda` runs only that one: what scripts/gpu_check.py does on a GPU machine).
On each device it zips (Hessians, costs, matching, merge, predicted and held-out errors,
retraining) and checks that everything stays on that device and that the results equal the
CPU run's (float64 algebra to round-off; the same pairs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ConvNet, make_mlp

import mtz_core  # noqa: F401  (before torch work: sets the thread defaults)

ROOT = Path(__file__).resolve().parent.parent


def _devices() -> list[str]:
    only = os.environ.get("MTZ_TEST_DEVICE")
    if only:
        return [only]
    return ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _calib(seed: int, shape=(1, 8, 8), n: int = 96) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return list(torch.randn(n, *shape, generator=g).split(32))


def _train(seed: int, classes: int, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, *shape, generator=g)
    return list(zip(x.split(32), torch.randint(0, classes, (64,), generator=g).split(32)))


def _zip(make, device: str, **options):
    from mtz_core import zip_models

    shape = options.pop("shape", (1, 8, 8))
    a, b = make(1).to(device), make(2).to(device)
    return zip_models(
        a,
        b,
        _calib(1, shape),
        _calib(2, shape),
        heldout_a=_calib(3, shape),
        heldout_b=_calib(4, shape),
        train_a=_train(5, 10 if make is _mlp else 5, shape),
        train_b=_train(6, 10 if make is _mlp else 5, shape),
        retrain_iterations=3,
        device=device,
        **options,
    )


def _mlp(seed):
    return make_mlp(seed)


def _conv(seed):
    return ConvNet(seed).eval()


CASES = {
    "mlp greedy": (_mlp, dict(share=1.0)),
    "mlp optimal auto-damping": (_mlp, dict(share=0.5, matching="optimal", damping="auto")),
    "conv exact": (_conv, dict(share=1.0)),
    "conv channel, block flatten": (
        _conv,
        dict(share=0.5, hessian="channel", flatten_hessian="block"),
    ),
    "conv kept batch norm": (_conv, dict(share=1.0, batch_norm="keep", recalibrate=True)),
}


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("case", list(CASES))
def test_engine_on_device(device: str, case: str):
    make, options = CASES[case]
    result = _zip(make, device, **dict(options))
    dev = torch.device(device)
    for t in [*result.model.parameters(), *result.model.buffers()]:
        assert t.device.type == dev.type  # nothing fell back to the host
    for r in result.layers:
        assert np.isfinite(r.cost).all() and np.isfinite(r.predicted_error)
        assert r.retraining.iterations == 3 and r.retraining.device.startswith(dev.type)
    if dev.type == "cpu":
        return
    ref = _zip(make, "cpu", **dict(options))  # the same zip on the CPU
    for r, c in zip(result.layers, ref.layers):
        assert np.array_equal(r.pairs, c.pairs), r.name
        np.testing.assert_allclose(r.cost, c.cost, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("device", _devices())
def test_bf16_autocast_retraining_on_device(device: str):
    """retrain_tasks(autocast="bf16"): finite losses, weights keep their dtype and device."""
    from mtz_core.training import retrain_tasks

    result = _zip(_mlp, device, share=1.0)
    net = result.model
    rep = retrain_tasks(net, [_train(5, 10), _train(6, 10)], iterations=4, autocast="bf16")
    assert rep.iterations == 4 and np.isfinite(rep.losses).all()
    for p in net.parameters():
        assert p.dtype == torch.float32 and p.device.type == torch.device(device).type
    with pytest.raises(ValueError, match="autocast"):
        retrain_tasks(net, [_train(5, 10), _train(6, 10)], iterations=1, autocast="fp8")


@pytest.mark.slow
def test_gpu_check_tiny_on_cpu():
    """The GPU machine's one prepared script, on a tiny configuration: it prints its table."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # the GPU machine has torch, scipy and pytest only: the script must not need the rest
    block = "import sys; sys.modules.update(dict.fromkeys(['torchvision', 'safetensors', "
    block += "'pandas', 'plotly', 'streamlit', 'sklearn'])); import runpy; "
    block += "sys.argv = ['gpu_check.py', '--tiny', '--device', 'cpu', '--skip-tests']; "
    block += f"runpy.run_path({str(ROOT / 'scripts' / 'gpu_check.py')!r}, run_name='__main__')"
    proc = subprocess.run(
        [sys.executable, "-c", block],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    for row in ("float64 GEMM", "costs + matching", "VGG-16 pair", "retraining"):
        assert row in out, out
    assert "| check |" in out  # a markdown table, ready for docs/benchmarks.md
    # 9 retraining steps at the accelerators' cadence: one read (the end), not one per step
    (reads,) = [line for line in out.splitlines() if "host reads in 9 retraining steps" in line]
    assert reads.startswith("| host reads in 9 retraining steps | 1 |") and reads.endswith(
        "| yes |"
    ), reads
    assert "host reads in that zip" in out
