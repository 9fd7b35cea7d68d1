"""The `mtz` command line: each command end to end on the shipped demo pairs, and every bad
argument or failure as one `mtz: error:` line with exit code 1 or 2, never a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtz_core import ZipConfig, ZippedNet
from mtz_core.checkpoints import load_checkpoint
from mtz_core.cli import main
from mtz_core.demo import ASSETS_DIR

MLP_A = ASSETS_DIR / "digits-mlp" / "a.safetensors"
MLP_B = ASSETS_DIR / "digits-mlp" / "b.safetensors"
CONV_A = ASSETS_DIR / "digits-conv" / "a.safetensors"
MOONS = ASSETS_DIR / "moons-circles" / "a.safetensors"
CIRCLES = ASSETS_DIR / "moons-circles" / "b.safetensors"
QUICK = " --calib-samples 128 --no-progress"
#: test accuracy of demo model A, from its card (a stored number: compared with a tolerance)
MLP_A_TEST = json.loads((ASSETS_DIR / "digits-mlp" / "a.json").read_text())["accuracy"]["test"]


def run(capsys, command: str) -> tuple[int, str, str]:
    """`mtz COMMAND` (split on spaces: the paths used here have none) -> code, stdout, stderr."""
    code = main(command.split())
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def zipped(tmp_path_factory):
    """One zip of the digits MLP pair, with its JSON output, zipped network and report files."""
    folder = tmp_path_factory.mktemp("zip")
    out, report = folder / "z.safetensors", folder / "report.json"
    command = f"zip {MLP_A} {MLP_B} --out {out} --report {report} --json" + QUICK
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main(command.split()) == 0
    return stdout.getvalue(), out, report


def test_train_writes_a_checkpoint_with_its_task(tmp_path, capsys):
    out = tmp_path / "m" / "moons.safetensors"
    command = f"train --model mlp --widths 8 --task moons --iterations 30 --lr 0.1 --out {out}"
    code, stdout, err = run(capsys, command + " --json --no-progress")
    assert code == 0, err
    result = json.loads(stdout)
    model, card = load_checkpoint(out)
    assert card["task"] == "moons" and card["model_spec"].kwargs["widths"] == (8,)
    assert card["extra"]["accuracy"] == result["test"]["accuracy"] > 0.5
    assert card["extra"]["data_seed"] == 0 and card["extra"]["iterations"] == 30
    code, stdout, _ = run(capsys, f"eval {out} --no-progress")
    assert code == 0 and "moons: accuracy" in stdout


def test_zip_report_has_every_field(zipped):
    stdout, out, report_path = zipped
    printed, report = json.loads(stdout), json.loads(report_path.read_text())
    assert printed == report
    p = report["params"]
    assert p["saved"] == p["a"] + p["b"] - p["zipped"] > 0
    assert p["saved_fraction"] == pytest.approx(p["saved"] / (p["a"] + p["b"]))
    assert ZippedNet.load(out).num_parameters() == p["zipped"]
    assert [layer["name"] for layer in report["layers"]] == ["fc1", "fc2"]
    for layer, n in zip(report["layers"], (300, 100)):
        assert layer["n_a"] == layer["n_b"] == n and layer["shared"] == n // 2
        assert len(layer["pairs"]) == n // 2 and all(len(pr) == 2 for pr in layer["pairs"])
        costs = layer["pair_costs"]
        assert costs["min"] <= costs["mean"] <= costs["max"]
        assert layer["predicted_error"] > 0 and layer["heldout_error"] > 0
        assert layer["hessian"] == "exact" and layer["damping"] == ZipConfig.default_damping()
        assert layer["retrain_iterations"] == 0 and "hessian" in layer["seconds"]
        assert layer["pseudo_inverse"] is False  # damped: Cholesky
    acc = report["accuracy"]
    assert acc["original"]["a"]["accuracy"] == pytest.approx(MLP_A_TEST, abs=1e-4)
    assert acc["zipped_retrained"] is None and acc["zipped_no_retraining"]["b"]["accuracy"] > 0.9
    assert report["settings"]["share"] == 0.5 and report["settings"]["calib_samples"] == 128


def test_zip_takes_a_count_with_k_and_shows_the_solve(capsys):
    code, stdout, err = run(capsys, f"zip {MLP_A} {MLP_B} --k fc1=3 --damping 0" + QUICK)
    assert code == 0, err
    assert "k {'fc1': 3}" in stdout and "3/300" in stdout and "0/100" in stdout
    # damping 0 on 8×8 digits: the always-black border pixels make H_A + H_B singular
    assert "pseudo-inverse" in stdout.splitlines()[2]


def test_eval_reads_a_zipped_network_and_its_tasks(zipped, capsys):
    _, out, report_path = zipped
    report = json.loads(report_path.read_text())
    code, stdout, err = run(capsys, f"eval {out} --json --no-progress")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["kind"] == "zipped"
    for w, task in (("a", "digits:0-4"), ("b", "digits:5-9")):
        assert result["tasks"][w]["task"] == task
        assert result["tasks"][w] == report["accuracy"]["zipped_no_retraining"][w]
    code, stdout, _ = run(capsys, f"eval {MLP_A} --split test --json")
    assert code == 0 and json.loads(stdout)["accuracy"] == pytest.approx(MLP_A_TEST, abs=1e-4)


def test_zip_with_retraining_matches_the_sweep(capsys, tmp_path):
    """The CLI zips step by step (to score each layer); the result must be zip_models'."""
    command = f"zip {MOONS} {CIRCLES} --share 1.0 --retrain-iterations 3 --json"
    code, stdout, err = run(capsys, command + QUICK)
    assert code == 0, err
    report = json.loads(stdout)
    acc = report["accuracy"]
    assert acc["zipped_retrained"] is not None and report["retrain_samples"] == 3 * 2 * 2 * 64
    for layer in report["layers"]:
        assert layer["retrain_iterations"] == 3 and layer["retrain_samples"] == 3 * 2 * 64
        assert set(layer["accuracy"]) == {"after_zip", "after_retraining"}
    command = f"sweep {MOONS} {CIRCLES} --shares 1 --retrain-iterations 0,3 --json"
    code, stdout, err = run(capsys, command + QUICK)
    assert code == 0, err
    rows = {r["retrain_iterations"]: r for r in json.loads(stdout)["rows"] if r["share"] == 1}
    for key, its in (("zipped_retrained", 3), ("zipped_no_retraining", 0)):
        assert acc[key]["a"]["accuracy"] == rows[its]["acc_a"]
        assert acc[key]["b"]["accuracy"] == rows[its]["acc_b"]
    assert report["params"]["saved_fraction"] == pytest.approx(rows[3]["saved_fraction"])


