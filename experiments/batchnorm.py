"""Batch norm folded vs kept per task (± recalibration): the VGG-11-BN pair of docs/results.md.

    python -m experiments.batchnorm --data-root ../shared/data/mnist   # writes its own page

Same originals as `experiments.paper` (cached in cache/originals/), same data roles: Hessians and
retraining on `calib`, every choice on `val`, `test` only reports. Each seed pair is fully zipped
(share 1.0, every hidden layer), retraining after each layer, in three ways: the defaults
(lr RETRAIN_LR, gradient norm clipped), and the originals' learning rate without a clip.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence

import torch

from mtz_core import ZipSession
from mtz_core.training import RETRAIN_CLIP, RETRAIN_LR, TrainingDiverged

from . import originals as orig
from .paper import QUICK, Pair, Setup, mean_std, pairs_for
from .report import Report, page_arguments

MODES = (
    ("fold", {"batch_norm": "fold"}),
    ("keep", {"batch_norm": "keep"}),
    ("keep + recalibrate", {"batch_norm": "keep", "recalibrate": True}),
)
#: the originals' learning rate (experiments.originals' VGG recipe)
ORIGINALS_LR = orig.RECIPES["vgg11_bn"].lr


def _zip(pair: Pair, options: dict, its: int, lr: float | None, clip: float | None):
    """Full zip with `its` retraining iterations after each layer (lr None: none)."""
    ca, cb = pair.calib()
    session = ZipSession(pair.a, pair.b, ca, cb, **options)
    tra, trb = pair.train(pair.seed)
    while not session.done:
        session.step(share=1.0)
        if lr is not None:
            session.retrain(tra, trb, iterations=its, lr=lr, clip_grad_norm=clip)
    return session


def _cells(pair: Pair, net) -> tuple[float, float]:
    va, vb = pair.accuracy(net, "val")
    ta, tb = pair.accuracy(net)
    return (va + vb) / 2, (ta + tb) / 2


def batch_norm_table(report: Report, pairs: list[Pair], its: int) -> None:
    runs = (
        ("zipped, not retrained", None, None),
        (
            f"retrained, lr {RETRAIN_LR:g}, clip {RETRAIN_CLIP:g} (defaults)",
            RETRAIN_LR,
            RETRAIN_CLIP,
        ),
        (f"retrained, lr {ORIGINALS_LR:g} (the originals'), no clip", ORIGINALS_LR, None),
    )
    rows, val_by_mode = [], {}
    for mode, options in MODES:
        for label, lr, clip in runs:
            vals, tests, diverged = [], [], 0
            for pair in pairs:
                try:
                    session = _zip(pair, options, its, lr, clip)
                except TrainingDiverged:
                    diverged += 1
                    continue
                v, t = _cells(pair, session.model)
                vals.append(v)
                tests.append(t)
            if lr == RETRAIN_LR:  # a diverged seed counts as chance level: never chosen
                val_by_mode[mode] = statistics.mean(vals + [0.0] * diverged)
            if diverged:
                note = f"diverged ({diverged} of {len(pairs)} seeds)"
                cells = (
                    [note, note]
                    if not vals
                    else [
                        f"{mean_std(vals)}; {note}",
                        f"{mean_std(tests)}; {note}",
                    ]
                )
            else:
                cells = [mean_std(vals), mean_std(tests)]
            rows.append([mode, label, *cells])
            print(" | ".join(rows[-1]), flush=True)
    report.table(
        f"Batch norm folded or kept per task: VGG-11-BN (width 1/8) pairs on MNIST 0–4 vs 5–9, "
        f"every hidden layer fully zipped, {pairs[0].setup.calib:,} Hessian samples per task, "
        f"{its} retraining iterations per layer: mean accuracy of the two tasks, %",
        ["batch norm", "run", "val (chooses)", "test (reports)"],
        rows,
    )
    report.choice(
        "batch norm (fold, keep, keep + recalibrate)",
        "fold",
        val_by_mode,
        "after retraining with the defaults",
        prefer=lambda m: 0 if m == "fold" else 1,
        why="the simpler network",
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = page_arguments(__doc__, "results-batchnorm.md", argv)
    setup = Setup()
    if args.quick:
        setup = dataclasses.replace(QUICK, originals=orig.quick_original)
    t0 = time.perf_counter()
    report = Report(
        args.quick,
        module="experiments.batchnorm",
        title="Results: batch norm folded or kept per task",
    )
    vgg = pairs_for("vgg11_bn", "mnist:0-4", "mnist:5-9", setup, args.data_root)
    batch_norm_table(report, vgg, setup.vgg_retrain)
    report.choices_summary()
    report.write(args, dataclasses.replace(setup, calib=setup.vgg_calib), t0)


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
