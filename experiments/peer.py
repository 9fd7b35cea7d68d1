"""MTZ against the best peer: ZipIt! (its α and β chosen on validation data), MTZ with
within-model merges, and the baselines, on LeNet-300-100 pairs; writes docs/results-peer.md.

    python -m experiments.peer --data-root ../shared/data/mnist        # the tables (~40 min)
    python -m experiments.peer --quick --out /tmp/results-peer.md       # CI's reduced run

Pairs and data roles as in experiments.paper: same task (two MNIST LeNet-300-100 from different
seeds) and different tasks (MNIST 0–4 vs 5–9). Hessians, feature correlations and retraining
use each task's `calib` split; every choice (ZipIt!'s α and β per pair kind and share, whether
within-model merges become the default) is made on the `val` split; the `test` split only
reports. `saved` is `ZipResult.saved_fraction` (of the two originals' parameters): a merge
inside one model also shrinks the next layer's rows of that model, so at one share the
methods store different amounts, and the tables say how much.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mtz_core import tune_shares, zip_models

from . import originals as orig
from .paper import Pair, mean_std, pairs_for
from .report import Report, page_arguments


@dataclass(frozen=True)
class PeerSetup:
    seeds: int = 3
    calib: int = 4096
    shares: tuple[float, ...] = (0.5, 1.0)
    retrain: int = 300
    alphas: tuple[float, ...] = (0.0, 0.3, 0.5)
    betas: tuple[float, ...] = (0.125, 0.5, 1.0)
    val_limit: int | None = None
    test_limit: int | None = None
    heldout: int = 1000
    tune: bool = True
    originals: object = None


QUICK = PeerSetup(
    seeds=1,
    calib=512,
    shares=(1.0,),
    retrain=20,
    alphas=(0.3,),
    betas=(0.125, 1.0),
    val_limit=500,
    test_limit=1000,
    heldout=200,
    tune=False,
)

HEAD = (
    "Mean accuracy of the two tasks, % (mean ± std over 3 seeds: pairs of originals and "
    "retraining seeds). `val`: the validation split, carved from the training data, on which "
    "ZipIt!'s α and β are chosen per pair kind and share (the grid is listed above each "
    "kind's tables); `test`: the test split, which only reports. `saved %` is "
    "`ZipResult.saved_fraction` of the two originals: ZipIt! and within-model merges store "
    "different amounts at one share (a merge inside a model also shrinks that model's next "
    "layer), so compare along both columns. Methods: docs/method.md."
)

#: why within-model merges stay an option (see the generated comparison above it)
WITHIN_DEFAULT = (
    "The issue's rule makes within-model merges the default where they measure better on "
    "validation data, and on these two-model chains they do. They stay an option "
    "(`within_model=True`, `mtz zip --within-model`) for now because they are defined for two "
    "models, chains, batch norm folded: making them the default for those models only would "
    "give `method='mtz'` two behaviours by architecture, and the per-share preview that the "
    "explorer's Costs and Step pages and `tune_shares` read covers one-to-one pairs. Extending "
    "them to residual streams, kept batch norm and three or more models is the step that "
    "lets them become the default everywhere."
)

#: the methods compared besides ZipIt!: label -> zip_models options
OURS = {
    "mtz": {},
    "mtz, within-model": {"within_model": True},
    "mtz, output-weighted": {"output_weighted": True},
    "random": {"method": "random"},
    "euclidean": {"method": "euclidean"},
}


def _pairs(kind: str, setup: PeerSetup, data_root: str) -> list[Pair]:
    """The paper experiment's pairs, built with its Setup (same caches, same splits)."""
    from .paper import Setup

    base = Setup(
        seeds=setup.seeds,
        calib=setup.calib,
        val_limit=setup.val_limit,
        test_limit=setup.test_limit,
        heldout=setup.heldout,
        originals=setup.originals,
    )
    tasks = ("mnist", "mnist") if kind == "same task" else ("mnist:0-4", "mnist:5-9")
    return pairs_for("lenet300", *tasks, base, data_root)


