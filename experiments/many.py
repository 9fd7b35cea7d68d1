"""Three LeNet-300-100 zipped into one network (the paper's multi-model zipping): MNIST digits
0–3, 4–6 and 7–9, one original per task; writes docs/results-many.md.

    python -m experiments.originals --data-root ../shared/data/mnist   # once: train, cache
    python -m experiments.many --data-root ../shared/data/mnist        # the page
    python -m experiments.many --quick --out /tmp/many.md               # CI's reduced run

Same originals cache and data roles as `experiments.paper`: Hessians and retraining on each
task's `calib` split, every choice on `val`, `test` only reports; the held-out layer error is
measured on validation images. `zip_many` pairs the first two models by the MTZ cost, then
matches the third to the merged units with the merged side's Hessian H_A + H_B, so every shared
unit is shared by all three tasks (`subsets=True`, the paper's scheme, lets the third model's
units also join one task's own units; its table compares the two). The zipping order (which
task joins last) is chosen on the validation split first, and the rest of the page uses it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mtz_core import ZipResult, evaluate, zip_many, zip_models
from mtz_core.config import MANY_METHODS as METHODS
from mtz_core.data import Task

from . import originals as orig
from .paper import Setup, mean_std
from .report import Report, page_arguments

ARCH = "lenet300"
TASKS = ("mnist:0-3", "mnist:4-6", "mnist:7-9")
#: the three rotations: the first two models are paired by the MTZ cost, the third joins the
#: merged units. A and B enter symmetrically (the cost and the merge are symmetric in them), so
#: the rotations are every distinct order: which task joins last.
ORDERS = ((0, 1, 2), (1, 2, 0), (2, 0, 1))


@dataclass(frozen=True)
class ManySetup(Setup):
    """Sizes of the full run: paper.py's LeNet-300-100 setup (4,096 Hessian samples per task,
    300 retraining iterations per layer, batch 32 per task), for three tasks."""

    shares: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # MTZ's shares
    baseline_shares: tuple[float, ...] = (0.5, 1.0)  # every method at these shares
    order_shares: tuple[float, ...] = (0.5, 1.0)  # every order at these; 1.0 chooses
    # both schemes (shared by all three / by subsets) at these; at share 1 they coincide
    scheme_shares: tuple[float, ...] = (0.5, 0.75)


QUICK = ManySetup(
    seeds=1,
    calib=512,
    shares=(0.5, 1.0),
    baseline_shares=(1.0,),
    order_shares=(1.0,),
    scheme_shares=(0.5,),
    retrain=20,
    val_limit=1000,
    test_limit=1000,
    heldout=300,
)


def label(task: str) -> str:
    """ "mnist:0-3" -> "0–3"."""
    return task.split(":")[-1].replace("-", "–")


def order_label(order: Sequence[int], names: Sequence[str]) -> str:
    a, b, c = (names[i] for i in order)
    return f"({a} + {b}) + {c}"


@dataclass(frozen=True)
class Outcome:
    """One zip and its accuracy per task (in the triple's task order, whatever the zipping
    order) on the test split (reports) and on the validation split (chooses)."""

    result: ZipResult
    test: tuple[float, ...]
    val: tuple[float, ...]

    @property
    def test_mean(self) -> float:
        return statistics.mean(self.test)

    @property
    def val_mean(self) -> float:
        return statistics.mean(self.val)


class Triple:
    """Three originals, one per task, with the data the experiments feed the engine; zips are
    memoised, since tables repeat configurations (the order table's full zips are the zip
    table's, the baseline table's mtz rows the zip table's) and a zip is deterministic."""

    def __init__(self, models: Sequence, tasks: Sequence[Task], setup: ManySetup, seed: int):
        if len(models) != len(tasks):
            raise ValueError(f"give one task per model: {len(models)} models, {len(tasks)} tasks")
        self.models, self.tasks, self.setup, self.seed = tuple(models), tuple(tasks), setup, seed
        self.names = tuple(label(t.name) for t in self.tasks)
        self._zips: dict[tuple, Outcome] = {}
        self._pairs: dict[tuple, Outcome] = {}
        self._original: tuple[float, ...] | None = None

    # -- data, per task (indices into self.tasks) ------------------------------------------
    def calib(self, t: int) -> list:
        return [x for x, _ in self.tasks[t].batches("calib", 512, limit=self.setup.calib)]

    def heldout(self, t: int) -> list:
        """Validation images (inputs only) for the held-out layer error."""
        return [x for x, _ in self.tasks[t].batches("val", 500, limit=self.setup.heldout)]

    def train(self, t: int, seed: int):
        return self.tasks[t].batches("calib", 32, shuffle=True, seed=seed)

    def split(self, t: int, split: str):
        lim = self.setup.test_limit if split == "test" else self.setup.val_limit
        return self.tasks[t].batches(split, 1000, limit=lim)

    def params(self) -> int:
        """Parameters of the three originals together."""
        return sum(q.numel() for m in self.models for q in m.parameters())

    def original_accuracy(self) -> tuple[float, ...]:
        if self._original is None:
            self._original = tuple(
                evaluate(m, self.split(t, "test")).accuracy for t, m in enumerate(self.models)
            )
        return self._original

    def accuracy(self, net, tasks: Sequence[int], split: str) -> tuple[float, ...]:
        """Accuracy of a zipped network whose task p is self.tasks[tasks[p]], in `tasks`'
        order."""
        return tuple(
            evaluate(net, self.split(t, split), task=p).accuracy for p, t in enumerate(tasks)
        )

    # -- zips ---------------------------------------------------------------------------------
    def zip(
        self,
        share: float,
        *,
        method: str = "mtz",
        retrain_its: int = 0,
        order=ORDERS[0],
        subsets: bool = False,
    ) -> Outcome:
        """All three models zipped in `order` at `share` of every hidden layer (0: not zipped),
        with `retrain_its` iterations of joint retraining after each layer; `subsets`: units
        may be shared by two of the three tasks (the paper's scheme)."""
        key = (share, method, retrain_its, tuple(order), subsets)
        if key not in self._zips:
            t0 = time.perf_counter()
            self._zips[key] = self._zip(*key)
            out = self._zips[key]
            print(
                f"  seed {self.seed} share {share:g} {method}{' subsets' * subsets} retrain "
                f"{retrain_its} order {order_label(order, self.names)}: test "
                f"{[round(100 * a, 2) for a in out.test]}"
                f", saved {100 * out.result.saved_fraction:.2f}%, "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        return self._zips[key]

    def _zip(self, share, method, retrain_its, order, subsets) -> Outcome:
        result = zip_many(
            [self.models[t] for t in order],
            [self.calib(t) for t in order],
            share=share,
            method=method,
            subsets=subsets,
            seed=self.seed,
            retrain_iterations=retrain_its,
            trains=[self.train(t, self.seed) for t in order],
            heldout=[self.heldout(t) for t in order],
        )
        net = result.model.eval()
        test, val = (self.accuracy(net, order, s) for s in ("test", "val"))
        # back to the triple's task order
        where = {t: p for p, t in enumerate(order)}
        return Outcome(
            result,
            tuple(test[where[t]] for t in range(3)),
            tuple(val[where[t]] for t in range(3)),
        )

    def pair(self, i: int, j: int, *, retrain_its: int = 0) -> Outcome:
        """Tasks i and j alone, zipped with `zip_models` at full share; accuracies (i, j)."""
        key = (i, j, retrain_its)
        if key not in self._pairs:
            result = zip_models(
                self.models[i],
                self.models[j],
                self.calib(i),
                self.calib(j),
                share=1.0,
                seed=self.seed,
                retrain_iterations=retrain_its,
                train_a=self.train(i, self.seed),
                train_b=self.train(j, self.seed),
                heldout_a=self.heldout(i),
                heldout_b=self.heldout(j),
            )
            net = result.model.eval()
            self._pairs[key] = Outcome(
                result, self.accuracy(net, (i, j), "test"), self.accuracy(net, (i, j), "val")
            )
        return self._pairs[key]


def triples_for(setup: ManySetup, data_root: str) -> list[Triple]:
    """Triple s: task t's original s + t·seeds (seeds s, s + 3, s + 6 in the full run), so the
    three start from different initial weights (model s starts from seed 1000 + s)."""
    get = setup.originals or orig.get_original
    tasks = [orig.task_for(ARCH, t, data_root) for t in TASKS]
    return [
        Triple(
            [get(ARCH, task, s + t * setup.seeds)[0] for t, task in enumerate(tasks)],
            tasks,
            setup,
            seed=s,
        )
        for s in range(setup.seeds)
    ]


def _col(values: Sequence[tuple[float, ...]], t: int) -> list[float]:
    return [v[t] for v in values]


def originals_table(report: Report, triples: list[Triple]) -> None:
    """The originals this page zips (their training record from the cache; the test accuracy
    is measured again here)."""
    if report.quick:
        report.note(
            "*Quick run (CI): originals trained briefly, 1 seed, reduced sizes — the numbers "
            "only show that the pipeline runs.*"
        )
        return
    recipe = orig.RECIPES[ARCH]
    seeds = len(triples)
    rows, total = [], 0.0
    for t, task in enumerate(TASKS):
        infos = []
        for p in triples:
            stem = f"{ARCH}-{task.replace(':', '_')}-seed{p.seed + t * seeds}"
            path = orig.CACHE / f"{stem}.json"
            if path.exists():
                infos.append(json.loads(path.read_text()))
        secs = sum(i["train_seconds"] for i in infos)
        total += secs
        rows.append(
            [
                task,
                triples[0].tasks[t].num_classes,
                ", ".join(str(p.seed + t * seeds) for p in triples),
                mean_std([p.original_accuracy()[t] for p in triples]),
                f"{infos[0]['iterations']:,}" if infos else "—",
                f"{secs:.0f}" if infos else "—",
            ]
        )
    params = [sum(q.numel() for q in m.parameters()) for m in triples[0].models]
    report.table(
        "The originals: LeNet-300-100 (784–300–100–head), one per task, trained once and cached "
        "in cache/originals/",
        [
            "task",
            "classes",
            "original seeds (triple 0, 1, …)",
            "test accuracy %",
            "iterations (batch 128)",
            "training s (all models)",
        ],
        rows,
    )
    report.note(
        f"Trained by `python -m experiments.originals` ({recipe.epochs:g} epochs of SGD, momentum "
        f"0.9, batch 128, lr {recipe.lr:g} cosine-decayed; {total / 60:.1f} minutes for all "
        f"{seeds * len(TASKS)}). Triple s zips 0–3's original s, 4–6's original s + {seeds} and "
        f"7–9's original s + {2 * seeds}: model s starts from seed 1000 + s, so the three start "
        "from different initial weights and their units are not aligned by construction. "
        f"Parameters per original: {', '.join(f'{n:,}' for n in params)} "
        f"({sum(params):,} for the three)."
    )


def order_table(report: Report, triples: list[Triple], setup: ManySetup) -> tuple[int, ...]:
    """Which task joins last, chosen on the validation split (MTZ's full zip after retraining);
    the rest of the page uses the chosen order."""
    its, names = setup.retrain, triples[0].names
    rows, val_full = [], {}
    for share in setup.order_shares:
        for order in ORDERS:
            plain = [p.zip(share, order=order) for p in triples]
            done = [p.zip(share, order=order, retrain_its=its) for p in triples]
            pred = [sum(r.predicted_error for r in o.result.layers) for o in plain]
            if share == 1.0:
                val_full[order] = statistics.mean(o.val_mean for o in done)
            rows.append(
                [
                    f"{share:g}",
                    order_label(order, names),
                    mean_std(pred, 1, 3),
                    mean_std([o.val_mean for o in plain]),
                    mean_std([o.val_mean for o in done]),
                    mean_std([o.test_mean for o in plain]),
                    *(mean_std(_col([o.test for o in done], t)) for t in range(3)),
                    mean_std([o.test_mean for o in done]),
                ]
            )
    report.table(
        "The zipping order: (A + B) + C means A and B are paired by the MTZ cost and C joins the "
        f"merged units (three-model zip, {setup.calib:,} Hessian samples per task, "
        f"{its} retraining iterations per layer); mean accuracy of the three tasks, % "
        "(validation chooses, test reports)",
        [
            "share",
            "order",
            "predicted layer error (Σ layers, not retrained)",
            "val, zipped",
            f"val, retrained ({its}/layer)",
            "test, zipped",
            *(f"test {n}, retrained" for n in names),
            "test, retrained",
        ],
        rows,
    )
    if not val_full:  # no full share in the grid: the default order
        return ORDERS[0]
    labels = {order_label(o, names): o for o in ORDERS}
    scores = {order_label(o, names): v for o, v in val_full.items()}
    chosen = report.choice(
        "zipping order (which task joins last)",
        order_label(ORDERS[0], names),
        scores,
        "the three-model full zip after retraining",
        prefer=lambda lab: ORDERS.index(labels[lab]),
        why="the task order 0–3, 4–6, 7–9 rotated least",
    )
    spread = 100 * (max(val_full.values()) - min(val_full.values()))
    tests = {
        o: statistics.mean(p.zip(1.0, order=o, retrain_its=its).test_mean for p in triples)
        for o in ORDERS
    }
    test_spread = 100 * (max(tests.values()) - min(tests.values()))
    noise = ""
    if len(triples) > 1:
        sd = max(
            statistics.stdev(p.zip(1.0, order=o, retrain_its=its).val_mean for p in triples)
            for o in ORDERS
        )
        noise = f"; the seeds' standard deviation of that mean is up to {100 * sd:.2f} points"
    report.note(
        f"The order moves the full zip's mean validation accuracy after retraining by "
        f"{spread:.2f} points from the best order to the worst ({test_spread:.2f} points on "
        f"test){noise}. The chosen order, {chosen}, is what the tables below use."
    )
    return labels[chosen]


def zip_table(report: Report, triples: list[Triple], setup: ManySetup, order) -> None:
    """MTZ per share: zipped, and zipped with retraining after each layer; the first row
    retrains the unzipped three for the same iterations."""
    its, names = setup.retrain, triples[0].names
    orig_acc = [p.original_accuracy() for p in triples]
    rows = []
    for share in (0.0, *setup.shares):
        zipped = orig_acc if share == 0.0 else [p.zip(share, order=order).test for p in triples]
        done = [p.zip(share, order=order, retrain_its=its) for p in triples]
        res = done[0].result
        rows.append(
            [
                "none (retrain only)" if share == 0.0 else f"{share:g}",
                mean_std([o.result.saved_fraction for o in done]),
                f"{res.params['zipped']:,} / {res.originals:,}",
                *(mean_std(_col(zipped, t)) for t in range(3)),
                mean_std([statistics.mean(z) for z in zipped]),
                *(mean_std(_col([o.test for o in done], t)) for t in range(3)),
                mean_std([o.test_mean for o in done]),
                f"{statistics.mean(o.result.retrain_samples for o in done):,.0f}",
            ]
        )
    mean_before = statistics.mean(statistics.mean(a) for a in orig_acc)
    report.table(
        f"MTZ on three LeNet-300-100 (MNIST {', '.join(names)}), order "
        f"{order_label(order, names)}, {setup.calib:,} Hessian samples per task, test accuracy % "
        f"(the originals: {100 * mean_before:.2f} mean)",
        [
            "share",
            "saved_fraction % (of the three)",
            "parameters stored (zipped / three originals)",
            *(f"{n} zipped" for n in names),
            "mean zipped",
            *(f"{n} retrained ({its}/layer)" for n in names),
            "mean retrained",
            "retraining samples (all tasks)",
        ],
        rows,
    )


def baseline_table(report: Report, triples: list[Triple], setup: ManySetup, order) -> None:
    """Every pairing method of the engine at equal shares, before and after retraining."""
    its, names = setup.retrain, triples[0].names
    rows = []
    for share in setup.baseline_shares:
        for method in METHODS:
            plain = [p.zip(share, method=method, order=order) for p in triples]
            done = [p.zip(share, method=method, order=order, retrain_its=its) for p in triples]
            rows.append(
                [
                    f"{share:g}",
                    method,
                    mean_std([o.result.saved_fraction for o in done]),
                    mean_std([o.test_mean for o in plain]),
                    mean_std([min(o.test) for o in plain]),
                    mean_std([o.test_mean for o in done]),
                    mean_std([min(o.test) for o in done]),
                ]
            )
    report.table(
        f"Baselines at equal shares (three LeNet-300-100, MNIST {', '.join(names)}, order "
        f"{order_label(order, names)}): test accuracy, % (mtz: Hessian matching and "
        "Hessian-weighted merge; mtz-avg: MTZ's tuples, plain average; euclidean: closest "
        "incoming vectors, plain average; random: random tuples, plain average)",
        [
            "share",
            "method",
            "saved_fraction %",
            "mean, zipped",
            "worst task, zipped",
            f"mean, retrained ({its}/layer)",
            f"worst task, retrained ({its}/layer)",
        ],
        rows,
    )


def pairs_table(report: Report, triples: list[Triple], setup: ManySetup, order) -> None:
    """Each two of the three zipped alone (`zip_models`, full share): what a two-model zip
    saves and keeps, against the same two tasks in the three-model full zip."""
    its, names = setup.retrain, triples[0].names
    rows = []
    for i, j in itertools.combinations(range(3), 2):
        plain = [p.pair(i, j) for p in triples]
        done = [p.pair(i, j, retrain_its=its) for p in triples]
        three = [p.zip(1.0, order=order, retrain_its=its) for p in triples]
        # the two zipped, the third kept whole: saved over all three originals
        over_three = [o.result.saved / p.params() for p, o in zip(triples, done)]
        rows.append(
            [
                f"{names[i]} + {names[j]}",
                mean_std([o.result.saved_fraction for o in done]),
                mean_std(over_three),
                mean_std([o.test_mean for o in plain]),
                " / ".join(mean_std(_col([o.test for o in done], t)) for t in (0, 1)),
                mean_std([o.test_mean for o in done]),
                " / ".join(mean_std(_col([o.test for o in three], t)) for t in (i, j)),
                mean_std([(o.test[i] + o.test[j]) / 2 for o in three]),
            ]
        )
    three = [p.zip(1.0, order=order, retrain_its=its) for p in triples]
    costs = {
        f"{names[i]} + {names[j]}": statistics.mean(
            (o.test[i] + o.test[j]) / 2 - p.pair(i, j, retrain_its=its).test_mean
            for p, o in zip(triples, three)
        )
        for i, j in itertools.combinations(range(3), 2)
    }
    report.table(
        "For reference, two tasks at a time: each pair of the three originals zipped alone with "
        f"`zip_models` (full share, {its} retraining iterations per layer), against the same two "
        f"tasks in the three-model full zip (order {order_label(order, names)}); test accuracy %",
        [
            "pair",
            "saved_fraction % (of the two)",
            "saved % of all three (third kept whole)",
            "mean, zipped",
            "each, retrained",
            "mean, retrained",
            "each, in the three-model zip (retrained)",
            "mean, in the three-model zip",
        ],
        rows,
    )
    report.note(
        "The three-model full zip saves "
        f"{mean_std([o.result.saved_fraction for o in three])}% of the three originals' "
        "parameters; zipping two and keeping the third whole saves the column "
        '"saved % of all three". What zipping the third task in costs the other two, after '
        "retraining (their mean in the three-model zip minus their mean in their own pair zip, "
        "points): " + ", ".join(f"{k} {100 * v:+.2f}" for k, v in costs.items()) + "."
    )


SCHEME_NOTE = (
    "### Which multi-model scheme this page measures\n\n"
    "This engine's scheme (`zip_many`): at every layer, the first two models' units are "
    "paired by the MTZ cost, and the third model's units are matched to the merged units "
    "with the merged side's Hessian H_A + H_B (exact: the merged side behaves like one model "
    "with that Hessian). A shared unit is therefore shared by **all three tasks**; a unit "
    "that is not shared belongs to one task. The paper's scheme (its released code zips a "
    "further model into the result of A + B) lets a unit of the further model also pair with "
    "a task-specific unit of the zipped network, so units can be shared by a subset of the "
    "tasks (A and C, say), and it uses H_A⁻¹ + H_B⁻¹ as the merged side's inverse Hessian, a "
    "heuristic that underestimates the costs. `subsets=True` (mtz_core.subsets) is that scheme "
    "with exact costs: the zipped side's Hessian is the sum of its tasks' over the coordinates "
    "that become shared, and a unit of pool {A} or {B} may take the third model's unit; the "
    "scheme table above measures it against the default at equal merges per stage (at share 1 "
    "the two coincide: every unit of A + B is then shared by both). Every other table uses the "
    "default, units shared by all three."
)


def scheme_table(report: Report, triples: list[Triple], setup: ManySetup, order) -> bool:
    """Shared by all three, or by subsets of the tasks (the paper's scheme), at equal merges
    per stage; chosen on validation accuracy after retraining, averaged over the shares."""
    its = setup.retrain
    rows, val = [], {False: [], True: []}
    for share in setup.scheme_shares:
        for subsets in (False, True):
            plain = [p.zip(share, order=order, subsets=subsets) for p in triples]
            done = [p.zip(share, order=order, retrain_its=its, subsets=subsets) for p in triples]
            val[subsets].append(statistics.mean(o.val_mean for o in done))
            pools = _pool_counts(plain[0].result)
            rows.append(
                [
                    f"{share:g}",
                    "subsets (the paper)" if subsets else "all three (default)",
                    mean_std([o.result.saved_fraction for o in plain], 100),
                    pools,
                    mean_std(
                        [sum(r.predicted_error for r in o.result.layers) for o in plain], 1, 3
                    ),
                    mean_std([o.val_mean for o in plain]),
                    mean_std([o.val_mean for o in done]),
                    mean_std([o.test_mean for o in plain]),
                    mean_std([o.test_mean for o in done]),
                ]
            )
    report.table(
        "Units shared by all three tasks, or by subsets of them (`subsets=True`: the third "
        "model's units may also join a unit of A or of B alone, the paper's scheme; each stage "
        "makes share × width merges, so both store the same number of units; order "
        f"{order_label(order, triples[0].names)}, "
        f"{its} retraining iterations per layer); mean accuracy of the three tasks, %",
        [
            "share",
            "scheme",
            "saved_fraction %",
            "units per task set (seed 0, fc1 / fc2)",
            "predicted layer error (Σ layers)",
            "val, zipped",
            f"val, retrained ({its}/layer)",
            "test, zipped",
            f"test, retrained ({its}/layer)",
        ],
        rows,
    )
    scores = {label: statistics.mean(val[s]) for s, label in ((False, "all"), (True, "subsets"))}
    chosen = report.choice(
        "multi-model scheme (subsets=)",
        "all",
        scores,
        f"mean validation accuracy after retraining over shares {list(setup.scheme_shares)}",
        prefer=lambda lab: lab != "all",
        why="all (the simpler layout, and the one residual networks and kept norms support)",
    )
    return chosen == "subsets"


def _pool_counts(result) -> str:
    """How many units each task set holds, per zipped layer (A, B, C: the zipping order)."""
    parts = []
    for r in result.layers:
        if r.units is None:
            counts = {"ABC": r.k}
            counts.update({x: w - r.k for x, w in zip("ABC", r.widths)})
        else:
            counts = {}
            for row in r.units:
                key = "".join(x for x, j in zip("ABC", row) if j >= 0)
                counts[key] = counts.get(key, 0) + 1
        parts.append(
            " ".join(
                f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-len(kv[0]), kv[0]))
            )
        )
    return " / ".join(parts)


