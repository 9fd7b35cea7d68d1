"""The MTZ paper's experiments, reproduced with this project's defaults; writes docs/results.md.

    python -m experiments.originals --data-root ../shared/data/mnist   # once: train, cache
    python -m experiments.paper --data-root ../shared/data/mnist       # the tables (minutes)
    python -m experiments.paper --quick --out /tmp/results.md           # CI's reduced run

Every number is a mean ± std over seeds: pairs of originals (different training seeds) and
retraining seeds. Data roles: Hessians and retraining use each task's `calib` split (what the
originals were trained on); every default the tables choose (damping, learning rate, momentum,
gradient clip) is chosen on the `val` split, carved from the training data; the `test` split
only reports. The held-out layer error is measured on validation images.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from mtz_core import ZipConfig, ZipResult, evaluate, evaluate_zipped, retrain, zip_models
from mtz_core.data import Task
from mtz_core.demo import load_demo
from mtz_core.training import RETRAIN_CLIP, RETRAIN_LR, TrainingDiverged

from . import originals as orig
from .report import Report, page_arguments


@dataclass(frozen=True)
class Setup:
    """Sizes of a run: the full one, or CI's quick one."""

    seeds: int = 3
    calib: int = 4096  # Hessian samples per task
    shares: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    retrain: int = 300  # retraining iterations per layer (batch 32 per task)
    # LeNet-5 and VGG cost 5-15x more per sample on the CPU: fewer shares, Hessian samples and
    # retraining iterations keep the whole run under 15 minutes on 2 cores
    lenet5_shares: tuple[float, ...] = (0.5, 1.0)
    lenet5_calib: int = 1024
    lenet5_retrain: int = 100
    vgg_shares: tuple[float, ...] = (0.5, 1.0)
    vgg_calib: int = 512
    vgg_retrain: int = 30
    vgg_lr_iterations: int = 150
    val_limit: int | None = None  # validation images per task for the choices (None: all)
    fresh_cap: int = 12000  # iterations at most when training a fresh network
    fresh_every: int = 1000
    test_limit: int | None = None
    heldout: int = 1000  # held-out samples for the measured layer error
    damping_samples: tuple[int, ...] = (256, 1024, 4096)
    damping_grid: tuple[float | str, ...] = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 3.0, 10.0, "auto")
    lenet5: bool = True
    vgg: bool = True
    retrain_lrs: tuple[float, ...] = (0.01, 0.02, 0.03, 0.05)
    damping_retrain: bool = True  # the damping table's "after retraining" column
    originals: Callable | None = field(default=None, compare=False)


QUICK = Setup(
    seeds=1,
    calib=1024,
    shares=(0.5, 1.0),
    retrain=30,
    lenet5_shares=(1.0,),
    lenet5_calib=256,
    lenet5_retrain=10,
    vgg_shares=(1.0,),
    vgg_calib=256,
    vgg_retrain=10,
    vgg_lr_iterations=20,
    fresh_cap=600,
    fresh_every=200,
    test_limit=2000,
    val_limit=1000,
    heldout=500,
    damping_samples=(256, 1024),
    retrain_lrs=(0.01, 0.02),
    damping_grid=(1e-4, 0.1, "auto"),
)


@dataclass(frozen=True)
class Outcome:
    """One zip and the accuracies of both tasks on the test split (reports) and on the
    validation split (what the tables choose defaults by)."""

    result: ZipResult
    test: tuple[float, float]
    val: tuple[float, float]

    @property
    def test_mean(self) -> float:
        return (self.test[0] + self.test[1]) / 2

    @property
    def val_mean(self) -> float:
        return (self.val[0] + self.val[1]) / 2


#: the ResNet experiment writes its own page; this one links to it
RESNET_POINTER = (
    "### Residual networks: ResNet-20 pairs ([results-resnet.md](results-resnet.md))\n\n"
    "`python -m experiments.resnet` zips ResNet-20 pairs trained on MNIST 0–4 and 5–9 "
    "one channel group at a time (a residual stream's layers share one matching), "
    "batch norm kept per task or folded as chosen on the validation split, against "
    "every baseline; it writes its own page, [results-resnet.md](results-resnet.md), "
    "with the numbers."
)