def _zip(pair: Pair, share: float, options: dict, retrain: int) -> dict:
    ca, cb = pair.calib()
    tra, trb = pair.train(pair.seed)
    t0 = time.perf_counter()
    result = zip_models(
        pair.a,
        pair.b,
        ca,
        cb,
        share=share,
        seed=pair.seed,
        retrain_iterations=retrain,
        train_a=tra,
        train_b=trb,
        **options,
    )
    val, test = pair.accuracy(result.model, "val"), pair.accuracy(result.model)
    return {
        "val": sum(val) / 2,
        "test": sum(test) / 2,
        "saved": result.saved_fraction,
        "shared": [r.k for r in result.layers],
        "seconds": time.perf_counter() - t0,
    }


def _summary(runs: Sequence[dict], key: str) -> float:
    return statistics.mean(r[key] for r in runs)


def before_retraining(report: Report, kind: str, pairs: list[Pair], setup: PeerSetup) -> dict:
    """ZipIt! at every (α, β) of the grid and our methods, no retraining; returns the best
    validated ZipIt! options per share and every method's runs."""
    best: dict[float, dict] = {}
    runs: dict[tuple[str, float], list[dict]] = {}
    rows = []
    for share in setup.shares:
        scores = {}
        for a in setup.alphas:
            for b in setup.betas:
                opts = {"method": "zipit", "zipit_alpha": a, "zipit_beta": b}
                got = [_zip(p, share, opts, 0) for p in pairs]
                scores[(a, b)] = (_summary(got, "val"), got)
        (a, b), (_, got) = max(scores.items(), key=lambda kv: kv[1][0])
        best[share] = {"method": "zipit", "zipit_alpha": a, "zipit_beta": b}
        runs[(f"zipit (α={a:g}, β={b:g}, best on val)", share)] = got
        default = scores.get((0.3, 0.125))
        if default is not None and (a, b) != (0.3, 0.125):
            runs[("zipit (α=0.3, β=0.125, its code's default)", share)] = default[1]
        for label, opts in OURS.items():
            runs[(label, share)] = [_zip(p, share, opts, 0) for p in pairs]
        grid = ", ".join(
            f"({a:g}, {b:g}) {100 * v:.2f}" for (a, b), (v, _) in sorted(scores.items())
        )
        report.note(f"ZipIt! on {kind}, share {share:g}, mean val accuracy % by (α, β): {grid}")
    for (label, share), got in runs.items():
        rows.append(
            [
                label,
                f"{share:g}",
                mean_std([r["saved"] for r in got]),
                mean_std([r["val"] for r in got]),
                mean_std([r["test"] for r in got]),
                " / ".join(
                    str(round(statistics.mean(r["shared"][i] for r in got))) for i in range(2)
                ),
            ]
        )
    report.table(
        f"{kind.capitalize()}: before retraining, LeNet-300-100, {setup.calib:,} calibration "
        "samples per task (mean of the two tasks, %)",
        ["method", "share", "saved %", "val", "test", "shared units fc1 / fc2"],
        rows,
    )
    return {"best": best, "runs": runs}


def after_retraining(
    report: Report, kind: str, pairs: list[Pair], setup: PeerSetup, best: dict
) -> dict:
    runs = {}
    for share in setup.shares:
        methods = dict(OURS)
        z = best[share]
        methods[f"zipit (α={z['zipit_alpha']:g}, β={z['zipit_beta']:g})"] = z
        for label, opts in methods.items():
            runs[(label, share)] = [_zip(p, share, opts, setup.retrain) for p in pairs]
    rows = [
        [
            label,
            f"{share:g}",
            mean_std([r["saved"] for r in got]),
            mean_std([r["val"] for r in got]),
            mean_std([r["test"] for r in got]),
        ]
        for (label, share), got in runs.items()
    ]
    report.table(
        f"{kind.capitalize()}: after retraining ({setup.retrain} iterations per layer, batch 32 "
        "per task), mean of the two tasks, %",
        ["method", "share", "saved %", "val", "test"],
        rows,
    )
    return runs