def summary_note(report: Report, triples: list[Triple], setup: ManySetup, order) -> None:
    """The page in a few numbers (from the tables' memoised zips)."""
    its = setup.retrain
    before = statistics.mean(statistics.mean(p.original_accuracy()) for p in triples)
    lines = ["### In short", ""]
    for share in sorted({0.5, 1.0} & set(setup.shares)):
        plain = [p.zip(share, order=order) for p in triples]
        done = [p.zip(share, order=order, retrain_its=its) for p in triples]
        lines.append(
            f"- share {share:g}: saves {mean_std([o.result.saved_fraction for o in done])}% of "
            f"the three originals; mean test accuracy {100 * before:.2f}% (originals) → "
            f"{mean_std([o.test_mean for o in plain])}% zipped → "
            f"{mean_std([o.test_mean for o in done])}% after {its} retraining iterations per "
            "layer"
        )
    for share in setup.baseline_shares:
        for retrain_its, when in ((0, "before"), (its, "after")):
            means = {
                m: statistics.mean(
                    p.zip(share, method=m, order=order, retrain_its=retrain_its).test_mean
                    for p in triples
                )
                for m in METHODS
            }
            best = max((m for m in METHODS if m != "mtz"), key=means.get)
            lines.append(
                f"- share {share:g}, {when} retraining: mtz {100 * means['mtz']:.2f}% vs the "
                f"best baseline ({best}) {100 * means[best]:.2f}% "
                f"({100 * (means['mtz'] - means[best]):+.2f} points)"
            )
    report.note("\n".join(lines) + "\n")