#: the comparison with ZipIt! writes its own page; this one links to it
PEER_POINTER = (
    "### Against ZipIt!, and merges inside one model ([results-peer.md](results-peer.md))\n\n"
    "`python -m experiments.peer` compares MTZ with the ZipIt! baseline (`method='zipit'`, its "
    "α and β chosen on the validation split) and with MTZ's within-model merges "
    "(`within_model=True`) on same-task and different-task LeNet-300-100 pairs, before and "
    "after retraining, with the parameters each stores, and runs `tune_shares` with a 1-point "
    "budget; it writes its own page, [results-peer.md](results-peer.md), with the numbers."
)

#: the three-task experiment writes its own page; this one links to it
MANY_POINTER = (
    "### Three tasks: three LeNet-300-100 zipped into one ([results-many.md](results-many.md))\n\n"
    "`python -m experiments.many` zips three LeNet-300-100, trained from different "
    "initialisations on MNIST 0–3, 4–6 and 7–9, into one network whose shared units serve all "
    "three tasks (`zip_many`): shares 0.25 to 1 before and after retraining, every baseline, "
    "the zipping order chosen on the validation split, and each pair of the three zipped "
    "alone for reference; it writes its own page, [results-many.md](results-many.md), with "
    "the numbers."
)


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    vals = [v * scale for v in values]
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


class Pair:
    """Two originals and their tasks, with the data the experiments feed the engine."""

    def __init__(self, a, b, task_a: Task, task_b: Task, setup: Setup, seed: int):
        self.a, self.b, self.task_a, self.task_b, self.setup, self.seed = (
            a,
            b,
            task_a,
            task_b,
            setup,
            seed,
        )
        self._zips: dict[tuple, Outcome] = {}

    def calib(self, n: int | None = None) -> tuple[list, list]:
        n = n or self.setup.calib
        return tuple(
            [x for x, _ in t.batches("calib", 512, limit=n)] for t in (self.task_a, self.task_b)
        )

    def heldout(self) -> tuple[list, list]:
        """Validation images (inputs only) for the held-out layer error."""
        h = self.setup.heldout
        return tuple(
            [x for x, _ in t.batches("val", 500, limit=h)] for t in (self.task_a, self.task_b)
        )

    def val(self) -> tuple:
        lim = self.setup.val_limit
        return tuple(t.batches("val", 1000, limit=lim) for t in (self.task_a, self.task_b))

    def train(self, seed: int) -> tuple:
        return tuple(
            t.batches("calib", 32, shuffle=True, seed=seed) for t in (self.task_a, self.task_b)
        )

    def test(self) -> tuple:
        lim = self.setup.test_limit
        return tuple(t.batches("test", 1000, limit=lim) for t in (self.task_a, self.task_b))

    def original_accuracy(self) -> tuple[float, float]:
        ta, tb = self.test()
        return evaluate(self.a, ta).accuracy, evaluate(self.b, tb).accuracy

    def accuracy(self, net, split: str = "test") -> tuple[float, float]:
        """Both tasks' accuracy of a zipped network on `split` ("test" or "val")."""
        sa, sb = evaluate_zipped(net, *(self.test() if split == "test" else self.val()))
        return sa.accuracy, sb.accuracy

    def zip(
        self, share, *, method="mtz", retrain_its=0, damping=None, calib=None, seed=None, lr=None
    ) -> Outcome:
        """The zip and its test and validation accuracies; memoised, since tables repeat
        configurations (the baseline table's mtz rows, the damping table's default) and a zip
        is deterministic."""
        damping = ZipConfig.default_damping() if damping is None else damping
        lr = RETRAIN_LR if lr is None else lr
        key = (share, method, retrain_its, damping, calib or self.setup.calib, seed, lr)
        if key not in self._zips:
            self._zips[key] = self._zip(*key)
        return self._zips[key]

    def _zip(self, share, method, retrain_its, damping, calib, seed, lr):
        seed = self.seed if seed is None else seed
        ca, cb = self.calib(calib)
        ha, hb = self.heldout()
        tra, trb = self.train(seed)
        result = zip_models(
            self.a,
            self.b,
            ca,
            cb,
            share=share,
            method=method,
            damping=damping,
            seed=seed,
            retrain_iterations=retrain_its,
            lr=lr,
            train_a=tra,
            train_b=trb,
            heldout_a=ha,
            heldout_b=hb,
        )
        return Outcome(result, self.accuracy(result.model), self.accuracy(result.model, "val"))


