"""Resumable zips (mtz_core.resume): a killed run started again ends as an uninterrupted one."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import mtz_core  # noqa: F401  (before torch work: sets the thread defaults)
from mtz_core.resume import STATE_FILE, Checkpointer

# One job, three ways: uninterrupted (no checkpoint folder), or checkpointed and killed
# (SIGKILL, no clean-up) at a chosen point. A 3-hidden-layer MLP pair, shuffled training
# batches (Batches: its pass counter is part of the state), Adam (optimizer state), retraining
# checkpointed every 10 of 25 iterations (a kill at 23 redoes 21-23 from the state at 20).
JOB = textwrap.dedent(
    """
    import os, pickle, signal, sys
    import mtz_core
    import torch
    from torch import nn
    from mtz_core import zip_models
    from mtz_core.data import Batches

    torch.set_num_threads(1)

    def mlp(seed, classes):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 16),
                             nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, classes))

    def task(seed, classes):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(200, 1, 8, 8, generator=g)
        y = (x.flatten(1) @ torch.randn(64, classes, generator=g)).argmax(1)
        return x, y

    (xa, ya), (xb, yb) = task(1, 10), task(2, 4)

    def job(out, ckpt, kill):
        def progress(e):
            if f"{e.stage}:{e.index}:{e.done}" == kill:
                os.kill(os.getpid(), signal.SIGKILL)

        result = zip_models(
            mlp(1, 10).eval(), mlp(2, 4).eval(), list(xa.split(50)), list(xb.split(50)),
            share=0.75, retrain_iterations=25, optimizer="adam", lr=0.003,
            train_a=Batches(xa, ya, 32, shuffle=True, seed=5),
            train_b=Batches(xb, yb, 48, shuffle=True, seed=6),
            progress=progress, device="cpu",
            checkpoint_dir=None if ckpt == "-" else ckpt, checkpoint_every=10,
        )
        records = [dict(pairs=r.pairs, cost=r.cost, predicted=r.predicted_error,
                        losses=r.retraining.losses, samples=r.retraining.samples)
                   for r in result.layers]
        state = {k: v.clone() for k, v in result.model.state_dict().items()}
        with open(out, "wb") as f:
            pickle.dump(dict(records=records, state=state), f)

    for i in range(1, len(sys.argv), 3):  # (out, checkpoint folder or -, kill point) each
        job(*sys.argv[i : i + 3])
    """
)


def _run(tmp: Path, *jobs: tuple[str, str, str]) -> int:
    """Run the jobs (out file, checkpoint folder or "-", kill point) in one process."""
    script = tmp / "job.py"
    script.write_text(JOB)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [str(v) if i else str(tmp / v) for job in jobs for i, v in enumerate(job)]
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, -9), proc.stderr[-3000:]
    return proc.returncode


@pytest.mark.slow
def test_a_killed_run_resumes_and_equals_an_uninterrupted_one(tmp_path: Path):
    ckpt = str(tmp_path / "ckpt")
    # the uninterrupted run, then one killed inside the second layer's retraining, 3
    # iterations after its state at 20 (one process: starting one is most of the time)
    assert _run(tmp_path, ("reference.pkl", "-", "never"), ("x.pkl", ckpt, "retrain:1:23")) == -9
    assert (tmp_path / "reference.pkl").is_file()
    assert (tmp_path / "ckpt" / STATE_FILE).is_file() and not (tmp_path / "x.pkl").exists()
    state = torch.load(tmp_path / "ckpt" / STATE_FILE, weights_only=False)
    assert len(state["records"]) == 2 and state["retraining"]["iteration"] == 20
    # resumed there, then killed while the third layer's Hessians stream (group 2 saved)
    assert _run(tmp_path, ("x.pkl", ckpt, "hessian:2:1")) == -9
    state = torch.load(tmp_path / "ckpt" / STATE_FILE, weights_only=False)
    assert len(state["records"]) == 2 and state["retraining"] is None
    # resumed from the group state: runs to the end
    assert _run(tmp_path, ("resumed.pkl", ckpt, "never")) == 0
    with open(tmp_path / "reference.pkl", "rb") as f:
        ref = pickle.load(f)
    with open(tmp_path / "resumed.pkl", "rb") as f:
        res = pickle.load(f)
    assert len(ref["records"]) == len(res["records"]) == 3
    for r1, r2 in zip(ref["records"], res["records"]):
        assert np.array_equal(r1["pairs"], r2["pairs"])
        assert np.array_equal(r1["cost"], r2["cost"])
        assert r1["predicted"] == r2["predicted"]
        assert r1["losses"] == r2["losses"] and r1["samples"] == r2["samples"]
    assert ref["state"].keys() == res["state"].keys()
    for k, v in ref["state"].items():
        assert torch.equal(v, res["state"][k]), k  # bitwise


def test_a_folder_of_another_run_is_refused(tmp_path: Path):
    from conftest import make_mlp

    from mtz_core import zip_models

    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(40, 1, 8, 8, generator=g) for _ in range(2)]
    a, b = make_mlp(1), make_mlp(2)
    first = zip_models(a, b, calib, calib, share=0.5, checkpoint_dir=tmp_path)
    assert (tmp_path / STATE_FILE).is_file()
    # the same arguments: every group is restored, nothing is recomputed
    again = zip_models(a, b, calib, calib, share=0.5, checkpoint_dir=tmp_path)
    for r1, r2 in zip(first.layers, again.layers):
        assert np.array_equal(r1.pairs, r2.pairs) and r1.seconds == r2.seconds
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])
    with pytest.raises(ValueError, match="another run"):
        zip_models(a, b, calib, calib, share=1.0, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="every"):
        Checkpointer(tmp_path, every=-1)


def test_mtz_zip_checkpoint_dir_resumes(tmp_path: Path):
    """`mtz zip --checkpoint-dir`: a second run of the same command restores every zipped
    layer from the folder (same pairs, same network); other settings are refused."""
    import json

    from mtz_core.cli import main

    assert main(["demo", "digits-mlp", "--out", str(tmp_path / "pair"), "--no-progress"]) == 0
    args = [str(tmp_path / "pair" / f"{w}.safetensors") for w in "ab"]
    args += ["--share", "0.5", "--calib-samples", "128", "--heldout-samples", "64"]
    args += ["--retrain-iterations", "4", "--device", "cpu", "--no-progress"]
    args += ["--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every", "2"]
    reports = []
    for n in range(2):
        report = tmp_path / f"r{n}.json"
        assert main(["zip", *args, "--report", str(report)]) == 0
        reports.append(json.loads(report.read_text()))
    assert (tmp_path / "ckpt" / STATE_FILE).is_file()
    for l1, l2 in zip(reports[0]["layers"], reports[1]["layers"]):
        assert l1["pairs"] == l2["pairs"] and l1["predicted_error"] == l2["predicted_error"]
    assert reports[0]["accuracy"]["zipped_retrained"] == reports[1]["accuracy"]["zipped_retrained"]
    assert main(["zip", *args, "--lr", "0.01"]) == 1  # another run's folder: refused
    no_dir = [a for a in args if a not in ("--checkpoint-dir", str(tmp_path / "ckpt"))]
    assert main(["zip", *no_dir]) == 2  # --checkpoint-every alone
