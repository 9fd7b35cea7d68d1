"""The `mtz` commands: train, eval, zip, sweep, tune, demo (each takes the parsed arguments).

zip and sweep take 2 or more checkpoints, one per task; their tasks come from `--tasks` (any
number), `--task-a`/`--task-b` (exactly two) or the checkpoints' cards. Reports and zipped files
name the tasks by letter (a, b, c, ...: `mtz_core.training.TASK_LETTERS`).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..training import TASK_LETTERS
from .arguments import UsageError

__all__ = ["COMMANDS"]


class _Run:
    """What every command needs: the arguments, the device, output and loading helpers."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ..training import resolve_device

        self.args = args
        self.device = resolve_device(args.device)

    def say(self, text: str) -> None:
        if not self.args.json:
            print(text)

    def emit(self, result: dict[str, Any]) -> None:
        if self.args.json:
            print(json.dumps(_clean(result), indent=2))

    def bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=self.args.no_progress)

    def task(self, text: str, extra: dict[str, Any], shape: Any, classes: Any, where: str):
        """Load a task as the model saw it (same split seed and padding) and check the fit."""
        from ..data import load_task, parse_task

        info, pad_to = parse_task(text).info, extra.get("pad_to")
        if pad_to is None and shape is not None and info.kind == "image" and len(shape) == 3:
            pad_to = shape[1] if shape[1] > info.input_shape[1] else None  # e.g. VGG on MNIST
        seed = self.args.data_seed
        seed = int(extra.get("data_seed", 0)) if seed is None else seed
        task = load_task(text, data_root=self.args.data_root, seed=seed, pad_to=pad_to)
        if shape is not None and (task.input_shape != tuple(shape) or task.num_classes != classes):
            raise ValueError(
                f"task {task.name} gives inputs {task.input_shape} and {task.num_classes} "
                f"classes, but {where} expects inputs {tuple(shape)} and {classes} classes"
            )
        return task

    def checkpoint(self, path: str, task_text: str | None):
        """(model on the device, card, task) for a single-model checkpoint: the architecture
        from `--model` (with `--option`s) or else the file's card; the task from the command
        line or else the card."""
        from ..checkpoints import (
            EXPORTED_TASK_FORMAT,
            exported_task_problem,
            model_from_state_dict,
            read_state_dict,
        )
        from ..models import ModelSpec

        a = self.args
        if _zipped_metadata(path) is not None:
            raise ValueError(f"{path} is a zipped network; this needs single-model checkpoints")
        if a.model is None and (a.option or a.pad_to):
            raise UsageError("--option and --pad-to describe a --model; pass --model too")
        sd, card = read_state_dict(path)
        text = task_text or card.get("task")
        if a.model is None and card.get("format") == EXPORTED_TASK_FORMAT:
            raise ValueError(exported_task_problem(path))
        if a.model is None and card["model_spec"] is None:
            raise ValueError(
                f"{path} has no model card; name its architecture with --model (and its "
                "options with --option KEY=VALUE) and its task with --task / --tasks / --task-a "
                "/ --task-b"
            )
        if not text:
            raise ValueError(
                f"{path} records no task; name it with --task / --tasks / --task-a / --task-b"
            )
        if a.model is None:
            model, card = model_from_state_dict(sd, card)
            spec = card["model_spec"]
            task = self.task(text, card["extra"], spec.input_shape, spec.num_classes, path)
        else:
            task = self.task(text, {**card["extra"], "pad_to": self._pad_to(text)}, None, None, "")
            spec = ModelSpec.make(a.model, task.input_shape, task.num_classes, **dict(a.option))
            model, card = model_from_state_dict(sd, card, architecture=spec)
        return model.to(self.device).eval(), card, task

    def task_texts(self, count: int, what: str) -> list[str | None]:
        """The task named for each of `count` models (None: take the recorded one) from
        --tasks, or --task-a/--task-b (two models only, never with --tasks)."""
        a = self.args
        pair = [a.task_a, a.task_b]
        if a.tasks is not None:
            if any(pair):
                raise UsageError(
                    "--tasks cannot be combined with --task-a/--task-b; name every task in --tasks"
                )
            if len(a.tasks) != count:
                n = len(a.tasks)
                raise UsageError(
                    f"--tasks names {n} task{'s' * (n != 1)} for {count} {what}; give one each"
                )
            return list(a.tasks)
        if count != 2 and any(pair):
            raise UsageError(
                f"--task-a/--task-b name the tasks of exactly two models, but there are {count} "
                f"{what}; use --tasks TASK,TASK,... (one each)"
            )
        return pair if count == 2 else [None] * count

    def checkpoints(self) -> list[tuple[Any, dict[str, Any], Any]]:
        """(model, card, task) for every positional checkpoint of zip and sweep."""
        paths = self.args.checkpoints
        if len(paths) < 2:
            raise UsageError(
                f"{self.args.command} needs 2 or more checkpoints (one per task), got {len(paths)}"
            )
        texts = self.task_texts(len(paths), "checkpoints")
        return [self.checkpoint(path, text) for path, text in zip(paths, texts)]

    def _pad_to(self, task_text: str) -> int | None:
        """`--pad-to`, or for a VGG on images smaller than its five pools allow, that minimum
        (as the models' docs say: 28x28 MNIST is padded to 32x32)."""
        from ..data import parse_task
        from ..models.vgg import MIN_VGG_SIZE, VGG_VARIANTS

        info = parse_task(task_text).info
        small = info.kind == "image" and min(info.input_shape[1:]) < MIN_VGG_SIZE
        if self.args.pad_to is None and self.args.model in VGG_VARIANTS and small:
            return MIN_VGG_SIZE
        return self.args.pad_to

    def zip_data(self, task) -> tuple[list, list, Any]:
        """Calibration inputs, held-out test inputs, shuffled training batches (as `sweep`)."""
        a = self.args
        calib = [x for x, _ in task.batches("calib", a.batch_size, limit=a.calib_samples)]
        held = [x for x, _ in task.batches("val", a.batch_size, limit=a.heldout_samples)]
        return calib, held, task.batches("calib", a.batch_size, shuffle=True, seed=a.seed)