def reinitialize(net: torch.nn.Module, seed: int) -> None:
    """PyTorch's default Linear/Conv init (U(±1/√fan_in)) for every block of a ZippedNet."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in net.layers:
            sizes = layer.sizes
            per = layer.spec.kernel_positions if layer.spec.kind == "conv" else layer.spec.positions
            fan_in = (sizes.in_shared + max(sizes.in_own)) * per
            bound = 1.0 / math.sqrt(max(1, fan_in))
            for p in layer.parameters():
                p.copy_(torch.rand(p.shape, generator=g) * 2 * bound - bound)


def fresh_training_cost(pair: Pair, result, target: float, seed: int) -> tuple[int, bool]:
    """Training samples a freshly initialised network of the zipped architecture needs to reach
    mean test accuracy `target` (same batch size and lr as retraining); (samples, reached)."""
    net = result.model.clone()
    reinitialize(net, seed)
    tra, trb = pair.train(seed + 100)
    ta, tb = pair.test()
    done, setup = 0, pair.setup
    while done < setup.fresh_cap:
        retrain(net, tra, trb, iterations=setup.fresh_every, seed=seed + done)
        done += setup.fresh_every
        sa, sb = evaluate_zipped(net, ta, tb)
        if (sa.accuracy + sb.accuracy) / 2 >= target:
            return done * 64, True
    return done * 64, False


def pairs_for(
    arch: str, task_a: str, task_b: str, setup: Setup, data_root: str, b_offset: int = 0
) -> list[Pair]:
    """Pair s: originals s of either task; with `b_offset`, task B's original s + b_offset (a
    different initialisation from A's, since model s starts from seed 1000 + s)."""
    calib = {"lenet5": setup.lenet5_calib, "vgg11_bn": setup.vgg_calib}.get(arch, setup.calib)
    setup = dataclasses.replace(setup, calib=calib)
    get = setup.originals or orig.get_original
    ta = orig.task_for(arch, task_a, data_root)
    tb = ta if task_b == task_a else orig.task_for(arch, task_b, data_root)
    out = []
    for s in range(setup.seeds):
        if task_a == task_b:  # same task: two originals with different seeds
            a, b = get(arch, ta, 2 * s)[0], get(arch, tb, 2 * s + 1)[0]
        else:
            a, b = get(arch, ta, s)[0], get(arch, tb, s + b_offset)[0]
        out.append(Pair(a, b, ta, tb, setup, seed=s))
    return out


def zip_table(report: Report, title: str, pairs: list[Pair], shares, retrain_its: int, fresh: bool):
    """Before zipping / after zipping / after retraining per share, plus the no-sharing row.

    With `fresh`, one network of the fully zipped architecture (the same for every seed pair) is
    trained from scratch until it reaches the mean accuracy the retrained pairs reached.
    Returns {share: {"before": (a, b), "zipped": (a, b), "retrained": (a, b), "ratio": r}}
    (means over seeds) for the targets check.
    """
    rows, out = [], {}
    orig_acc = [p.original_accuracy() for p in pairs]
    base = [mean_std([a for a, _ in orig_acc]), mean_std([b for _, b in orig_acc])]
    avg = lambda xs: tuple(statistics.mean(x[i] for x in xs) for i in (0, 1))  # noqa: E731
    for share in (0.0, *shares):
        zipped, retrained, saved, costs, results = [], [], [], [], []
        for p, before in zip(pairs, orig_acc):
            if share == 0.0:  # retraining alone, no sharing: the fair reference
                zipped.append(before)
            else:
                zipped.append(p.zip(share).test)
            done = p.zip(share, retrain_its=retrain_its)
            res = done.result
            retrained.append(done.test)
            saved.append(res.saved_fraction)
            costs.append(res.retrain_samples)
            results.append(res)
        ratio_text, ratio, reached = "—", None, None
        if fresh and share == 1.0:
            target = statistics.mean(avg(retrained))
            samples, reached = fresh_training_cost(pairs[0], results[0], target, seed=0)
            ratio = samples / statistics.mean(costs)
            ratio_text = ("" if reached else "≥ ") + f"{ratio:.1f}×"
        rows.append(
            [
                "none (retrain only)" if share == 0.0 else f"{share:g}",
                mean_std(saved),
                *base,
                mean_std([a for a, _ in zipped]),
                mean_std([b for _, b in zipped]),
                mean_std([a for a, _ in retrained]),
                mean_std([b for _, b in retrained]),
                f"{statistics.mean(costs):,.0f}",
                ratio_text,
            ]
        )
        out[share] = {
            "before": avg(orig_acc),
            "zipped": avg(zipped),
            "retrained": avg(retrained),
            "ratio": ratio,
            "reached": reached,  # False: the fresh network hit fresh_cap first (ratio is a bound)
        }
    report.table(
        title,
        [
            "share",
            "saved_fraction %",
            "A before",
            "B before",
            "A zipped",
            "B zipped",
            f"A retrained ({retrain_its}/layer)",
            f"B retrained ({retrain_its}/layer)",
            "retraining samples",
            "fresh training / retraining (samples)",
        ],
        rows,
    )
    return out


