"""ResNet-20 pairs on MNIST 0–4 vs 5–9: full zip and shares, before and after retraining,
against every baseline; writes docs/results-resnet.md.

    python -m experiments.originals --data-root ../shared/data/mnist   # once: train, cache
    python -m experiments.resnet --data-root ../shared/data/mnist      # the page
    python -m experiments.resnet --quick --out /tmp/resnet.md           # CI's reduced run

Same originals cache and data roles as `experiments.paper`: Hessians and retraining on `calib`,
every choice on `val`, `test` only reports. A ResNet is zipped one channel group at a time (every
layer writing one residual stream shares one matching; each block's inner convolution is a group
of its own), with joint retraining after each group at the project's defaults (lr RETRAIN_LR,
gradient norm clipped at RETRAIN_CLIP, batch 32 per task). Batch norm folded or kept per task is
chosen on the validation split first (the full zip after retraining), and the rest of the page
uses the chosen one.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mtz_core import ZipSession, train
from mtz_core.config import MANY_METHODS as METHODS  # zipit: chains of two models only
from mtz_core.models import create_model
from mtz_core.training import RETRAIN_CLIP, RETRAIN_LR, TrainingDiverged

from . import originals as orig
from .paper import Pair, Setup, mean_std, pairs_for
from .report import Report, page_arguments

ARCH = "resnet20"
TASKS = ("mnist:0-4", "mnist:5-9")
BATCH_NORMS = ("fold", "keep")


@dataclass(frozen=True)
class ResnetSetup(Setup):
    """Sizes of the full run, chosen so that it takes about 70 minutes on 2 shared CPU cores
    (see the page's closing note for what a zip and an iteration cost there)."""

    calib: int = 256  # Hessian samples per task
    shares: tuple[float, ...] = (0.5, 0.75, 1.0)  # MTZ's shares
    baseline_shares: tuple[float, ...] = (0.5, 1.0)  # every method at these shares
    retrain: int = 10  # retraining iterations after each channel group (batch 32 per task)


QUICK = ResnetSetup(
    seeds=1,
    calib=64,
    shares=(1.0,),
    baseline_shares=(1.0,),
    retrain=1,
    val_limit=300,
    test_limit=300,
)


@dataclass
class Run:
    """One zip of one pair (or the unzipped pair retrained): its network, its parameters and
    both tasks' test accuracy; validation accuracy is measured only where a choice needs it."""

    model: torch.nn.Module | None
    params: dict[str, int]
    saved_fraction: float
    test: tuple[float, float] | None
    samples: int  # retraining samples, both tasks together
    step_seconds: float
    retrain_seconds: float
    diverged: str | None = None
    val: tuple[float, float] | None = None
    pairs: tuple[frozenset, ...] = ()  # each zipped group's pairs (i of A, j of B)

    @property
    def identity_fraction(self) -> float | None:
        """The share of pairs that join channel i of A with channel i of B."""
        total = sum(len(g) for g in self.pairs)
        return sum(i == j for g in self.pairs for i, j in g) / total if total else None


class ResnetPair(Pair):
    """A pair of originals with memoised runs: the tables repeat configurations (the batch-norm
    table's full zips are the zip table's and the baseline table's mtz rows)."""

    def __init__(self, pair: Pair):
        super().__init__(pair.a, pair.b, pair.task_a, pair.task_b, pair.setup, pair.seed)
        self._runs: dict[tuple, Run] = {}
        self._original: tuple[float, float] | None = None

    def original_accuracy(self) -> tuple[float, float]:
        if self._original is None:
            self._original = super().original_accuracy()
        return self._original

    def run(self, share: float, *, method="mtz", batch_norm="keep", retrain_its=0) -> Run:
        """Zip every channel group at `share` (0: no zip) with `retrain_its` iterations of joint
        retraining after each group."""
        key = (share, method, batch_norm, retrain_its)
        if key not in self._runs:
            t0 = time.perf_counter()
            self._runs[key] = self._run(*key)
            r = self._runs[key]
            print(
                f"  seed {self.seed} share {share:g} {method} {batch_norm} retrain {retrain_its}: "
                f"test {r.test}, saved {100 * r.saved_fraction:.2f}%, steps "
                f"{r.step_seconds:.0f} s, retraining {r.retrain_seconds:.0f} s, all "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        return self._runs[key]

    def session(self, method="mtz", batch_norm="keep") -> ZipSession:
        ca, cb = self.calib()
        return ZipSession(
            self.a, self.b, ca, cb, method=method, batch_norm=batch_norm, seed=self.seed
        )

    def _run(self, share, method, batch_norm, its) -> Run:
        session = self.session(method, batch_norm)
        train_a, train_b = self.train(self.seed)
        step_s = retrain_s = 0.0
        samples = 0
        for index in range(len(session.groups)):
            t0 = time.perf_counter()
            if share > 0:
                session.step(share=share)
            t1 = time.perf_counter()
            step_s += t1 - t0
            if its:
                try:
                    rep = session.retrain(
                        train_a,
                        train_b,
                        iterations=its,
                        lr=RETRAIN_LR,
                        clip_grad_norm=RETRAIN_CLIP,
                        seed=self.seed + index,
                    )
                except TrainingDiverged as exc:
                    res = session.result()
                    return Run(None, res.params, res.saved_fraction, None, 0, step_s, 0.0, str(exc))
                samples += rep.samples
                retrain_s += time.perf_counter() - t1
        res = session.result()
        model = res.model.eval()
        return Run(
            model,
            res.params,
            res.saved_fraction,
            self.accuracy(model),
            samples,
            step_s,
            retrain_s,
            pairs=tuple(frozenset(map(tuple, r.pairs.tolist())) for r in res.layers),
        )

    def val_of(self, run: Run) -> tuple[float, float] | None:
        if run.model is not None and run.val is None:
            run.val = self.accuracy(run.model, "val")
        return run.val


def resnet_pairs(setup: ResnetSetup, data_root: str) -> list[ResnetPair]:
    """Pair s: A is task A's original s, B task B's original s + seeds, so that the two start
    from different initial weights (models start from seed 1000 + s) and their channels are not
    aligned by construction."""
    pairs = pairs_for(ARCH, *TASKS, setup, data_root, b_offset=setup.seeds)
    return [ResnetPair(p) for p in pairs]


def _mean(pair_of: tuple[float, float]) -> float:
    return (pair_of[0] + pair_of[1]) / 2


def originals_table(report: Report, pairs: list[ResnetPair]) -> None:
    """The originals this page zips (the cached ones' training record; the test accuracy is
    measured again here)."""
    if report.quick:
        report.note(
            "*Quick run (CI): originals trained briefly, 1 seed, reduced sizes — the numbers "
            "only show that the pipeline runs.*"
        )
        return
    recipe = orig.RECIPES[ARCH]
    rows = []
    for which, task in enumerate(TASKS):
        infos = []
        for p in pairs:
            seed = p.seed + (len(pairs) if which else 0)
            stem = f"{ARCH}-{task.replace(':', '_')}-seed{seed}"
            path = orig.CACHE / f"{stem}.json"
            if path.exists():
                infos.append(json.loads(path.read_text()))
        accs = [p.original_accuracy()[which] for p in pairs]
        secs = sum(i["train_seconds"] for i in infos)
        rows.append(
            [
                task,
                len(pairs),
                f"{100 * min(accs):.2f}–{100 * max(accs):.2f}",
                f"{infos[0]['iterations']:,}" if infos else "—",
                f"{secs:.0f}" if infos else "—",
            ]
        )
    options = ", ".join(f"{k} {v}" for k, v in recipe.options)
    params = sum(q.numel() for q in pairs[0].a.parameters())
    report.table(
        f"The originals: ResNet-20 ({options}: 8/16/32 channels, {params:,} parameters each), "
        "trained once and cached in cache/originals/",
        ["task", "models", "test accuracy %", "iterations (batch 128)", "training s (all models)"],
        rows,
    )
    task = pairs[0].task_a
    data = task.batches("calib", recipe.batch_size, shuffle=True, seed=0)
    per_it = {w: _training_iteration_seconds(task, data, w) for w in (1.0, 0.5)}
    epochs_s = recipe.epochs * len(data) * per_it[1.0]
    report.note(
        f"Trained by `python -m experiments.originals` ({recipe.epochs:g} epochs of SGD, momentum "
        f"0.9, batch 128, lr {recipe.lr:g} cosine-decayed). Width 0.5, not the standard 1: "
        f"measured in this run, a training iteration takes {per_it[1.0]:.2f} s at width 1 and "
        f"{per_it[0.5]:.2f} s at width 0.5 on these shared cores (the recipe: "
        f"{epochs_s / 60:.1f} minutes per original at width 1), and every zip and retraining "
        "step of this page would cost more in proportion; at width 0.5 the page fits its budget "
        "of about 70 minutes."
    )


def _training_iteration_seconds(task, data, width: float, iterations: int = 5) -> float:
    """Seconds per training iteration of a fresh ResNet-20 at `width` (after one warm-up)."""
    options = {**dict(orig.RECIPES[ARCH].options), "width": width}
    model = create_model(ARCH, task.input_shape, task.num_classes, **options)
    train(model, data, iterations=1, lr=0.01, device=None)
    t0 = time.perf_counter()
    train(model, data, iterations=iterations, lr=0.01, device=None)
    return (time.perf_counter() - t0) / iterations


def groups_note(report: Report, pair: ResnetPair, batch_norm: str) -> None:
    session = pair.session(batch_norm=batch_norm)
    parts = [f"`{g.name}` ({len(g.members)})" for g in session.groups]
    streams = sum(len(g.members) > 1 for g in session.groups)
    report.note(
        f"The zip steps through {len(session.groups)} channel groups (layers per group in "
        f"brackets): {', '.join(parts)}. The {streams} groups with several layers are the "
        "residual streams of the three stages (the stem or a stage's first block, and every "
        "block's second convolution, which the shortcuts add together); the others are each "
        "block's inner convolution. The heads stay per task."
    )


def batch_norm_table(report: Report, pairs: list[ResnetPair], its: int) -> str:
    """Batch norm folded vs kept per task on MTZ's full zip; the choice (validation accuracy
    after retraining) is what the rest of the page uses."""
    rows, val_last = [], {}
    stages = [(0, "zipped, not retrained")] + ([(its, f"retrained ({its}/group)")] if its else [])
    for mode in BATCH_NORMS:
        for retrain_its, label in stages:
            runs = [p.run(1.0, batch_norm=mode, retrain_its=retrain_its) for p in pairs]
            ok = [(p, r) for p, r in zip(pairs, runs) if r.diverged is None]
            vals = [_mean(p.val_of(r)) for p, r in ok]
            tests = [_mean(r.test) for _, r in ok]
            diverged = len(runs) - len(ok)
            # the last stage chooses; a diverged seed counts as chance level: never chosen
            val_last[mode] = statistics.mean(vals + [0.0] * diverged)
            cells = [mean_std(vals) if vals else "—", mean_std(tests) if tests else "—"]
            if diverged:
                cells = [f"{c}; diverged ({diverged} of {len(runs)} seeds)" for c in cells]
            rows.append(
                [
                    mode,
                    label,
                    f"{100 * statistics.mean(r.saved_fraction for r in runs):.2f}",
                    *cells,
                ]
            )
    report.table(
        f"Batch norm folded or kept per task: ResNet-20 pairs on MNIST 0–4 vs 5–9, MTZ's full "
        f"zip (share 1), {pairs[0].setup.calib:,} Hessian samples per task: mean accuracy of the "
        "two tasks, %",
        ["batch norm", "run", "saved_fraction %", "val (chooses)", "test (reports)"],
        rows,
    )
    return report.choice(
        "batch norm (fold, keep) for the ResNet-20 pair",
        "fold",
        val_last,
        "MTZ's full zip after retraining" if its else "MTZ's full zip (no retraining)",
        prefer=lambda m: 0 if m == "fold" else 1,
        why="the simpler network",
    )


def zip_table(report: Report, pairs: list[ResnetPair], setup: ResnetSetup, bn: str) -> None:
    """MTZ per share: before zipping, zipped, and zipped with retraining after each group; the
    first row retrains the unzipped pair for the same iterations."""
    its = setup.retrain
    orig_acc = [p.original_accuracy() for p in pairs]
    before = [mean_std([a for a, _ in orig_acc]), mean_std([b for _, b in orig_acc])]
    rows = []
    for share in (0.0, *setup.shares):
        zipped = orig_acc if share == 0.0 else [p.run(share, batch_norm=bn).test for p in pairs]
        runs = [p.run(share, batch_norm=bn, retrain_its=its) for p in pairs]
        done = [r.test for r in runs if r.diverged is None]
        note = "" if len(done) == len(runs) else f" ({len(runs) - len(done)} diverged)"
        res = runs[0]
        rows.append(
            [
                "none (retrain only)" if share == 0.0 else f"{share:g}",
                mean_std([r.saved_fraction for r in runs]),
                f"{res.params['zipped']:,} / {res.params['a'] + res.params['b']:,}",
                *before,
                mean_std([a for a, _ in zipped]),
                mean_std([b for _, b in zipped]),
                (mean_std([a for a, _ in done]) if done else "—") + note,
                (mean_std([b for _, b in done]) if done else "—") + note,
                f"{statistics.mean(r.samples for r in runs):,.0f}",
            ]
        )
    report.table(
        f"MTZ on ResNet-20 pairs, MNIST 0–4 vs 5–9 (5-way heads), batch norm {bn}, "
        f"{setup.calib:,} Hessian samples per task, test accuracy %",
        [
            "share",
            "saved_fraction %",
            "parameters stored (zipped / A + B)",
            "A before",
            "B before",
            "A zipped",
            "B zipped",
            f"A retrained ({its}/group)",
            f"B retrained ({its}/group)",
            "retraining samples",
        ],
        rows,
    )


def baseline_table(report: Report, pairs: list[ResnetPair], setup: ResnetSetup, bn: str) -> None:
    """Every pairing method of the engine at equal shares, before and after retraining."""
    its = setup.retrain
    rows = []
    for share in setup.baseline_shares:
        for method in METHODS:
            plain = [p.run(share, method=method, batch_norm=bn) for p in pairs]
            zipped = [_mean(r.test) for r in plain]
            runs = [p.run(share, method=method, batch_norm=bn, retrain_its=its) for p in pairs]
            same = [r.identity_fraction for r in (*plain, *runs) if r.identity_fraction is not None]
            done = [_mean(r.test) for r in runs if r.diverged is None]
            after = mean_std(done) if done else "—"
            if len(done) < len(runs):
                after += f" ({len(runs) - len(done)} of {len(runs)} diverged)"
            rows.append(
                [
                    f"{share:g}",
                    method,
                    mean_std([r.saved_fraction for r in runs]),
                    f"{100 * statistics.mean(same):.1f}" if same else "—",
                    mean_std(zipped),
                    after,
                ]
            )
    report.table(
        f"Baselines at equal shares (ResNet-20, MNIST 0–4 vs 5–9, batch norm {bn}): mean test "
        "accuracy of the two tasks, % (mtz: Hessian pairs and Hessian-weighted merge; mtz-avg: "
        "MTZ's pairs, plain average; euclidean: closest incoming vectors, plain average; "
        "random: random pairs, plain average)",
        [
            "share",
            "method",
            "saved_fraction %",
            "pairs i↔i %",
            "before retraining",
            f"after retraining ({its}/group)",
        ],
        rows,
    )
    agree = total = 0
    before_equal = True
    for share in setup.baseline_shares:
        for p in pairs:
            for retrain_its in (0, its):
                mtz = p.run(share, batch_norm=bn, retrain_its=retrain_its)
                euc = p.run(share, method="euclidean", batch_norm=bn, retrain_its=retrain_its)
                total += len(mtz.pairs)
                agree += sum(x == y for x, y in zip(mtz.pairs, euc.pairs))
                if not retrain_its:
                    avg = p.run(share, method="mtz-avg", batch_norm=bn)
                    before_equal &= avg.test == euc.test
    same = "."
    if agree == total:
        same = (
            " (as sets; picked in another order, which only permutes the shared units), so "
            "euclidean zips the network mtz-avg zips up to that permutation"
            + (": before retraining the two rows agree to the last digit" if before_equal else "")
            + "; after retraining they differ only by float32 rounding, which the order of the "
            "units changes and retraining amplifies."
        )
    report.note(
        "pairs i↔i: the share of pairs that join channel i of A with channel i of B, over every "
        "group and seed, before and after retraining. The two networks of a pair start from "
        "different initial weights (A is task A's original s, B task B's original s + "
        f"{len(pairs)}; `experiments.originals` initialises model s with seed 1000 + s), so "
        "a high share means the matching found alignment, not that the networks began "
        "aligned (an earlier run with one seed per pair gave ~99%). Euclidean "
        f"pairing chose exactly MTZ's pairs in {agree} of {total} zipped groups{same}"
    )


def cost_note(report: Report, pairs: list[ResnetPair], setup: ResnetSetup) -> None:
    runs = [r for p in pairs for r in p._runs.values()]
    zips = [r.step_seconds for r in runs if r.step_seconds > 0]
    trained = [r for r in runs if r.samples]
    if not zips or not trained:
        return
    per_it = statistics.mean(r.retrain_seconds * 64 / r.samples for r in trained)
    zip_s = statistics.mean(zips)
    report.note(
        f"What the run cost on these cores: a zip of every group took {zip_s:.0f} s on average "
        f"({setup.calib:,} Hessian samples per task: Hessians, costs, matching, merge), a "
        f"retraining iteration (a batch of 32 per task) {per_it:.2f} s. Retraining after each "
        f"group uses the project's defaults, chosen on the validation split for LeNet-300-100 "
        f"and VGG-11 in docs/results.md (lr {RETRAIN_LR:g}, plain SGD, gradient norm clipped "
        f"at {RETRAIN_CLIP:g}); {setup.retrain} iterations per group is what the run's budget "
        "allowed (it is sized for about 70 minutes on 2 busy shared cores), not a choice on "
        "validation."
    )


def run_tables(report: Report, pairs: list[ResnetPair], setup: ResnetSetup) -> str:
    """Every table after the originals; returns the chosen batch norm."""
    bn = batch_norm_table(report, pairs, setup.retrain)
    groups_note(report, pairs[0], bn)
    zip_table(report, pairs, setup, bn)
    baseline_table(report, pairs, setup, bn)
    cost_note(report, pairs, setup)
    return bn


def main(argv: Sequence[str] | None = None) -> None:
    args = page_arguments(__doc__, "results-resnet.md", argv)
    setup = ResnetSetup()
    if args.quick:
        setup = dataclasses.replace(QUICK, originals=orig.quick_original)
    t0 = time.perf_counter()
    report = Report(
        args.quick,
        module="experiments.resnet",
        title="Results: zipping residual networks (ResNet-20, MNIST 0–4 vs 5–9)",
    )
    pairs = resnet_pairs(setup, args.data_root)
    originals_table(report, pairs)
    run_tables(report, pairs, setup)
    report.choices_summary()
    report.write(args, setup, t0)


if __name__ == "__main__":
    main()