def _zipped_metadata(path: str) -> dict[str, Any] | None:
    """A zipped network file's metadata, or None when `path` is anything else."""
    from safetensors import safe_open

    if not str(path).lower().endswith(".safetensors") or not Path(path).is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # not safetensors at all: load_checkpoint says what it is
        return None
    return json.loads(meta.get("mtz_metadata") or "{}") if "mtz_spec" in meta else None


def _score(model, task, split: str = "test", index: int | None = None) -> dict[str, Any]:
    from ..evaluation import evaluate

    return dict(evaluate(model, task.batches(split, 256), task=index).to_dict(), task=task.name)


def _clean(obj: Any) -> Any:
    """JSON-ready: numpy to Python, paths to text, non-finite floats to null."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_clean(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    obj = obj.item() if isinstance(obj, np.generic) else obj
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return str(obj) if isinstance(obj, Path) else obj


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _describe(s: dict[str, Any], split: str) -> str:
    return f"accuracy {_pct(s['accuracy'])}, loss {s['loss']:.4f} ({split}, {s['samples']} samples)"


def cmd_train(run: _Run) -> int:
    from ..checkpoints import save_checkpoint
    from ..models import create_model
    from ..training import train

    a, t0 = run.args, time.perf_counter()
    extra = {"data_seed": a.data_seed or 0, "pad_to": a.pad_to}
    task = run.task(a.task, extra, None, None, "")
    options = dict(a.option)
    for key in ("widths", "width", "channels", "hidden", "dropout"):
        if getattr(a, key) is not None:
            options[key] = getattr(a, key)
    model = create_model(a.model, task.input_shape, task.num_classes, seed=a.seed, **options)
    bar = run.bar(a.iterations, f"train {a.model} on {task.name}")

    def progress(p) -> None:
        bar.update(p.iteration - bar.n)
        if p.iteration % 25 == 0 or p.iteration == p.total:
            bar.set_postfix(loss=f"{p.losses[0]:.4f}", refresh=False)

    data = task.batches("calib", a.batch_size, shuffle=True, seed=a.seed)
    options = dict(lr=a.lr, optimizer=a.optimizer, seed=a.seed, device=run.device)
    rep = train(model, data, iterations=a.iterations, progress=progress, **options)
    bar.close()
    score = _score(model.eval(), task)
    extra.update(accuracy=score["accuracy"], loss=score["loss"], iterations=rep.iterations)
    extra.update(lr=a.lr, batch_size=a.batch_size, optimizer=a.optimizer, seed=a.seed)
    save_checkpoint(model, None, a.out, task=task.name, extra=extra)
    seconds = time.perf_counter() - t0
    run.say(f"trained {model.mtz_spec.describe()} on {task.name}, {rep.iterations} iterations")
    run.say(f"test {_describe(score, 'test')}; {seconds:.1f} s; wrote {a.out}")
    run.emit(dict(out=a.out, model=model.mtz_spec.to_dict(), task=task.name, test=score, **extra))
    return 0


def cmd_eval(run: _Run) -> int:
    from ..zipped import ZippedNet

    a = run.args
    meta = _zipped_metadata(a.checkpoint)
    if meta is None:
        if a.task_a or a.task_b or a.tasks:
            raise UsageError(
                f"{a.checkpoint} is a single model: use --task, not --tasks or --task-a/-b"
            )
        model, _, task = run.checkpoint(a.checkpoint, a.task)
        score = _score(model, task, a.split)
        run.say(f"{task.name}: {_describe(score, a.split)}")
        run.emit(dict(path=a.checkpoint, kind="checkpoint", split=a.split, **score))
        return 0
    if a.task:
        raise UsageError(
            f"{a.checkpoint} is a zipped network: name its tasks with --tasks (or, for two, "
            "--task-a and --task-b)"
        )
    net, scores = ZippedNet.load(a.checkpoint, device=run.device), {}
    n = net.n_tasks
    given = run.task_texts(n, f"tasks in {a.checkpoint}")
    # files written before T-task zips record only task_a/task_b and data_a/data_b
    recorded = meta.get("tasks") or [meta.get(f"task_{w}") for w in "ab"]
    if isinstance(recorded, dict):  # the explorer's early downloads: {letter: {"task": ...}}
        recorded = [(recorded.get(w) or {}).get("task") for w in TASK_LETTERS[:n]]
    recorded = list(recorded)
    data = list(meta.get("data") or [meta.get(f"data_{w}") for w in "ab"])
    recorded, data = recorded + [None] * (n - len(recorded)), data + [None] * (n - len(data))
    for t, w in enumerate(TASK_LETTERS[:n]):
        text = given[t] or recorded[t]
        if not text:
            option = f"--task-{w}" if n == 2 else "--tasks"
            raise ValueError(f"{a.checkpoint} records no task {w.upper()}; pass {option}")
        shape, classes = net.architecture.input_shape, net.layers[-1].out_width(t)
        where = f"task {w.upper()} of {a.checkpoint}"
        task = run.task(text, data[t] or {}, shape, classes, where)
        scores[w] = _score(net, task, a.split, t)
        run.say(f"task {w.upper()} {task.name}: {_describe(scores[w], a.split)}")
    run.emit(dict(path=a.checkpoint, kind="zipped", split=a.split, tasks=scores))
    return 0


def _zip(run: _Run, models, tasks, data, iterations, score_layers: bool, checkpoint=None):
    """Zip with `zip_many`. With `score_layers`, every task is scored after each layer's zip
    and again after its retraining, which then runs here, from `after_step`, exactly as
    `zip_many` runs it (same data, seed and order)."""
    from ..pipeline import resolve_iterations, zip_many
    from ..progress import tqdm_progress

    a, letters = run.args, TASK_LETTERS[: len(models)]
    calibs, helds, trains = (list(part) for part in zip(*data))
    scores: dict[str, dict[str, Any]] = {}

    def every(model) -> dict[str, Any]:
        return {w: _score(model, tasks[t], index=t) for t, w in enumerate(letters)}

    def after_step(session, record) -> None:
        names = [name for name, *_ in session.hidden_layers]
        its = resolve_iterations(iterations, names)[record.name]
        scores[record.name] = {"after_zip": every(session.model)}
        if its:
            seed = a.seed + record.index
            session.retrain(*trains, iterations=its, lr=a.lr, seed=seed)
            scores[record.name]["after_retraining"] = every(session.model)

    # zip_many checks these zeros, shaped as given, against the layers before any work; the
    # retraining itself runs in after_step, once the layer is scored
    if isinstance(iterations, dict):
        unretrained: Any = dict.fromkeys(iterations, 0)
    elif isinstance(iterations, list):
        unretrained = [0] * len(iterations)
    else:
        unretrained = 0
    result = zip_many(
        models,
        calibs,
        share=a.share,
        k=a.k,
        method=a.method,
        matching=a.matching,
        hessian=a.hessian,
        flatten_hessian=a.flatten_hessian,
        damping=a.damping,
        seed=a.seed,
        batch_norm=a.batch_norm,
        recalibrate=a.recalibrate,
        within_model=a.within_model,
        output_weighted=a.output_weighted,
        zipit_alpha=a.zipit_alpha,
        zipit_beta=a.zipit_beta,
        subsets=a.subsets,
        device=run.device,
        progress=None if a.no_progress else tqdm_progress(),
        retrain_iterations=unretrained,
        heldout=helds,
        after_step=after_step if score_layers else None,
        checkpoint_dir=checkpoint,
    )
    for r in result.layers:
        scores.setdefault(r.name, {"after_zip": None})
    return result, scores


def _layer_report(record, scores: dict[str, Any]) -> dict[str, Any]:
    c = record.pair_costs
    costs = dict(min=c.min(), mean=c.mean(), max=c.max()) if c.size else None
    summary = dict(record.summary(), method=record.method, matching=record.matching)
    if record.widths:  # more than two models: every model's width (pairs: one column each)
        summary.update(widths=record.widths)
    summary.update(pairs=record.pairs, pair_costs=costs, lambdas=record.lambdas)
    summary.update(calib_samples=record.n_samples, damping_scores=record.damping_scores)
    summary.update(retrain_samples=record.retraining.samples if record.retraining else 0)
    return dict(summary, accuracy=scores)


def _across_processes(run: _Run, body: Callable[[], int]) -> int:
    """`--nproc N` (zip, sweep, tune): with N > 1 outside a launcher, run this same command in N
    processes through torchrun; under torchrun, initialise the process group, so every zip
    the command makes shares its Hessians and retraining between the ranks (each ends with the
    same network, equal to one process's: docs/distributed.md); rank 0 alone prints and
    writes files. One process: `body()` as is."""
    from .. import distributed

    a = run.args
    if a.nproc > 1 and not distributed.under_launcher():
        return distributed.launch(a.argv, a.nproc)  # torchrun runs this command N times
    try:
        run.device = distributed.init_from_env(run.device)  # under torchrun: the group
        if not distributed.is_main():  # rank 0 alone prints and writes
            a.no_progress, run.say, run.emit = True, lambda *_: None, lambda *_: None
        distributed.reset_counts()
        return body()
    finally:
        distributed.shutdown()


def cmd_zip(run: _Run) -> int:
    t0 = time.perf_counter()
    return _across_processes(run, lambda: _cmd_zip(run, run.args, t0))


def _cmd_zip(run: _Run, a, t0: float) -> int:
    from .. import distributed

    if a.share is None and a.k is None:
        a.share = 0.5  # the command's default
    loaded = run.checkpoints()
    models, tasks = [m for m, _, _ in loaded], [t for _, _, t in loaded]
    letters = TASK_LETTERS[: len(models)]
    data = [run.zip_data(task) for task in tasks]
    its = a.retrain_iterations
    retraining = any(its.values()) if isinstance(its, dict) else any(np.atleast_1d(its))
    checkpoint = None
    if a.checkpoint_every and a.checkpoint_dir is None:
        raise UsageError("--checkpoint-every needs --checkpoint-dir")
    if a.checkpoint_dir is not None:  # resumes a run of the same arguments killed before
        from ..resume import Checkpointer

        extra = dict(retrain_iterations=its, lr=a.lr, batch_size=a.batch_size, seed=a.seed)
        trains = [train for _, _, train in data]
        checkpoint = Checkpointer(a.checkpoint_dir, a.checkpoint_every, extra, sources=trains)
    result, scores = _zip(run, models, tasks, data, its, retraining, checkpoint)
    per_rank = distributed.gather_counts()  # what each rank streamed and trained on

    def final(model) -> dict[str, Any]:
        return {w: _score(model, tasks[t], index=t) for t, w in enumerate(letters)}

    accuracy = {"original": {w: _score(m, t) for w, m, t in zip(letters, models, tasks)}}
    accuracy["zipped_no_retraining"] = final(result.model)
    accuracy["zipped_retrained"] = None
    if retraining:
        # "Zipped, not retrained" is its own zip: with retraining on, each later layer's
        # Hessians are computed through the retrained earlier layers.
        accuracy["zipped_retrained"] = accuracy["zipped_no_retraining"]
        accuracy["zipped_no_retraining"] = final(_zip(run, models, tasks, data, 0, False)[0].model)
        accuracy["note"] = "zipped_no_retraining: a separate zip with retrain_iterations=0"
    from ..evaluation import param_summary

    params = param_summary(result.params)  # saved: over every original model
    sources = _sources(run, loaded)
    keys = ("share", "k", "method", "matching", "hessian", "flatten_hessian", "calib_samples")
    settings = {k: getattr(a, k) for k in (*keys, "heldout_samples", "batch_size", "lr", "seed")}
    settings.update(damping=result.config.damping, retrain_iterations=its, device=str(run.device))
    settings.update(batch_norm=a.batch_norm, recalibrate=a.recalibrate)
    settings.update(within_model=a.within_model, output_weighted=a.output_weighted)
    settings.update(subsets=a.subsets)
    if a.method == "zipit":
        settings.update(zipit_alpha=a.zipit_alpha, zipit_beta=a.zipit_beta)
    layers = [_layer_report(r, scores[r.name]) for r in result.layers]
    report = dict(models=sources, settings=settings, params=params, accuracy=accuracy)
    report.update(layers=layers, retrain_samples=result.retrain_samples, out=a.out)
    report.update(distributed=distributed.report_section(per_rank, letters))
    if a.out is not None and distributed.is_main():
        _save_zipped(a.out, result.model, tasks, sources, params, accuracy, settings)
    report.update(report=a.report, seconds=time.perf_counter() - t0)
    if distributed.is_main():
        _write_report(a.report, report)
    _print_zip(run, result, accuracy, params)
    run.emit(report)
    return 0


def _sources(run: _Run, loaded: list) -> dict[str, dict[str, Any]]:
    """Per task letter: the checkpoint, its task, architecture and data split."""
    return {
        w: dict(
            path=path,
            task=task.name,
            model=card["model_spec"].to_dict(),
            data=dict(data_seed=task.seed, pad_to=task.pad_to),
        )
        for w, path, (_, card, task) in zip(TASK_LETTERS, run.args.checkpoints, loaded)
    }


def _save_zipped(path: Path, model, tasks, sources, params, accuracy, settings) -> None:
    """A zipped network with the metadata `mtz eval` reads (every task and its data)."""
    meta: dict[str, Any] = {}
    letters = TASK_LETTERS[: len(tasks)]
    if len(tasks) == 2:  # the keys of two-task files, which older readers know
        meta.update(task_a=tasks[0].name, task_b=tasks[1].name)
        meta.update(data_a=sources["a"]["data"], data_b=sources["b"]["data"])
    meta.update(tasks=[t.name for t in tasks], data=[sources[w]["data"] for w in letters])
    meta.update(params=params, accuracy=accuracy, settings=settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path, metadata=_clean(meta))


def _write_report(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_clean(report), indent=2) + "\n")


def cmd_tune(run: _Run) -> int:
    t0 = time.perf_counter()
    return _across_processes(run, lambda: _cmd_tune(run, t0))


def _cmd_tune(run: _Run, t0: float) -> int:
    from .. import distributed
    from ..evaluation import param_summary
    from ..tune import tune_shares

    a = run.args
    loaded = run.checkpoints()
    models, tasks = [m for m, _, _ in loaded], [t for _, _, t in loaded]
    letters = TASK_LETTERS[: len(models)]
    bar = run.bar(1, "tune")

    def progress(done: int, total: int, text: str) -> None:
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix_str(text)

    keys = ("method", "matching", "hessian", "flatten_hessian", "batch_norm", "recalibrate")
    options = {k: getattr(a, k) for k in (*keys, "within_model", "zipit_alpha", "zipit_beta")}
    if a.damping is not None:
        options["damping"] = a.damping
    plan = tune_shares(
        models,
        tasks,
        max_drop_points=a.max_drop,
        grid=a.grid,
        retrain_iterations=a.retrain_iterations,
        calib_samples=a.calib_samples,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        device=run.device,
        progress=progress,
        **options,
    )
    bar.close()
    sources = _sources(run, loaded)
    summary = plan.summary()
    report = dict(models=sources, plan=summary, out=a.out, report=a.report)
    run.say(
        f"tuned {' + '.join(t.name for t in tasks)} within {a.max_drop:g} points on val "
        f"({len(plan.trials)} plans zipped, {plan.seconds:.1f} s):"
    )
    for name, share in plan.shares.items():
        err, saved = plan.estimates[name].get(share, (0.0, 0))
        run.say(
            f"  {name:<20} share {share:<5g} (alone: predicted error {err:.4g}, saves {saved:,})"
        )
    losses = ", ".join(
        f"{w.upper()} {100 * v:.2f}% (-{loss:.2f})"
        for w, v, loss in zip(letters, plan.val_accuracy, plan.losses_points)
    )
    run.say(f"saves {_pct(plan.saved_fraction)} of the originals; val accuracy {losses}")
    if a.out is not None:
        if plan.result is None:
            run.say(f"no share fits {a.max_drop:g} points: {a.out} not written")
        elif distributed.is_main():
            accuracy = {"val": dict(zip(letters, plan.val_accuracy))}
            settings = dict(shares=plan.shares, max_drop=a.max_drop, **options)
            params = param_summary(plan.result.params)
            _save_zipped(a.out, plan.result.model, tasks, sources, params, accuracy, settings)
            run.say(f"wrote {a.out}")
    report.update(seconds=time.perf_counter() - t0)
    report.update(world_size=distributed.world_size())
    if distributed.is_main():
        _write_report(a.report, report)
    run.emit(report)
    return 0


def _print_zip(run: _Run, result, accuracy: dict[str, Any], params: dict[str, Any]) -> None:
    a = run.args
    letters = TASK_LETTERS[: result.model.n_tasks]
    upper = [w.upper() for w in letters]
    how = f"k {a.k}" if a.k is not None else f"share {a.share}"
    run.say(f"zipped {' + '.join(a.checkpoints)} ({a.method}, {how}):")
    header = f"  {'layer':<12}{'shared':>12}{'predicted':>12}{'held-out':>12}{'retrained':>10}"
    run.say(header + "  solve")
    for r in result.layers:
        held = "-" if r.heldout_error is None else f"{r.heldout_error:.4g}"
        narrowest = min(r.widths or (r.n_a, r.n_b))
        its, shared = r.retraining.iterations if r.retraining else 0, f"{r.k}/{narrowest}"
        solve = "pseudo-inverse" if r.pseudo_inverse else "cholesky"
        row = f"  {r.name:<12}{shared:>12}{r.predicted_error:>12.4g}{held:>12}{its:>10}"
        run.say(f"{row}  {solve}")
    errors = " + ".join(f"E_{u}" for u in upper)
    run.say(
        f"  predicted: {errors} increase on the Hessian samples; held-out: the same on "
        "validation inputs"
    )
    labels = dict(original="original", zipped_no_retraining="zipped", zipped_retrained="retrained")
    for key, label in labels.items():
        if accuracy[key] is not None:
            accs = (f"{u} {_pct(accuracy[key][w]['accuracy'])}" for w, u in zip(letters, upper))
            run.say(f"  {label:<10} accuracy {', '.join(accs)}")
    originals = " + ".join(f"{u} {params[w]:,}" for w, u in zip(letters, upper))
    run.say(
        f"  parameters: {originals} -> zipped {params['zipped']:,}, "
        f"saved {params['saved']:,} ({_pct(params['saved_fraction'])})"
    )
    for label, path in (("zipped network", a.out), ("report", a.report)):
        if path is not None:
            run.say(f"  wrote {label} {path}")


def cmd_sweep(run: _Run) -> int:
    return _across_processes(run, lambda: _cmd_sweep(run))


def _cmd_sweep(run: _Run) -> int:
    from .. import distributed
    from ..extras import require

    a = run.args
    require("pandas", "sweep", "mtz sweep")
    if a.out:
        require("plotly", "sweep", "mtz sweep --out")
    from ..sweep import image_engine_problem, pareto_front, save_sweep, sweep_many, sweep_tasks

    loaded = run.checkpoints()
    models, tasks = [m for m, _, _ in loaded], [t for _, _, t in loaded]
    bar = run.bar(1 + len(a.shares) * len(a.methods) * len(a.retrain_iterations), "sweep")

    def progress(done: int, _total: int, text: str) -> None:
        bar.update(done - bar.n)
        bar.set_postfix_str(text)

    keys = ("calib_samples", "heldout_samples", "batch_size", "lr", "damping", "matching")
    options = {k: getattr(a, k) for k in (*keys, "hessian", "flatten_hessian", "seed")}
    options.update(batch_norm=a.batch_norm, recalibrate=a.recalibrate)
    options.update(zipit_alpha=a.zipit_alpha, zipit_beta=a.zipit_beta)
    grid = dict(shares=a.shares, methods=a.methods, retrain_iterations=a.retrain_iterations)
    df = sweep_many(models, tasks, **grid, **options, device=run.device, progress=progress)
    bar.close()
    files = save_sweep(df, a.out) if a.out and distributed.is_main() else []
    png = None
    if files and not any(f.suffix == ".png" for f in files):
        png = image_engine_problem() or "the image engine failed (see the log)"
    df["pareto"] = pareto_front(df)
    accs = [f"acc_{w}" for w in sweep_tasks(df)]
    cols = ["method", "share", "retrain_iterations", "saved_fraction", *accs]
    table = df[[*cols, "mean_acc"]].assign(pareto=df["pareto"].map({True: "*", False: ""}))
    table = table.rename(columns={"retrain_iterations": "retrain"})
    pct = dict.fromkeys(("saved_fraction", *accs, "mean_acc"), _pct)
    names = " + ".join(t.name for t in tasks)
    run.say(f"sweep of {names} ({len(df) - 1} zips; * = Pareto front):")
    run.say(table.to_string(index=False, formatters=pct))
    for line in [f"wrote {f}" for f in files] + ([f"no PNG: {png}"] if png else []):
        run.say(line)
    rows = df.to_dict("records")
    run.emit(dict(rows=rows, files=files, png_skipped=png, world_size=distributed.world_size()))
    return 0


def _demo_tasks(demo) -> tuple[str, ...]:
    """Every model's task of a demo: a pair's two, or a set's (A, B, then the further ones)."""
    return tuple(getattr(demo, "tasks", (demo.task_a, demo.task_b)))


def cmd_demo(run: _Run) -> int:
    from ..demo import ASSETS_DIR, DEMOS, build_demo

    a = run.args
    if a.name is None:
        if a.out is not None:
            raise UsageError("--out needs a demo NAME; `mtz demo` lists them")
        run.say("demos (`mtz demo NAME --out DIR` writes one's checkpoints to DIR):")
        for d in DEMOS.values():
            tasks = ", ".join(f"{w.upper()} {t}" for w, t in zip(TASK_LETTERS, _demo_tasks(d)))
            run.say(f"  {d.name:<15} {d.title}\n  {'':<15} {d.model}: {tasks}")
        run.emit({"demos": [dict(vars(d), folder=ASSETS_DIR / d.name) for d in DEMOS.values()]})
        return 0
    if a.name not in DEMOS:
        raise ValueError(f"unknown demo {a.name!r}; the demos are {', '.join(DEMOS)}")
    folder, out, built = ASSETS_DIR / a.name, a.out or ASSETS_DIR / a.name, False
    letters = TASK_LETTERS[: len(_demo_tasks(DEMOS[a.name]))]
    names = [f"{w}.{ext}" for ext in ("safetensors", "json") for w in letters]
    shipped = all((folder / n).is_file() for n in names)
    if a.out is None and not shipped:
        raise ValueError(f"demo {a.name!r} is not shipped at {folder}; pass --out DIR to train it")
    if a.out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for n in names if shipped else ():
            shutil.copyfile(folder / n, out / n)
        if not shipped:  # train it with its fixed seeds: the same files as shipped ones
            build_demo(a.name, out)
            built = True
    files = [out / f"{w}.safetensors" for w in letters]
    run.say(f"{a.name}: {DEMOS[a.name].title}")
    run.say("\n".join(f"  {'trained' if built else 'checkpoint'} {f}" for f in files))
    run.say(f"try: mtz zip {' '.join(map(str, files))} --share 0.5 --out zipped.safetensors")
    run.emit(dict(name=a.name, files=files, built=built, demo=vars(DEMOS[a.name])))
    return 0


COMMANDS = dict(
    train=cmd_train, eval=cmd_eval, zip=cmd_zip, sweep=cmd_sweep, tune=cmd_tune, demo=cmd_demo
)