def baseline_table(report: Report, pairs: list[Pair], shares, retrain_its: int):
    """mtz against mtz-avg, euclidean and random; returns {(share, method): (before, after)}."""
    rows, out = [], {}
    for share in shares:
        for method in ("mtz", "mtz-avg", "euclidean", "random"):
            before, after = [], []
            for p in pairs:
                before.append(p.zip(share, method=method).test_mean)
                after.append(p.zip(share, method=method, retrain_its=retrain_its).test_mean)
            rows.append([f"{share:g}", method, mean_std(before), mean_std(after)])
            out[share, method] = (statistics.mean(before), statistics.mean(after))
    report.table(
        "Baselines at equal shares (LeNet-300-100, MNIST 0–4 vs 5–9): mean test accuracy of the "
        "two tasks, %",
        ["share", "method", "before retraining", f"after retraining ({retrain_its}/layer)"],
        rows,
    )
    return out


def damping_table(report: Report, pairs: list[Pair], setup: Setup) -> None:
    """The evidence for the default damping, chosen on the validation split: per number of
    Hessian samples and damping factor, a full zip of the different-task pairs before and after
    retraining, its predicted and held-out layer errors, and how far the merge moved."""
    rows, val_after = [], {}
    largest = setup.damping_samples[-1]
    for n in setup.damping_samples:
        for damping in setup.damping_grid:
            val_before, test_before, pred, held, ratio, chosen, after, test_after = (
                [] for _ in range(8)
            )
            for p in pairs:
                done = p.zip(1.0, damping=damping, calib=n)
                res = done.result
                val_before.append(done.val_mean)
                test_before.append(done.test_mean)
                pred.append(sum(r.predicted_error for r in res.layers))
                held.append(sum(r.heldout_error for r in res.layers))
                layer = res.model.layers[0]
                rec = res.layers[0]
                merged = layer.shared_weight.detach().norm(dim=1)
                orig_w = torch.stack(
                    [
                        p.a[1].weight.detach()[rec.pairs[:, 0]].norm(dim=1),
                        p.b[1].weight.detach()[rec.pairs[:, 1]].norm(dim=1),
                    ]
                ).mean(0)
                ratio.append(float((merged / orig_w.clamp_min(1e-12)).mean()))
                chosen.append("/".join(f"{r.damping:g}" for r in res.layers))
                if setup.damping_retrain and n == largest:
                    again = p.zip(1.0, damping=damping, calib=n, retrain_its=setup.retrain)
                    after.append(again.val_mean)
                    test_after.append(again.test_mean)
            if after:
                val_after[damping] = (statistics.mean(after), statistics.mean(val_before))
            rows.append(
                [
                    n,
                    f"{damping}" + (f" (chose {chosen[0]})" if damping == "auto" else ""),
                    mean_std(val_before),
                    mean_std(after) if after else "—",
                    mean_std(test_before),
                    mean_std(test_after) if test_after else "—",
                    mean_std(pred, 1, 3),
                    mean_std(held, 1, 3),
                    mean_std(ratio, 1, 2),
                ]
            )
    report.table(
        "Damping and Hessian samples (LeNet-300-100, MNIST 0–4 vs 5–9, full share; layer errors "
        "summed over layers; validation accuracy chooses, test accuracy only reports)",
        [
            "Hessian samples / task",
            "damping",
            "val acc before retraining %",
            f"val acc after retraining ({setup.retrain}/layer) %",
            "test acc before %",
            "test acc after %",
            "predicted layer error",
            "held-out layer error (val images)",
            "‖merged‖ / ‖original‖ (layer 1)",
        ],
        rows,
    )
    fixed = {d: v[0] for d, v in val_after.items() if d != "auto"}
    if fixed:
        report.choice(
            "damping",
            ZipConfig.default_damping(),
            fixed,
            f"after retraining a full zip, {largest:,} Hessian samples per task",
            prefer=lambda d: -d,
            why="the stronger damping (less overfitting of the Hessian samples)",
        )