def test_sweep_writes_its_files_and_prints_the_table(capsys, tmp_path):
    prefix = tmp_path / "out" / "sweep"
    command = f"sweep {MOONS} {CIRCLES} --shares 0.5,1 --methods mtz,euclidean --out {prefix}"
    code, stdout, err = run(capsys, command + QUICK)
    assert code == 0, err
    assert all((tmp_path / "out" / f"sweep.{ext}").is_file() for ext in ("csv", "html"))
    assert "original" in stdout and "euclidean" in stdout and "Pareto" in stdout
    assert "wrote" in stdout and "sweep.csv" in stdout


def test_demo_lists_and_copies(capsys, tmp_path):
    code, stdout, _ = run(capsys, "demo")
    assert code == 0 and "digits-mlp" in stdout and "moons-circles" in stdout
    code, stdout, _ = run(capsys, f"demo digits-mlp --out {tmp_path} --json")
    assert code == 0
    files = [Path(f) for f in json.loads(stdout)["files"]]
    assert [f.name for f in files] == ["a.safetensors", "b.safetensors"]
    assert load_checkpoint(files[1])[1]["task"] == "digits:5-9"


PAIR = f"{MLP_A} {MLP_B}"
TRAIN = "train --model mlp --task moons --out x.safetensors"
BAD = [
    ("unknown method", f"zip {PAIR} --method magic", 2, "invalid choice"),
    ("share too big", f"zip {PAIR} --share 1.5", 2, "--share: a share is a fraction"),
    ("share as a count", f"zip {PAIR} --share 3", 2, "to share 3 pairs use --k 3"),
    ("count as a fraction", f"zip {PAIR} --k 0.5", 2, "--k takes a number of pairs"),
    ("share and k", f"zip {PAIR} --share 0.5 --k 3", 2, "not allowed with argument"),
    ("k too big", f"zip {PAIR} --k 301", 1, "k=301 for layer 'fc1' is out of range"),
    ("share not a number", f"zip {PAIR} --share abc", 2, "'abc'"),
    ("share of no layer", f"zip {PAIR} --share fc9=0.5", 1, "fc9"),
    (
        "sweep share",
        f"sweep {PAIR} --shares 0.5,2",
        2,
        "in [0, 1], got '2'\n",
    ),
    ("sweep method", f"sweep {PAIR} --methods mtz,x", 2, "--methods"),
    ("missing file", f"zip {MLP_A} missing.safetensors", 1, "not found"),
    ("text file", f"zip {{notes.txt}} {MLP_B}", 1, "unsupported checkpoint extension"),
    ("text as safetensors", "eval {fake.safetensors}", 1, "not a valid .safetensors"),
    ("incompatible pair", f"zip {MLP_A} {CONV_A}", 1, "differ"),
    ("cuda", f"eval {MLP_A} --device cuda", 1, "CUDA is not available"),
    ("bad device", f"eval {MLP_A} --device tpu", 1, "unknown device"),
    ("unknown task", f"eval {MLP_A} --task nosuch:0-4", 2, "unknown dataset"),
    ("task of wrong size", f"eval {MLP_A} --task digits", 1, "expects inputs"),
    ("unknown model", "train --model resnet --task digits --out x.safetensors", 2, "choice"),
    ("negative iterations", TRAIN + " --iterations -5", 2, "-5"),
    ("negative retraining", f"zip {PAIR} --retrain-iterations -1", 2, "-1"),
    ("retraining per layer", f"zip {PAIR} --retrain-iterations 1,2,3", 1, "3 entries"),
    ("lr zero", f"zip {PAIR} --lr 0", 2, "positive"),
    ("option for no model", TRAIN.replace("mlp", "lenet300") + " --widths 3", 1, "option"),
    ("output not safetensors", TRAIN.replace(".safetensors", ".pt"), 2, ".safetensors"),
    ("no command", "", 2, "required"),
    ("unknown demo", "demo nope", 1, "unknown demo"),
    ("zipped net as a model", f"zip {{zipped}} {MLP_B}", 1, "zipped network"),
    ("zipped net with --task", "eval {zipped} --task digits:0-4", 2, "--task-a"),
    ("one checkpoint", f"zip {MLP_A}", 2, "zip needs 2 or more checkpoints"),
    ("too few tasks", f"zip {PAIR} {MLP_A} --tasks digits:0-4,digits:5-9", 2, "2 tasks for 3"),
    (
        "too many tasks",
        f"sweep {PAIR} --tasks digits,digits,digits",
        2,
        "3 tasks for 2 checkpoints",
    ),
    ("--task-a with three", f"zip {PAIR} {MLP_A} --task-a digits:0-4", 2, "--task-a/--task-b"),
    ("--task-b with three", f"sweep {PAIR} {MLP_A} --task-b digits:0-4", 2, "use --tasks"),
    ("--tasks and --task-a", f"zip {PAIR} --tasks digits,digits --task-a digits", 2, "combined"),
    ("--tasks, one task", f"eval {MLP_A} --tasks digits:0-4", 2, "use --task, not --tasks"),
    ("bad task in --tasks", f"zip {PAIR} --tasks digits:0-4,nosuch", 2, "unknown dataset"),
    ("empty task in --tasks", f"zip {PAIR} --tasks digits:0-4,", 2, "separated by commas"),
    ("zipped net, task count", "eval {zipped} --tasks digits:0-4", 2, "1 task for 2 tasks"),
    ("dataset files missing", TRAIN.replace("moons", "mnist") + " --data-root {empty}", 1, "mnist"),
]


