"""Distributed zipping (mtz_core.distributed): 2 gloo processes equal 1 process.

The 2-process runs are spawned with torch.multiprocessing (a file store, no network); each
compares against the 1-process run of the same arguments: Hessians and costs to float64
round-off, pairs identical, retraining with the same global batch within float32 round-off.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ConvNet, make_mlp

import mtz_core  # noqa: F401  (before torch work: sets the thread defaults)
from mtz_core import distributed

#: retraining: the two runs take the same steps on the same global batches; only the float32
#: summation order differs (slices summed by DDP vs one batch), so weights and losses agree to
#: about 1e-6 relative after a few hundred steps; the pairs of later layers must be identical.
RETRAIN_RTOL = 1e-4
RETRAIN_ATOL = 1e-5


def _task(seed: int, sizes: list[int], classes: int = 10):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x = torch.randn(n, 1, 8, 8, generator=g)
    w = torch.randn(64, classes, generator=g)
    y = (x.flatten(1) @ w).argmax(1)
    return list(zip(x.split(sizes), y.split(sizes)))


def _zip(options: dict) -> dict:
    """One zip of a tiny MLP pair (`models`: "conv" for two small conv nets, "conv3" for three,
    no retraining); what the test compares (on every rank)."""
    from mtz_core import zip_many, zip_models

    options = dict(options)
    kind = options.pop("models", None)

    # uneven calibration batches: rank 0 gets 3 of them, rank 1 two, with different offsets
    calib_a = [x for x, _ in _task(1, [40, 40, 37, 40, 23])]
    calib_b = [x for x, _ in _task(2, [33, 40, 40, 40, 27])]
    held_a = [x for x, _ in _task(5, [50, 50])]
    held_b = [x for x, _ in _task(6, [50, 50])]
    train_a, train_b = _task(3, [31] * 6), _task(4, [32] * 6, classes=4)
    a, b = make_mlp(1), make_mlp(2, classes=4)
    distributed.reset_counts()
    if kind is not None:
        t = 3 if kind == "conv3" else 2
        calib = [calib_a, calib_b, [x for x, _ in _task(7, [30, 30, 30])]][:t]
        held = [held_a, held_b, held_a][:t]
        models = [ConvNet(seed).eval() for seed in range(1, t + 1)]
        result = zip_many(models, calib, heldout=held, device="cpu", **options)
    else:
        result = zip_models(
            a,
            b,
            calib_a,
            calib_b,
            share=options.get("share", 1.0),
            damping=options.get("damping"),
            retrain_iterations=options.get("iterations", 0),
            train_a=train_a,
            train_b=train_b,
            heldout_a=held_a,
            heldout_b=held_b,
            device="cpu",
        )
    records = []
    for r in result.layers:
        records.append(
            dict(
                pairs=r.pairs,
                cost=r.cost,
                pair_errors=r.pair_errors,
                predicted=r.predicted_error,
                heldout=r.heldout_error,
                n_samples=r.n_samples,
                damping=r.damping,
                scores=r.damping_scores,
                losses=np.array(r.retraining.losses) if r.retraining else None,
                samples=r.retraining.samples if r.retraining else 0,
            )
        )
    state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    return dict(records=records, state=state, counts=distributed.gather_counts())


def _worker(rank: int, world: int, init_file: str, cases: list[dict], out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        summaries = [_zip(options) for options in cases]
        with open(f"{out}.{rank}", "wb") as f:
            pickle.dump(summaries, f)
    finally:
        dist.destroy_process_group()


def _spawn(cases: list[dict], world: int = 2) -> list[list[dict]]:
    """Every case's summary per rank: [rank][case] (one process group for all cases: starting
    processes is most of the time on a small machine)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "summary")
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), cases, out), nprocs=world)
        summaries = []
        for r in range(world):
            with open(f"{out}.{r}", "rb") as f:
                summaries.append(pickle.load(f))
    return summaries