#: (lr, momentum): momentum 0.9 multiplies the effective step by 10, so (lr/10, 0.9) takes the
#: steps of (lr, 0) — the comparison that chooses the momentum — and (0.01, 0.9) a 10× larger one
RETRAIN_SETTINGS = (
    (0.01, 0.9),
    (0.001, 0.9),
    (0.002, 0.9),
    (0.01, 0.0),
    (0.02, 0.0),
    (0.03, 0.0),
)
RETRAIN_ROUNDS, RETRAIN_STEP = 3, 200


def optimizer_table(report: Report, pair: Pair) -> None:
    """The evidence for retraining's default (plain SGD): a full zip retrained in rounds at
    several learning rates and momenta; validation accuracy chooses."""
    zipped = zip_models(pair.a, pair.b, *pair.calib(), share=1.0).model

    def accuracy(net) -> tuple[str, float]:
        a, b = pair.accuracy(net, "val")
        return f"{100 * a:.2f} / {100 * b:.2f}", (a + b) / 2

    rows = [["—", "—", f"zipped, not retrained: {accuracy(zipped)[0]}", "", "", "", ""]]
    finals = {}
    settings = set(RETRAIN_SETTINGS) | {(RETRAIN_LR, 0.0), (RETRAIN_LR / 10, 0.9)}
    for lr, momentum in sorted(settings, key=lambda s: (-s[1], s[0])):
        net, (train_a, train_b), cells = zipped.clone(), pair.train(0), []
        for k in range(RETRAIN_ROUNDS):
            r = retrain(
                net, train_a, train_b, iterations=RETRAIN_STEP, lr=lr, momentum=momentum, seed=k
            )
            text, finals[lr, momentum] = accuracy(net)
            cells.append(text)
        ta, tb = pair.accuracy(net)
        rows.append(
            [
                f"{lr:g}",
                f"{momentum:g}",
                *cells,
                " / ".join(f"{x:.3f}" for x in r.final_losses()),
                f"{100 * ta:.2f} / {100 * tb:.2f}",
            ]
        )
    report.table(
        "Retraining's optimizer (LeNet-300-100 same-task pair, seeds 0 and 1, full zip, then "
        "joint retraining, batch 32 per task): validation accuracy A / B % (chooses), test "
        "accuracy at the end (reports)",
        [
            "lr",
            "momentum",
            *(f"val after {RETRAIN_STEP * (k + 1)}" for k in range(RETRAIN_ROUNDS)),
            "final training loss A / B",
            f"test after {RETRAIN_STEP * RETRAIN_ROUNDS}",
        ],
        rows,
    )
    same_step = {0.0: finals[RETRAIN_LR, 0.0], 0.9: finals[RETRAIN_LR / 10, 0.9]}
    report.choice(
        "retraining momentum",
        0.0,
        same_step,
        f"at the default lr's effective step ({RETRAIN_LR:g} plain, {RETRAIN_LR / 10:g} with "
        f"momentum 0.9), after {RETRAIN_STEP * RETRAIN_ROUNDS} iterations",
        prefer=lambda m: m,
        why="no momentum (the method's plain SGD)",
    )