@pytest.mark.parametrize("command, code, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_arguments_give_one_error_line(command, code, message, tmp_path, capsys, zipped):
    if "--device cuda" in command and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    for name in ("notes.txt", "fake.safetensors"):
        (tmp_path / name).write_text("not a checkpoint\n")
    (tmp_path / "empty").mkdir()
    files = {"notes.txt": tmp_path / "notes.txt", "fake.safetensors": tmp_path / "fake.safetensors"}
    files.update(zipped=zipped[1], empty=tmp_path / "empty")
    for name, path in files.items():
        command = command.replace("{" + name + "}", str(path))
    got, out, err = run(capsys, command)
    assert got == code, err
    assert err.startswith("mtz: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err and out == ""
    assert "use --k" not in err or "zip" in command  # sweep has no --k to point to


def test_help_and_version(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "zip" in out and "sweep" in out
    code, out, _ = run(capsys, "zip --help")
    assert code == 0 and "--retrain-iterations" in out and "--share" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("mtz ")


def test_console_script_starts():
    script = shutil.which("mtz", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "mtz_core.cli"]
    proc = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: mtz" in proc.stdout and "train" in proc.stdout


def test_interrupts_and_unexpected_errors_stay_one_line(capsys, monkeypatch):
    import mtz_core.cli as cli

    def interrupted(run):
        raise KeyboardInterrupt

    def broken(run):
        raise KeyError("surprise")

    monkeypatch.setitem(cli.COMMANDS, "demo", interrupted)
    assert run(capsys, "demo") == (130, "", "mtz: interrupted\n")
    monkeypatch.setitem(cli.COMMANDS, "demo", broken)
    assert run(capsys, "demo") == (1, "", "mtz: error: KeyError: 'surprise'\n")
    monkeypatch.setenv("MTZ_DEBUG", "1")  # developers get the traceback back
    with pytest.raises(KeyError):
        main(["demo"])


def test_a_bare_state_dict_loads_with_model_and_task(tmp_path, capsys):
    """A .pt state dict from elsewhere (no card): --model names the architecture, the task gives
    the input shape and classes, and the zip equals the zip of the carded files."""
    for w, src in (("a", MLP_A), ("b", MLP_B)):
        torch.save(load_checkpoint(src)[0].state_dict(), tmp_path / f"{w}.pt")
    bare = f"zip {tmp_path / 'a.pt'} {tmp_path / 'b.pt'} --json" + QUICK
    code, _, err = run(capsys, bare)
    assert code == 1 and "--model" in err and "no model card" in err
    code, _, err = run(capsys, bare + " --model lenet300")
    assert code == 1 and "records no task" in err
    tasks = " --task-a digits:0-4 --task-b digits:5-9"
    code, out, err = run(capsys, bare + " --model lenet300" + tasks)
    assert code == 0, err
    code, ref, err = run(capsys, f"zip {MLP_A} {MLP_B} --json" + QUICK)
    assert code == 0, err
    got, want = json.loads(out), json.loads(ref)
    assert got["params"] == want["params"] and got["accuracy"] == want["accuracy"]
    assert [g["pairs"] for g in got["layers"]] == [w["pairs"] for w in want["layers"]]
    assert got["params"]["saved"] > 0 and got["accuracy"] == want["accuracy"]
    code, _, err = run(capsys, bare + " --model lenet300 --option widths=[30]" + tasks)
    assert code == 1 and "wrong shapes" not in err and "option" in err
    code, _, err = run(capsys, bare + " --model mlp --option widths=[30]" + tasks)
    assert code == 1 and "wrong shapes" in err and "fc1" in err.replace("'", "")


def test_a_bare_vgg_state_dict_is_padded_to_32(tmp_path, capsys):
    from mtz_core.models import create_model

    model = create_model("vgg11", (1, 32, 32), 10, width=0.0625, seed=0)
    torch.save(model.state_dict(), tmp_path / "v.pt")
    command = f"eval {tmp_path / 'v.pt'} --model vgg11 --option width=0.0625 --task digits --json"
    code, out, err = run(capsys, command + " --no-progress")
    assert code == 0, err
    assert 0 <= json.loads(out)["accuracy"] <= 1
    code, _, err = run(capsys, command + " --pad-to 16 --no-progress")
    assert code == 1 and "32" in err, err
    code, _, err = run(capsys, f"eval {MLP_A} --option width=2 --no-progress")
    assert code == 2 and "--model" in err


def test_zip_keeps_batch_norm_per_task_when_asked(capsys):
    code, stdout, err = run(
        capsys, f"zip {MLP_A} {MLP_B} --batch-norm keep --recalibrate --json" + QUICK
    )
    assert code == 0, err
    settings = json.loads(stdout)["settings"]
    assert (settings["batch_norm"], settings["recalibrate"]) == ("keep", True)
    code, _, err = run(capsys, f"zip {MLP_A} {MLP_B} --recalibrate" + QUICK)
    assert code == 1 and "needs batch_norm='keep'" in err


THREE = ("digits:0-3", "digits:4-6", "digits:7-9")


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Three small MLP checkpoints, one per digit subset, trained by `mtz train`."""
    folder = tmp_path_factory.mktemp("three")
    paths = []
    for seed, task in enumerate(THREE):
        out = folder / f"{task.replace(':', '_')}.safetensors"
        command = f"train --model mlp --widths 24,16 --task {task} --iterations 60 --lr 0.1"
        command += f" --seed {seed} --out {out} --no-progress --json"
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(command.split()) == 0
        paths.append(out)
    return paths


def _metadata(path) -> dict:
    """The `mtz zip` metadata of a zipped network file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["mtz_metadata"])


def test_a_two_task_file_keeps_the_old_keys_and_old_files_still_evaluate(zipped, tmp_path, capsys):
    _, out, _ = zipped
    meta = _metadata(out)
    assert meta["tasks"] == [meta["task_a"], meta["task_b"]] == ["digits:0-4", "digits:5-9"]
    assert meta["data"] == [meta["data_a"], meta["data_b"]]
    # a file from before T-task zips records only task_a/task_b and data_a/data_b
    old = tmp_path / "old.safetensors"
    keys = ("task_a", "task_b", "data_a", "data_b", "params", "accuracy", "settings")
    ZippedNet.load(out).save(old, metadata={k: meta[k] for k in keys})
    assert "tasks" not in _metadata(old)
    assert _eval_json(capsys, old)["tasks"] == _eval_json(capsys, out)["tasks"]


def _eval_json(capsys, path) -> dict:
    code, stdout, err = run(capsys, f"eval {path} --json --no-progress")
    assert code == 0, err
    return json.loads(stdout)


def test_three_checkpoints_at_share_0_keep_every_accuracy(three, tmp_path, capsys):
    out = tmp_path / "z0.safetensors"
    command = f"zip {' '.join(map(str, three))} --share 0 --out {out} --json" + QUICK
    code, stdout, err = run(capsys, command)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["params"]["saved"] == 0 and list(report["models"]) == ["a", "b", "c"]
    result = _eval_json(capsys, out)
    assert result["kind"] == "zipped" and list(result["tasks"]) == ["a", "b", "c"]
    for w, path, task in zip("abc", three, THREE):
        original = _eval_json(capsys, path)
        assert result["tasks"][w]["task"] == task
        assert result["tasks"][w]["accuracy"] == original["accuracy"]
        assert result["tasks"][w]["loss"] == pytest.approx(original["loss"], rel=1e-5)
        assert report["accuracy"]["original"][w]["accuracy"] == original["accuracy"]


def test_three_checkpoints_zip_retrain_and_eval(three, tmp_path, capsys):
    """Share 1 with retraining on all three tasks: the report, the file's metadata, `mtz eval`
    of the file and the sweep's row for the same zip agree."""
    files, out = " ".join(map(str, three)), tmp_path / "z1.safetensors"
    tasks = " --tasks " + ",".join(THREE)
    command = f"zip {files}{tasks} --share 1 --retrain-iterations 2 --out {out} --json" + QUICK
    code, stdout, err = run(capsys, command)
    assert code == 0, err
    report = json.loads(stdout)
    p = report["params"]
    assert list(p) == ["a", "b", "c", "zipped", "saved", "saved_fraction"]
    assert p["saved"] == p["a"] + p["b"] + p["c"] - p["zipped"] > 0
    assert p["saved_fraction"] == pytest.approx(p["saved"] / (p["a"] + p["b"] + p["c"]))
    assert ZippedNet.load(out).num_parameters() == p["zipped"]
    assert [m["task"] for m in report["models"].values()] == list(THREE)
    # 2 iterations after each of the 2 layers, one batch of 64 from every one of the 3 tasks
    assert report["retrain_samples"] == 2 * 2 * 3 * 64
    for layer, n in zip(report["layers"], (24, 16)):
        assert layer["widths"] == [n, n, n] and layer["shared"] == n
        assert len(layer["pairs"]) == n and all(len(pr) == 3 for pr in layer["pairs"])
        for when in ("after_zip", "after_retraining"):
            assert list(layer["accuracy"][when]) == ["a", "b", "c"]
    acc = report["accuracy"]
    for key in ("original", "zipped_no_retraining", "zipped_retrained"):
        assert [acc[key][w]["task"] for w in "abc"] == list(THREE)
    result = _eval_json(capsys, out)
    assert result["tasks"] == acc["zipped_retrained"]
    meta = _metadata(out)
    assert meta["tasks"] == list(THREE) and "task_a" not in meta and len(meta["data"]) == 3
    assert meta["accuracy"] == acc and meta["params"] == p
    code, stdout, err = run(
        capsys, f"sweep {files} --shares 1 --retrain-iterations 0,2 --json" + QUICK
    )
    assert code == 0, err
    rows = {r["retrain_iterations"]: r for r in json.loads(stdout)["rows"] if r["share"] == 1}
    for key, its in (("zipped_retrained", 2), ("zipped_no_retraining", 0)):
        assert [acc[key][w]["accuracy"] for w in "abc"] == [rows[its][f"acc_{w}"] for w in "abc"]
    assert p["saved_fraction"] == pytest.approx(rows[2]["saved_fraction"])


def test_tune_keeps_every_task_within_the_budget_and_writes_the_plan(tmp_path, capsys):
    """`mtz tune`: the plan's validation losses are within --max-drop, and the written zipped
    network, evaluated on the val split by `mtz eval`, has the accuracies the plan reports."""
    out, report_path = tmp_path / "tuned.safetensors", tmp_path / "tune.json"
    command = (
        f"tune {MLP_A} {MLP_B} --max-drop 2 --grid 0.5,1 --out {out} --report {report_path} "
        "--json" + QUICK
    )
    code, stdout, err = run(capsys, command)
    assert code == 0, err
    report = json.loads(stdout)
    plan = report["plan"]
    assert all(loss <= 2 + 1e-9 for loss in plan["losses_points"].values())
    assert json.loads(report_path.read_text())["plan"] == plan
    assert plan["trials"] and set(plan["shares"]) == {"fc1", "fc2"}
    if plan["saved_fraction"] > 0:
        code, stdout, err = run(capsys, f"eval {out} --split val --json")
        assert code == 0, err
        tasks = json.loads(stdout)["tasks"]
        for w in "ab":
            assert tasks[w]["accuracy"] == pytest.approx(plan["val_accuracy"][w])
    code, _, err = run(capsys, f"tune {MLP_A} {MLP_B} --max-drop 101" + QUICK)
    assert code == 2 and "--max-drop" in err


# ------------------------------------------------------------------- round trip with the app


@pytest.fixture(scope="module")
def app_zip():
    """The explorer's zip of the digits demo with fc1 zipped, as the Keep page holds it."""
    from explorer.loaded import demo_models
    from explorer.zipper import ZipState

    state = ZipState(demo_models("digits-mlp"))
    state.step(40)
    return state


def test_eval_reads_the_app_zipped_download_without_task_options(app_zip, tmp_path, capsys):
    """Issue 11 (9): `mtz eval` on the app's download failed with "records no task A" though
    the file named both tasks (in the app's own layout). Both the app's layout now and the one
    it wrote before load, with each task's accuracy as the app measured it."""
    from explorer.recipe import zipped_bytes, zipped_metadata

    pair = app_zip.pair
    early = {"title": pair.title, "tasks": pair.task_sources(), "shares": app_zip.shares()}
    for name, meta in (("now", zipped_metadata(pair, app_zip)), ("early", early)):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(zipped_bytes(app_zip, meta))
        code, stdout, err = run(capsys, f"eval {path} --json")
        assert code == 0, f"{name}: {err}"
        tasks = json.loads(stdout)["tasks"]
        assert [tasks[w]["task"] for w in "ab"] == ["digits:0-4", "digits:5-9"]
        for t, w in enumerate("ab"):
            assert tasks[w]["accuracy"] == pytest.approx(app_zip.accuracy[t], abs=1e-9)
        assert ZippedNet.load(path).n_tasks == 2  # and the Python API, without arguments


def test_app_metadata_matches_the_cli_layout(app_zip, zipped):
    """The keys `mtz zip` writes are the keys the app writes (the same reader serves both)."""
    from safetensors import safe_open

    from explorer.recipe import zipped_metadata

    _, cli_file, _ = zipped
    with safe_open(str(cli_file), framework="pt") as f:
        cli_meta = json.loads(f.metadata()["mtz_metadata"])
    app_meta = zipped_metadata(app_zip.pair, app_zip)
    for key in ("tasks", "data", "task_a", "task_b", "data_a", "data_b"):
        assert key in app_meta, key
    assert app_meta["tasks"] == cli_meta["tasks"]
    assert app_meta["data"][0]["data_seed"] == cli_meta["data"][0]["data_seed"]


def test_three_checkpoints_with_subsets_zip_save_and_eval(three, tmp_path, capsys):
    """--subsets: units shared by some of the tasks; the report records it, the file loads as
    the pool layout and `mtz eval` scores it as the report did."""
    out = tmp_path / "zs.safetensors"
    command = f"zip {' '.join(map(str, three))} --share 0.5 --subsets --out {out} --json" + QUICK
    code, stdout, err = run(capsys, command)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["settings"]["subsets"] is True
    net = ZippedNet.load(out)
    assert net.pooled and net.num_parameters() == report["params"]["zipped"]
    sets = {tuple(p) for p, _ in net.layers[1].sizes.out_pools}
    assert any(len(p) == 2 for p in sets) or (0, 1, 2) in sets
    assert _eval_json(capsys, out)["tasks"] == report["accuracy"]["zipped_no_retraining"]
    code, _, err = run(capsys, f"zip {' '.join(map(str, three))} --subsets --method zipit" + QUICK)
    assert code == 1 and "subsets=True is an option of method 'mtz'" in err