def _compare(one: dict, many: dict, rtol: float, atol: float) -> float:
    """Assert two summaries agree; returns the largest absolute weight difference."""
    assert len(one["records"]) == len(many["records"])
    for r1, r2 in zip(one["records"], many["records"]):
        assert np.array_equal(r1["pairs"], r2["pairs"])  # pairs identical
        assert r1["n_samples"] == r2["n_samples"] and r1["samples"] == r2["samples"]
        assert r1["damping"] == r2["damping"]
        np.testing.assert_allclose(r2["cost"], r1["cost"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(r2["pair_errors"], r1["pair_errors"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(r2["predicted"], r1["predicted"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(r2["heldout"], r1["heldout"], rtol=rtol, atol=atol)
        if r1["scores"] is not None:
            assert r1["scores"].keys() == r2["scores"].keys()
            for d in r1["scores"]:
                np.testing.assert_allclose(r2["scores"][d], r1["scores"][d], rtol=rtol, atol=atol)
        if r1["losses"] is not None:
            np.testing.assert_allclose(r2["losses"], r1["losses"], rtol=RETRAIN_RTOL, atol=1e-6)
    worst = 0.0
    assert one["state"].keys() == many["state"].keys()
    for k, v in one["state"].items():
        w = many["state"][k]
        assert w.shape == v.shape, k
        if v.is_floating_point() and v.numel():
            worst = max(worst, float((w.double() - v.double()).abs().max()))
            torch.testing.assert_close(w, v, rtol=max(rtol, 1e-6), atol=max(atol, 1e-6))
        else:
            assert torch.equal(w, v), k
    return worst


#: kept batch norm under DDP, as a fraction of the largest |statistic| of each tensor: each rank
#: normalises its half-batch with the half's statistics, so the weights move a little
#: differently (2·10⁻³ at most here) and the running variances are the mean of the halves'
#: variances. Measured over 2 × 12 steps of batches of 32: means 1.5·10⁻², variances
#: 5.7·10⁻³ at most (the first norm 7·10⁻⁵ and 5·10⁻⁴; a rank's own statistics, before the
#: average, 7·10⁻³ and 2.9·10⁻²)
KEPT_NORM_MEAN_TOL = 5e-2
KEPT_NORM_VAR_TOL = 2e-2


def _kept_norm_retraining(options: dict) -> dict:
    """Two small conv nets zipped with kept batch norm and 12 retraining iterations per layer
    (no dropout: masks are drawn per rank); every norm's running statistics and the state."""
    from mtz_core import zip_many

    models = [ConvNet(seed).eval() for seed in (1, 2)]
    for m in models:
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
    calib = [[x for x, _ in _task(s, [40, 40, 40])] for s in (1, 2)]
    trains = [_task(3, [32] * 6, classes=5), _task(4, [32] * 6, classes=5)]
    result = zip_many(
        models,
        calib,
        share=0.5,
        batch_norm="keep",
        retrain_iterations=12,
        trains=trains,
        device="cpu",
        **options,
    )
    stats = distributed.norm_statistics(result.model)
    return dict(
        stats=[t.detach().clone() for t in stats],
        state={k: v.detach().clone() for k, v in result.model.state_dict().items()},
    )


def _norm_worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        summary = _kept_norm_retraining({})
        with open(f"{out}.{rank}", "wb") as f:
            pickle.dump(summary, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_kept_batch_norm_statistics_agree_across_ranks():
    """With kept batch norm, DDP retraining leaves every rank with the same running statistics
    (the mean over the ranks), and they are within KEPT_NORM_*_TOL of one process's."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "summary")
        mp.spawn(_norm_worker, args=(2, os.path.join(tmp, "init"), out), nprocs=2)
        ranks = []
        for r in range(2):
            with open(f"{out}.{r}", "rb") as f:
                ranks.append(pickle.load(f))
    one = _kept_norm_retraining({})
    assert len(one["stats"]) == len(ranks[0]["stats"]) == 2 * 2 * 2  # 2 norms × 2 tasks
    for k, v in ranks[0]["state"].items():  # statistics included: bitwise the same
        assert torch.equal(v, ranks[1]["state"][k]), k
    for i, (mine, single) in enumerate(zip(ranks[0]["stats"], one["stats"])):
        tol = KEPT_NORM_MEAN_TOL if i % 2 == 0 else KEPT_NORM_VAR_TOL
        torch.testing.assert_close(mine, single, rtol=0, atol=tol * float(single.abs().max()))


def test_not_distributed_is_the_identity():
    assert not distributed.active() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed._slice(10, 3, 0) == (0, 4) and distributed._slice(10, 3, 2) == (7, 10)
    assert [distributed._slice(1, 2, r) for r in (0, 1)] == [(0, 1), (1, 1)]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process():
    """Without retraining: Hessians, costs and errors to float64 round-off, pairs identical,
    weights equal; damping="auto" holds out the same samples (global offsets). With retraining
    (DDP, each rank half of every global batch): pairs identical, losses and weights within
    float32 round-off. Each rank streams its own calibration batches and trains on its half."""
    cases = [
        (dict(damping=1.0, share=0.75), 1e-10, 1e-12),
        (dict(damping="auto", share=1.0), 1e-10, 1e-12),
        (dict(damping=1.0, share=1.0, iterations=20), RETRAIN_RTOL, RETRAIN_ATOL),
        (dict(models="conv", share=1.0, batch_norm="keep"), 1e-10, 1e-12),
        (dict(models="conv", share=0.5, hessian="channel", flatten_hessian="block"), 1e-10, 1e-12),
        (dict(models="conv3", share=0.5), 1e-10, 1e-12),
    ]
    spawned = _spawn([options for options, _, _ in cases])
    for c, (options, rtol, atol) in enumerate(cases):
        one = _zip(options)
        ranks = [per_rank[c] for per_rank in spawned]
        for summary in ranks:  # every rank ends with rank 0's network
            _compare(one, summary, rtol, atol)
        for k, v in ranks[0]["state"].items():
            assert torch.equal(v, ranks[1]["state"][k]), k
        per_rank = ranks[0]["counts"]
        assert [c["rank"] for c in per_rank] == [0, 1]
        if "models" in options:
            continue
        single = one["counts"][0]
        for kind in ("calib", "train"):
            total = np.sum([c[kind] for c in per_rank], axis=0)
            assert list(total) == single[kind], kind  # the work was split, not repeated
        # calibration: rank 0 has batches 0, 2, 4; rank 1 batches 1, 3 (per layer, 2 layers)
        assert per_rank[0]["calib"] == [2 * (40 + 37 + 23), 2 * (33 + 40 + 27)]
        assert per_rank[1]["calib"] == [2 * (40 + 40), 2 * (40 + 40)]
        if options.get("iterations"):
            # global batches 31 (task A) and 32 (task B): 16 + 15 and 16 + 16 rows per step
            its = 2 * options["iterations"]
            assert per_rank[0]["train"] == [16 * its, 16 * its]
            assert per_rank[1]["train"] == [15 * its, 16 * its]


@pytest.mark.slow
def test_mtz_zip_nproc_2_report_equals_one_process(tmp_path: Path):
    """`mtz zip --nproc 2` (torchrun, gloo): the report records world_size 2 and each rank's
    samples; layers, pairs and parameters equal the 1-process report; only rank 0 writes."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    py = sys.executable
    from mtz_core.cli import main

    assert main(["demo", "digits-mlp", "--out", str(tmp_path / "pair"), "--no-progress"]) == 0
    args = [
        str(tmp_path / "pair" / "a.safetensors"),
        str(tmp_path / "pair" / "b.safetensors"),
        "--share",
        "1.0",
        "--calib-samples",
        "256",
        "--heldout-samples",
        "128",
        "--retrain-iterations",
        "10",
        "--device",
        "cpu",
        "--no-progress",
    ]
    reports = {}
    # one process: here (no start-up to wait for); two: `--nproc 2`, through torchrun
    assert main(["zip", *args, "--report", str(tmp_path / "r1.json")]) == 0
    reports[1] = json.loads((tmp_path / "r1.json").read_text())
    out, report = tmp_path / "z2.safetensors", tmp_path / "r2.json"
    proc = subprocess.run(
        [py, "-m", "mtz_core.cli", "zip", *args, "--out", str(out), "--report", str(report)]
        + ["--nproc", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports[2] = json.loads(report.read_text())
    assert proc.stdout.count("wrote report") == 1  # rank 0 alone prints
    assert out.is_file()
    one, two = reports[1], reports[2]
    assert one["distributed"]["world_size"] == 1 and two["distributed"]["world_size"] == 2
    ranks = two["distributed"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    for kind in ("calib_samples", "train_samples"):
        single = one["distributed"]["ranks"][0][kind]
        assert set(single) == {"a", "b"} and all(single.values())
        for w in "ab":  # split between the ranks, not repeated
            assert sum(r[kind][w] for r in ranks) == single[w]
            assert all(0 < r[kind][w] < single[w] for r in ranks)
    assert two["params"] == one["params"]
    for l1, l2 in zip(one["layers"], two["layers"]):
        assert l1["pairs"] == l2["pairs"]
        assert l1["calib_samples"] == l2["calib_samples"]
        np.testing.assert_allclose(l2["predicted_error"], l1["predicted_error"], rtol=1e-4)


def _mtz_json(args: list[str], nproc: int) -> dict:
    """`mtz ARGS --json` in this process (nproc 1) or through `--nproc N` (torchrun, gloo)."""
    import contextlib
    import io

    from mtz_core.cli import main

    if nproc == 1:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main([*args, "--json"]) == 0
        return json.loads(out.getvalue())
    proc = subprocess.run(
        [sys.executable, "-m", "mtz_core.cli", *args, "--json", "--nproc", str(nproc)],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # rank 0's document alone


@pytest.mark.slow
def test_mtz_sweep_and_tune_nproc_2_equal_one_process(tmp_path: Path):
    """`mtz sweep --nproc 2` and `mtz tune --nproc 2`: every zip of the grid (or trial) shares
    its Hessians and retraining between 2 gloo processes; the table and the chosen plan equal
    the 1-process command's (accuracies exactly, predicted errors to round-off); rank 0 alone
    prints and writes."""
    from mtz_core.demo import ASSETS_DIR

    pair = [str(ASSETS_DIR / "moons-circles" / f"{w}.safetensors") for w in "ab"]
    quick = ["--calib-samples", "128", "--device", "cpu", "--no-progress"]
    sweep = ["sweep", *pair, "--shares", "0.5,1", "--retrain-iterations", "0,5", *quick]
    one, two = _mtz_json(sweep, 1), _mtz_json([*sweep, "--out", str(tmp_path / "s")], 2)
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert len(one["rows"]) == len(two["rows"]) == 1 + 2 * 2
    written = {p.name for p in tmp_path.iterdir()}
    assert {"s.csv", "s.html"} <= written <= {"s.csv", "s.html", "s.png"}
    for r1, r2 in zip(one["rows"], two["rows"]):
        for key, v in r1.items():
            if key == "seconds":
                continue
            if isinstance(v, float) and key.startswith(("predicted", "heldout")):
                np.testing.assert_allclose(r2[key], v, rtol=1e-6, atol=1e-12, err_msg=key)
            else:
                assert r2[key] == v or (v != v and r2[key] != r2[key]), key  # NaN == NaN
    tune = ["tune", *pair, "--grid", "0.5,1", "--max-drop", "3", "--retrain-iterations", "5"]
    one, two = _mtz_json([*tune, *quick], 1), _mtz_json([*tune, *quick], 2)
    assert one["world_size"] == 1 and two["world_size"] == 2
    p1, p2 = one["plan"], two["plan"]
    assert p1["shares"] == p2["shares"] and p1["val_accuracy"] == p2["val_accuracy"]
    assert [t["shares"] for t in p1["trials"]] == [t["shares"] for t in p2["trials"]]
    np.testing.assert_allclose(p2["predicted_error"], p1["predicted_error"], rtol=1e-6)