def layer_error_table(report: Report, pairs: list[Pair], setup: Setup) -> None:
    """Predicted against held-out measured layer error, per layer: what the app shows next to
    each zip. The zips are the damping table's own (memoised), so this costs nothing."""
    rows = []
    for damping in (1e-4, ZipConfig.default_damping(), "auto"):
        results = [p.zip(1.0, damping=damping, calib=setup.calib).result for p in pairs]
        for i, rec in enumerate(results[0].layers):
            pred = [r.layers[i].predicted_error for r in results]
            held = [r.layers[i].heldout_error for r in results]
            ratio = [h / max(q, 1e-12) for h, q in zip(held, pred)]
            chosen = "/".join(sorted({f"{r.layers[i].damping:g}" for r in results}))
            rows.append(
                [
                    f"{damping}" + (f" (chose {chosen})" if damping == "auto" else ""),
                    rec.name,
                    mean_std(pred, 1, 3),
                    mean_std(held, 1, 3),
                    mean_std(ratio, 1, 2),
                ]
            )
    report.table(
        "Predicted and held-out layer error per layer (LeNet-300-100, MNIST 0–4 vs 5–9, full "
        f"share, {setup.calib:,} Hessian samples per task; held-out: {setup.heldout:,} "
        "validation images per task that the Hessians never saw)",
        ["damping", "layer", "predicted", "held-out", "held-out / predicted"],
        rows,
    )


def lr_table(report: Report, pairs: list[Pair], lrs, retrain_its: int) -> None:
    """Full zip of the different-task pairs retrained at several learning rates, per pairing;
    validation accuracy chooses the default (by MTZ's own pairs)."""
    rows, val_mtz = [], {}
    for lr in lrs:
        for method in ("mtz", "mtz-avg", "random"):
            done = [p.zip(1.0, method=method, retrain_its=retrain_its, lr=lr) for p in pairs]
            val = [d.val_mean for d in done]
            if method == "mtz":
                val_mtz[lr] = statistics.mean(val)
            rows.append([f"{lr:g}", method, mean_std(val), mean_std([d.test_mean for d in done])])
    report.table(
        "Retraining's learning rate (LeNet-300-100, MNIST 0–4 vs 5–9, full share, "
        f"{retrain_its} iterations per layer, plain SGD, gradient norm clipped at "
        f"{RETRAIN_CLIP:g}): mean accuracy of the two tasks, % (validation chooses, test reports)",
        ["lr", "method", "val after retraining", "test after retraining"],
        rows,
    )
    report.choice(
        "retraining lr",
        RETRAIN_LR,
        val_mtz,
        "MTZ's full zip after retraining",
        prefer=lambda lr: lr,
        why="the smaller step (it must also suit deeper networks)",
    )


def vgg_lr_table(report: Report, pair: Pair, iterations: int) -> None:
    """Why retraining clips its gradient: the VGG's batch norm is folded into its convolutions,
    so the retrained network has no normalisation and a large step wrecks it. Validation
    accuracy chooses the clip (at the default lr, over both starting points)."""
    rows, val_by_clip = [], {}
    for share in (0.0, 1.0):
        start = pair.zip(share).result.model
        for lr, clip in ((0.01, None), (RETRAIN_LR, None), (RETRAIN_LR, RETRAIN_CLIP)):
            net, (train_a, train_b) = start.clone(), pair.train(0)
            try:
                rep = retrain(
                    net, train_a, train_b, iterations=iterations, lr=lr, clip_grad_norm=clip
                )
                va, vb = pair.accuracy(net, "val")
                ta, tb = pair.accuracy(net)
                cells = [f"{100 * va:.2f} / {100 * vb:.2f}", f"{100 * ta:.2f} / {100 * tb:.2f}"]
                cells += [" / ".join(f"{x:.3f}" for x in rep.final_losses()), f"{rep.clipped}"]
                if lr == RETRAIN_LR:
                    val_by_clip.setdefault(clip, []).append((va + vb) / 2)
            except TrainingDiverged as exc:
                cells = [f"diverged ({exc})", "—", "—", "—"]
                if lr == RETRAIN_LR:
                    val_by_clip.setdefault(clip, []).append(0.0)
            rows.append([f"{share:g}", f"{lr:g}", "—" if clip is None else f"{clip:g}", *cells])
    report.table(
        f"Retraining's step on the VGG (seed-0 pair, {iterations} iterations of plain SGD, from "
        "the unzipped pair and from the full zip)",
        [
            "share",
            "lr",
            "gradient norm clip",
            "val accuracy A / B % (chooses)",
            "test accuracy A / B % (reports)",
            "final training loss A / B",
            "steps clipped",
        ],
        rows,
    )
    means = {c: statistics.mean(v) for c, v in val_by_clip.items()}
    report.choice(
        "retraining gradient-norm clip",
        RETRAIN_CLIP,
        means,
        f"at lr {RETRAIN_LR:g}, over the unzipped and the fully zipped VGG",
        prefer=lambda c: 0 if c is not None else 1,
        why="clipping (a bound on the step)",
    )