def tune_table(report: Report, pairs: list[Pair]) -> None:
    """tune_shares with a 1-point budget: the saved fraction and the test accuracy kept."""
    rows = []
    for p in pairs:
        t0 = time.perf_counter()
        plan = tune_shares([p.a, p.b], [p.task_a, p.task_b], max_drop_points=1.0)
        test = p.accuracy(plan.result.model)
        orig_test = p.original_accuracy()
        rows.append(
            [
                p.seed,
                f"{100 * plan.saved_fraction:.2f}",
                ", ".join(f"{k}={v:g}" for k, v in plan.shares.items()),
                " / ".join(f"{100 * v:.2f}" for v in orig_test),
                " / ".join(f"{100 * v:.2f}" for v in test),
                f"{time.perf_counter() - t0:.0f}",
            ]
        )
    report.table(
        "tune_shares, 1-point budget on the validation split (different tasks, no retraining)",
        ["pair", "saved %", "shares", "originals test A / B", "tuned test A / B", "seconds"],
        rows,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = page_arguments(__doc__, "results-peer.md", argv)
    setup = QUICK if args.quick else PeerSetup()
    if args.quick:
        setup = dataclasses.replace(setup, originals=orig.quick_original)
    t0 = time.perf_counter()
    report = Report(
        args.quick,
        module="experiments.peer",
        title="Results: MTZ against ZipIt! and with within-model merges",
        head=HEAD,
    )
    verdicts, better = [], []
    for kind in ("different tasks", "same task"):
        pairs = _pairs(kind, setup, args.data_root)
        before = before_retraining(report, kind, pairs, setup)
        after = after_retraining(report, kind, pairs, setup, before["best"])
        for share in setup.shares:
            zipit_label = next(k for k, s in before["runs"] if s == share and "best on val" in k)
            mtz, within = (
                before["runs"][("mtz", share)],
                before["runs"][("mtz, within-model", share)],
            )
            zipit = before["runs"][(zipit_label, share)]
            verdicts.append(
                f"- {kind}, share {share:g}, before retraining (test): mtz "
                f"{100 * _summary(mtz, 'test'):.2f} ({100 * _summary(mtz, 'saved'):.1f}% saved), "
                f"mtz within-model {100 * _summary(within, 'test'):.2f} "
                f"({100 * _summary(within, 'saved'):.1f}%), {zipit_label} "
                f"{100 * _summary(zipit, 'test'):.2f} ({100 * _summary(zipit, 'saved'):.1f}%)"
            )
            for phase, runs in (("before", before["runs"]), ("after", after)):
                gain = _summary(runs[("mtz, within-model", share)], "val") - _summary(
                    runs[("mtz", share)], "val"
                )
                better.append(f"{kind}, share {share:g}, {phase} retraining {100 * gain:+.2f}")
            lead = {k: _summary(v, "test") for (k, s), v in after.items() if s == share}
            verdicts.append(
                f"- {kind}, share {share:g}, after retraining (test): "
                + ", ".join(f"{k} {100 * v:.2f}" for k, v in lead.items())
            )
        if kind == "different tasks" and setup.tune:
            tune_table(report, pairs)
    report.note("### Summary\n\n" + "\n".join(verdicts))
    report.note(
        "### Within-model merges as the default?\n\n"
        "Mean validation accuracy, within-model merges minus one-to-one MTZ (points): "
        + "; ".join(better)
        + ".\n\n"
        + WITHIN_DEFAULT
    )
    report.write(args, setup, t0)


if __name__ == "__main__":
    main()