def run_tables(report: Report, triples: list[Triple], setup: ManySetup) -> tuple[int, ...]:
    """Every table after the originals; returns the chosen zipping order."""
    order = order_table(report, triples, setup)
    zip_table(report, triples, setup, order)
    scheme_table(report, triples, setup, order)
    baseline_table(report, triples, setup, order)
    pairs_table(report, triples, setup, order)
    summary_note(report, triples, setup, order)
    report.note(SCHEME_NOTE)
    return order


def main(argv: Sequence[str] | None = None) -> None:
    args = page_arguments(__doc__, "results-many.md", argv)
    setup = ManySetup()
    if args.quick:
        setup = dataclasses.replace(QUICK, originals=orig.quick_original)
    t0 = time.perf_counter()
    report = Report(
        args.quick,
        module="experiments.many",
        title="Results: zipping three networks (LeNet-300-100, MNIST 0–3, 4–6, 7–9)",
    )
    report.note(
        "Three tasks: `saved_fraction` here is (a + b + c − zipped) / (a + b + c), over the three "
        "originals; the pairs table gives the two-model figures."
    )
    triples = triples_for(setup, args.data_root)
    originals_table(report, triples)
    run_tables(report, triples, setup)
    report.choices_summary()
    report.write(args, setup, t0)


if __name__ == "__main__":
    main()