def digits_table(report: Report, setup: Setup):
    demo = load_demo("digits-mlp")
    pairs = [
        Pair(
            demo.model_a,
            demo.model_b,
            demo.task_a,
            demo.task_b,
            Setup(**{**setup.__dict__, "calib": 1024, "test_limit": None, "heldout": 300}),
            seed=s,
        )
        for s in range(setup.seeds)
    ]
    return zip_table(
        report,
        "Embedded digits demo (digits-mlp: LeNet-300-100, digits 0–4 vs 5–9; one pair, the seeds "
        "vary retraining only; its test split has 180/179 images, so one image is 0.56 points, "
        "and the seeds' retrained weights differ without changing a test prediction)",
        pairs,
        setup.shares,
        setup.retrain,
        fresh=False,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = page_arguments(__doc__, "results.md", argv)
    setup = QUICK if args.quick else Setup()
    if args.quick:
        setup = Setup(**{**QUICK.__dict__, "originals": orig.quick_original})
    t0 = time.perf_counter()
    report = Report(args.quick)
    report.originals(setup)
    same = pairs_for("lenet300", "mnist", "mnist", setup, args.data_root)
    same_res = zip_table(
        report,
        f"Same task (§4.1): two LeNet-300-100 on MNIST, {setup.calib:,} Hessian samples per "
        "task, test accuracy %",
        same,
        setup.shares,
        setup.retrain,
        fresh=True,
    )
    optimizer_table(report, same[0])
    if setup.lenet5:
        l5 = pairs_for("lenet5", "mnist", "mnist", setup, args.data_root)
        zip_table(
            report,
            f"Same task (§4.1): two LeNet-5 on MNIST, {setup.lenet5_calib:,} Hessian samples "
            "per task, test accuracy % (no fresh-training comparison: a LeNet-5 step costs "
            "about 5× a LeNet-300-100 step here, and the budget is 15 minutes)",
            l5,
            setup.lenet5_shares,
            setup.lenet5_retrain,
            fresh=False,
        )
    diff = pairs_for("lenet300", "mnist:0-4", "mnist:5-9", setup, args.data_root)
    diff_res = zip_table(
        report,
        "Different tasks: LeNet-300-100 on MNIST 0–4 vs 5–9 (5-way heads), "
        f"{setup.calib:,} Hessian samples per task, test accuracy %",
        diff,
        setup.shares,
        setup.retrain,
        fresh=True,
    )
    base_res = baseline_table(report, diff, (0.5, 1.0), setup.retrain)
    lr_table(report, diff, setup.retrain_lrs, setup.retrain)
    if setup.vgg:
        vgg = pairs_for("vgg11_bn", "mnist:0-4", "mnist:5-9", setup, args.data_root)
        zip_table(
            report,
            "A small trained VGG: vgg11_bn (width 1/8, 8 conv + 2 hidden fully connected layers "
            f"zipped), MNIST padded to 32×32, 0–4 vs 5–9, {setup.vgg_calib:,} Hessian samples "
            "per task, test accuracy % (share 0 saves 0.03%: the zipped network stores batch "
            "norm folded into the convolutions, 2 parameters fewer per channel)",
            vgg,
            setup.vgg_shares,
            setup.vgg_retrain,
            fresh=False,
        )
        vgg_lr_table(report, vgg[0], setup.vgg_lr_iterations)
    damping_table(report, diff, setup)
    layer_error_table(report, diff, setup)
    digits_table(report, setup)
    report.note(RESNET_POINTER)
    report.note(MANY_POINTER)
    report.note(PEER_POINTER)
    report.targets(same_res, diff_res, base_res, setup.retrain)
    report.choices_summary()
    report.write(args, setup, t0)


if __name__ == "__main__":
    main()
