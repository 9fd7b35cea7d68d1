"""The app's handle on one zip in progress: a `ZipSession` plus what the pages show about it.

`ZipState` steps, undoes, resets and retrains through the engine's `ZipSession` (two models,
or three and more through `ZipSession.many`) and keeps, per hidden layer, a `CostView`: the cost
matrix, and the pairs and predicted error at every share (the engine's `SharePreview`; for three
or more models, which the preview does not cover, a `TupleCosts` of the group's stage-wise
costs). A view is computed once (the next layer's from `session.preview()`, a zipped layer's
from its record) and reused for every redraw, so moving a share slider never recomputes a
Hessian. All the mathematics stays in `mtz_core`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mtz_core import (
    LayerRecord,
    ProgressEvent,
    SharePreview,
    ZipCancelled,
    ZipConfig,
    ZipSession,
    evaluate,
    resolve_device,
)
from mtz_core.analysis import ManyAnalysis
from mtz_core.output_energy import layer_output_energy
from mtz_core.training import TASK_LETTERS

from .jobs import Job, JobCancelled
from .loaded import LoadedModels
from .tuple_costs import TupleCosts

__all__ = [
    "ZipSettings",
    "CostView",
    "ZipState",
    "plan_savings",
    "default_plan",
    "point_row",
    "acc_columns",
]


#: above this many neuron pairs, the Step page computes the next layer's costs only on request
BIG_LAYER_CELLS = 1024 * 1024


@dataclass(frozen=True)
class ZipSettings:
    """How zips are made in the app (method and data sizes); changing them starts a new zip."""

    method: str = "mtz"
    matching: str = "greedy"
    damping: float | str = ZipConfig.default_damping()
    calib_samples: int = 2048  # per task, for the Hessians
    batch_size: int = 256  # calibration batches
    heldout_samples: int = 300  # validation inputs per task for the measured layer error
    eval_samples: int = 1000  # test samples per task for the quick evaluation
    seed: int = 0
    batch_norm: str = ZipConfig.batch_norm  # fold, or keep each task's norm (mtz_core.norms)

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "matching": self.matching,
            "damping": self.damping,
            "seed": self.seed,
            "batch_norm": self.batch_norm,
        }


@dataclass
class CostView:
    """One layer's costs as the pages draw them (computed once, read many times).

    `curve[k - 1]` is the predicted error of zipping the layer with k pairs: the engine's
    `SharePreview`, the same number `step(k=k)` records, for every method and damping. A
    zipped layer keeps the curve of the preview made just before it was zipped, if there was
    one; its `applied_error` is the record's predicted error.
    """

    index: int
    layer: str
    cost: np.ndarray  # (n_a, n_b): the damped MTZ costs that steer the choice of pairs (A, B)
    curve: np.ndarray | None  # (m,): predicted error at k = 1..m; None when not computed
    source: str  # "zipped" | "next" | "estimate"
    preview: SharePreview | None = None
    chosen: np.ndarray | None = None  # the pairs actually applied (zipped layers)
    applied_error: float | None = None  # their predicted error (zipped layers)
    note: str = ""
    no_curve: str = ""  # why there is no preview of every share (the engine's reason), if none
    cheapest: float = 0.0
    median: float = 0.0
    figure_cache: dict = field(default_factory=dict)  # pooled matrices, histogram counts
    #: three or more models: every pair's and stage's costs, the tuples and their error
    tuples: TupleCosts | None = None

    @property
    def n_a(self) -> int:
        return int(self.cost.shape[0])

    @property
    def n_b(self) -> int:
        return int(self.cost.shape[1])

    @property
    def max_k(self) -> int:
        if self.tuples is not None:
            return self.tuples.max_k
        return int(min(self.cost.shape))

    def pairs_for(self, k: int) -> np.ndarray:
        """The (A, B) pairs for share k: the applied ones for a zipped layer, else the
        preview's (for three or more models, the first two columns of the tuples)."""
        if self.chosen is not None:
            return self.chosen[:, :2]
        if self.tuples is not None:
            return self.tuples.tuples(k)[:, :2]
        if self.preview is not None:
            return self.preview.pairs(int(min(max(k, 0), self.max_k)))
        return np.zeros((0, 2), dtype=np.int64)

    def predicted(self, k: int) -> float | None:
        """The predicted error of zipping with k pairs (None when it is not known)."""
        k = int(min(max(k, 0), self.max_k))
        if self.tuples is not None:
            return self.tuples.predicted(k)
        if self.curve is not None:
            return float(self.curve[k - 1]) if k else 0.0
        if self.chosen is not None and k == len(self.chosen):
            return self.applied_error
        return None

    @staticmethod
    def from_preview(preview: SharePreview, source: str, note: str = "") -> CostView:
        return CostView._make(
            preview.index,
            preview.name,
            preview.cost,
            preview.predicted[1:],
            source,
            preview,
            note=note,
        )

    @staticmethod
    def from_costs(
        index: int, layer: str, cost: np.ndarray, source: str, no_curve: str, note: str = ""
    ) -> CostView:
        """A group's cost matrix without a preview of every share (`no_curve` says why)."""
        return CostView._make(index, layer, cost, None, source, None, note=note, no_curve=no_curve)

    @staticmethod
    def from_tuples(
        index: int, layer: str, tuples: TupleCosts, source: str, no_curve: str, note: str = ""
    ) -> CostView:
        """A group of three or more models: the first two models' costs (the first stage),
        with every other comparison in `tuples`."""
        return CostView._make(
            index,
            layer,
            tuples.pair_cost(0, 1),
            None,
            source,
            None,
            note=note,
            no_curve=no_curve,
            tuples=tuples,
        )

    @staticmethod
    def from_record(
        rec: LayerRecord, preview: SharePreview | None, tuples: TupleCosts | None = None
    ) -> CostView:
        curve = None if preview is None else preview.predicted[1:]
        note = f"zipped with {rec.k} pairs ({rec.method}, damping {rec.damping:g})"
        if rec.pseudo_inverse:
            note += "; H_A + H_B was singular: the pseudo-inverse was used"
        no_curve = ""
        if rec.widths and len(rec.widths) > 2:
            no_curve = (
                f"{rec.name} zipped {len(rec.widths)} models; the engine previews every share "
                "for two"
            )
        elif preview is None and len(rec.members) > 1:
            no_curve = (
                f"{rec.name} is a residual stream of {len(rec.members)} layers, which the "
                "engine's preview of every share does not cover"
            )
        if rec.remerged:
            note += (
                f"; re-merged the already-shared rows of {', '.join(rec.remerged)} over the "
                "inputs it shared"
            )
        return CostView._make(
            rec.index,
            rec.name,
            rec.cost,
            curve,
            "zipped",
            preview,
            chosen=rec.pairs,
            applied_error=rec.predicted_error,
            note=note,
            no_curve=no_curve,
            tuples=tuples,
        )

    @staticmethod
    def _make(index, layer, cost, curve, source, preview, **extra) -> CostView:
        cost = np.asarray(cost, dtype=np.float64)
        finite = cost[np.isfinite(cost)]
        cheapest = float(finite.min()) if finite.size else 0.0
        median = float(np.median(finite)) if finite.size else 0.0
        return CostView(
            index,
            layer,
            cost,
            curve,
            source,
            preview,
            cheapest=cheapest,
            median=median,
            **extra,
        )


def default_plan(layers: Sequence[tuple[Any, ...]]) -> dict[str, int]:
    """Half of the narrowest model's units in every hidden layer ((name, *widths) each)."""
    return {name: min(widths) // 2 for name, *widths in layers}


def plan_savings(
    layers: Sequence[dict[str, Any]],
    groups: Sequence[dict[str, Any]],
    ks: Sequence[int],
    n_tasks: int | None = None,
) -> list[int]:
    """Parameters each group's sharing saves, counted from the sizes: every weight layer saves
    k_out·(s·K + 1) per model beyond the first (a shared unit is stored once instead of T
    times), with k_out the shared units of the group it writes, s those of the group it reads
    (every input when it reads the model's input), K the weights per input unit (kernel or
    flatten positions), and no + 1 without a bias. A layer's saving is counted in the group it
    writes; for a chain of two models this is k·(s·K + 1) per hidden layer, s the previous
    layer's k.

    `layers`, `groups`: the models' rows (`LoadedModels.layers`, `.groups`); `ks` one count per
    group; `n_tasks` the number of models (default: the groups' width columns). Batch norm
    folded into the layers is not counted (the engine's `saved_fraction` counts it: the folded
    norms' parameters are gone even at k = 0).
    """
    if n_tasks is None:
        n_tasks = sum(key.startswith("width ") for key in groups[0]) if groups else 2
    if len(ks) != len(groups):
        raise ValueError(f"need one share per group ({len(groups)}), got {len(ks)}")
    k_of = {g["group"]: int(k) for g, k in zip(groups, ks)}
    saved = dict.fromkeys(k_of, 0)
    for row in layers:
        k_out = k_of.get(row.get("group"), 0)
        if not k_out:
            continue
        s = row["inputs"] if row.get("reads") is None else k_of.get(row["reads"], 0)
        per_unit = int(s) * int(row["per_unit"]) + int(row.get("bias", True))
        saved[row["group"]] += (n_tasks - 1) * k_out * per_unit
    return [saved[g["group"]] for g in groups]


def acc_columns(n_tasks: int) -> list[str]:
    """The accuracy columns of T tasks: acc_a, acc_b, acc_c, …"""
    return [f"acc_{x}" for x in TASK_LETTERS[:n_tasks]]


def point_row(
    series: str,
    method: str,
    label: str,
    acc: Sequence[float],
    saved_fraction: float,
    retrain_iterations: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """One configuration for the trade-off page (the sweep's column names: acc_a, acc_b, …
    one per task, and mean_acc over all of them)."""
    accs = {col: float(a) for col, a in zip(acc_columns(len(acc)), acc)}
    return {
        "series": series,
        "method": method,
        "label": label,
        **accs,
        "mean_acc": sum(accs.values()) / len(accs),
        "saved_fraction": float(saved_fraction),
        "retrain_iterations": int(retrain_iterations),
        **extra,
    }


class ZipState:
    """One zip of the loaded models, step by step, with its cached cost views and history.

    Two models or more (`ZipSession.many`): accuracies are tuples with one entry per task."""

    def __init__(self, pair: LoadedModels, settings: ZipSettings | None = None) -> None:
        if not pair.zippable:
            raise ValueError(f"these models cannot be zipped: {pair.reason}")
        self.pair = pair
        self.settings = settings or ZipSettings()
        s = self.settings
        self.listener: Callable[[ProgressEvent], None] | None = None
        self.session = ZipSession.many(
            pair.nets,
            [t.batches("calib", s.batch_size, limit=s.calib_samples) for t in pair.tasks],
            config=ZipConfig(**s.config()),
            heldout=[t.val[0][: s.heldout_samples] for t in pair.tasks],
            progress=self._progress,
        )
        self.eval_data = tuple(t.batches("test", 512, limit=s.eval_samples) for t in pair.tasks)
        # the original widths (session.hidden_layers reports the unshared ones once zipped)
        self._layers = list(self.session.hidden_layers)
        self.epoch = 0
        self._views: dict[int, CostView] = {}
        self._zipped_previews: dict[int, SharePreview] = {}
        self._analyses: dict[int, ManyAnalysis] = {}  # T ≥ 3: each zipped group's, before it
        self._energies: dict[str, float] | None = None  # by layer: Σ over tasks (output_energy)
        self._next_epoch: int | None = None
        self.baseline = self.evaluate()
        self.accuracy = self.baseline
        self.events: list[dict[str, Any]] = []
        self.retrain_log: dict[int, list[dict[str, Any]]] = {}

    # -- inspection ----------------------------------------------------------------------
    @property
    def layers(self) -> list[tuple[Any, ...]]:
        """(name, *widths) of every hidden layer (group), one width per model, the original
        ones: (name, n_a, n_b) for two models."""
        return self._layers

    @property
    def n_tasks(self) -> int:
        return self.pair.n_tasks

    def full_share(self, index: int) -> int:
        """The most units group `index` can share: the narrowest model's width."""
        return int(min(self._layers[index][1:]))

    def output_energy(self, index: int) -> float | None:
        """Group `index`'s output energy: Σ over its layers and every task of ½ mean ‖W x̄‖²
        of the original model on its calibration samples (`mtz_core.output_energy`), in the
        units of a predicted error, so error / energy is the share of the layer's output a zip
        changes. Measured once for every layer (one pass per task over copies of the models,
        which other sessions share); None when it cannot be measured."""
        if self._energies is None:
            import copy

            s, totals = self.settings, {}
            names = [layer.spec.name for layer in self.session.model.layers]
            try:
                for net, task in zip(self.pair.nets, self.pair.tasks):
                    data = task.batches("calib", s.batch_size, limit=s.calib_samples)
                    found = layer_output_energy(copy.deepcopy(net), names, data)
                    for name, value in found.items():
                        totals[name] = totals.get(name, 0.0) + value
            except (ValueError, RuntimeError):
                totals = {}
            self._energies = totals
        values = [self._energies.get(name) for name in self.members(index)]
        if not values or any(v is None for v in values):
            return None
        return float(sum(values))

    def members(self, index: int) -> list[str]:
        """The layers of group `index` (one for a chain's hidden layer)."""
        layers = self.session.model.layers
        return [layers[i].spec.name for i in self.session.groups[index].members]

    def remerges(self, index: int) -> list[str]:
        """The layers whose already-shared rows zipping group `index` re-merges: its readers
        that belong to a group zipped before it with shared units (a residual network's layers
        can read units shared after their own). Their error is only known after the step; the
        preview's predicted error does not include it."""
        layers = self.session.model.layers
        zipped = {
            m
            for g, rec in zip(self.session.groups, self.session.records)
            if rec.k
            for m in g.members
        }
        return [layers[r].spec.name for r in self.session.groups[index].readers if r in zipped]

    @property
    def records(self):
        return self.session.records

    @property
    def next_index(self) -> int | None:
        return self.session.next_index

    @property
    def done(self) -> bool:
        return self.session.done

    def status(self, index: int) -> str:
        n = len(self.session.records)
        return "zipped" if index < n else ("next" if index == n else "pending")

    def saved_fraction(self) -> float:
        return self.session.result().saved_fraction

    def params(self) -> dict[str, int]:
        res = self.session.result()
        return dict(res.params, saved=res.saved)

    def shares(self) -> dict[str, int]:
        return {r.name: r.k for r in self.session.records}

    def label(self) -> str:
        ks = self.shares()
        text = ", ".join(f"{name} {ks.get(name, 0)}/{min(widths)}" for name, *widths in self.layers)
        its = sum(e["iterations"] for runs in self.retrain_log.values() for e in runs)
        return text + (f" · retrained {its} its" if its else "")

    def sharing_rows(self) -> list[dict[str, Any]]:
        """Per group: its width in every model (`n_a`, `n_b`, `n_c`, …), the shared units and
        each model's own ones (`a_only`, `b_only`, …)."""
        ks = self.shares()
        rows = []
        for i, (name, *widths) in enumerate(self.layers):
            k = ks.get(name, 0)
            row: dict[str, Any] = {"layer": name, "members": ", ".join(self.members(i))}
            row.update({f"n_{x}": n for x, n in zip(self.pair.letters, widths)})
            row["shared"] = k
            row.update({f"{x}_only": n - k for x, n in zip(self.pair.letters, widths)})
            row["status"] = self.status(i)
            rows.append(row)
        return rows

    def error_rows(self) -> list[dict[str, Any]]:
        return [
            {"layer": r.name, "predicted": r.predicted_error, "heldout": r.heldout_error}
            for r in self.session.records
        ]

    def cost_view(
        self,
        index: int,
        estimates: dict[int, CostView] | None = None,
        *,
        compute: bool = True,
    ) -> CostView | None:
        """The layer's cost view: exact for zipped layers (from their records) and the next one
        (its Hessians are computed here once; not with `compute=False`, e.g. while a job runs
        on the network), an estimate from another zip for later layers."""
        records = self.session.records
        if index < len(records):
            view = self._views.get(index)
            rec = records[index]
            if view is None or view.source != "zipped" or view.chosen is not rec.pairs:
                tuples = None
                if index in self._analyses:
                    tuples = TupleCosts(
                        self._analyses[index],
                        self.session.config,
                        index,
                        chosen=rec.pairs,
                        applied_error=rec.predicted_error,
                    )
                view = CostView.from_record(rec, self._zipped_previews.get(index), tuples)
                self._views[index] = view
            return view
        if index == len(records):
            view = self._views.get(index)
            stale = view is None or view.source != "next" or self._next_epoch != self.epoch
            if stale and not compute:
                return None
            if stale:
                view = self.next_view("next", "the next layer, through the network as it is")
                self._views[index] = view
                self._next_epoch = self.epoch
            return view
        if estimates:
            return estimates.get(index)
        return None

    def next_view(self, source: str, note: str = "") -> CostView:
        """The next group's costs through the network as it is: the engine's preview of every
        share, or for a group the preview does not cover (a residual stream of several
        layers) its cost matrix alone, with the engine's reason."""
        index = self.session.next_index
        if index is None:
            raise ValueError("every hidden layer is zipped; there is no next one")
        group = self.session.groups[index]
        if self.n_tasks > 2:
            try:
                self.session.preview()
                reason = ""
            except ValueError as exc:  # the engine's reason: why there is no curve
                reason = str(exc)
            tuples = TupleCosts(self._group_analysis(index), self.session.config, index)
            return CostView.from_tuples(index, group.name, tuples, source, reason, note)
        try:
            preview = self.session.preview()
        except ValueError as exc:  # the engine's reason (a residual stream of several layers,
            # or a method that merges groups of units), shown where the curve would be
            cost = self.session.cost_matrix()
            return CostView.from_costs(index, group.name, cost, source, str(exc), note)
        return CostView.from_preview(preview, source, note=note)

    def _group_analysis(self, index: int) -> ManyAnalysis:
        """Group `index`'s analysis of every task (T ≥ 3) through the network as it is: the
        one the session's next step uses (cached by the session, so the step reuses it).

        `ZipSession` has no public accessor for it (`cost_matrix()` reads the two-model kind
        only), hence the private call; see docs/architecture.md."""
        analysis = self.session._analysis(index)
        if not isinstance(analysis, ManyAnalysis):
            raise TypeError(f"group {index}: expected the analysis of T >= 3 models")
        return analysis

    # -- actions -------------------------------------------------------------------------
    def evaluate(self) -> tuple[float, ...]:
        """Every task's accuracy on its quick-evaluation test samples."""
        model = self.session.model
        return tuple(
            evaluate(model, data, task=t).accuracy for t, data in enumerate(self.eval_data)
        )

    def acc_fields(self, acc: Sequence[float] | None = None) -> dict[str, float]:
        """acc_a, acc_b, … of `acc` (default: the current accuracy)."""
        acc = self.accuracy if acc is None else acc
        return dict(zip(acc_columns(len(acc)), (float(a) for a in acc)))

    def _changed(self) -> None:
        self.epoch += 1
        for i in [i for i in self._views if i >= len(self.session.records)]:
            if self._views[i].source == "zipped":
                del self._views[i]

    def step(self, k: int | None = None, *, pairs: Any = None) -> dict[str, Any]:
        """Zip the next layer with k shared neurons (or explicit pairs) and measure both tasks.

        A user's click starts fresh: a cancel left over from an earlier job is forgotten."""
        self.session.reset_cancel()
        return self._step(k, pairs=pairs)

    def _step(self, k: int | None = None, *, pairs: Any = None) -> dict[str, Any]:
        index = self.session.next_index
        if index is None:
            raise ValueError("every hidden layer is zipped; undo or reset to change one")
        name, *widths = self.layers[index]
        full = min(widths)
        if pairs is None:
            if k is None or isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise ValueError(f"the share of {name} must be a whole number of neurons")
            if not 0 <= int(k) <= full:
                sizes = " and ".join(str(w) for w in widths)
                raise ValueError(
                    f"share {k} is out of range for {name}: choose 0 to {full} "
                    f"(the narrowest of {sizes} neurons)"
                )
        if self.n_tasks > 2:
            self._analyses[index] = self._group_analysis(index)  # the step reuses it
        try:
            rec = self.session.step(k=int(k)) if pairs is None else self.session.step(pairs=pairs)
        except BaseException:
            self._analyses.pop(index, None)
            raise
        view = self._views.get(index)
        if view is not None and view.source == "next" and self._next_epoch == self.epoch:
            self._zipped_previews[index] = view.preview  # made on the network just zipped
        else:
            self._zipped_previews.pop(index, None)
        self._changed()
        before = self.accuracy
        self.accuracy = self.evaluate()
        event = {
            "step": f"zip {name}",
            "layer": name,
            "members": list(rec.members) or [name],
            "remerged": dict(rec.remerged),
            "index": index,
            "shared": rec.k,
            "of": full,
            "predicted_error": rec.predicted_error,
            "output_energy": self.output_energy(index),
            "heldout_error": rec.heldout_error,
            "pseudo_inverse": rec.pseudo_inverse,
            **self.acc_fields(),
            "saved_fraction": self.saved_fraction(),
            "before": before,
            "seconds": sum(rec.seconds.values()),
        }
        self.events.append(event)
        return event

    def undo(self) -> str:
        if not self.session.records:
            raise ValueError("nothing to undo: no layer is zipped")
        rec = self.session.undo()
        self.retrain_log.pop(rec.index, None)
        self._zipped_previews.pop(rec.index, None)
        self._analyses.pop(rec.index, None)
        while self.events:
            event = self.events.pop()
            if event["step"].startswith("zip") and event["index"] == rec.index:
                self.accuracy = tuple(event["before"])  # type: ignore[assignment]
                break
        self._changed()
        return rec.name

    def reset(self) -> None:
        while self.session.records:
            self.session.undo()
        self._analyses.clear()
        self.events.clear()
        self.retrain_log.clear()
        self.accuracy = self.baseline
        self._changed()

    def point(self) -> dict[str, Any]:
        its = sum(e["iterations"] for runs in self.retrain_log.values() for e in runs)
        return point_row(
            "yours (step-through)",
            self.settings.method,
            self.label(),
            self.accuracy,
            self.saved_fraction(),
            its,
            shares=self.shares(),
        )

    # -- long work (runs in a job's thread) -----------------------------------------------
    def _progress(self, event: ProgressEvent) -> None:
        if self.listener is not None:
            self.listener(event)

    def run_remaining(self, job: Job, plan: dict[str, int]) -> list[dict[str, Any]]:
        """Zip every remaining layer with the planned shares (a job: progress, cancel)."""
        self.session.reset_cancel()  # a new job: only its own cancel counts
        job.on_cancel(self.session.cancel)
        remaining = [i for i in range(len(self.layers)) if self.status(i) != "zipped"]
        events = []

        def listen(ev: ProgressEvent) -> None:
            pos = remaining.index(ev.index) if ev.index in remaining else 0
            frac = (ev.done / ev.total) if ev.total else 0.0
            job.progress(
                int(1000 * (pos + frac) / max(len(remaining), 1)),
                1000,
                f"{ev.layer}: {ev.stage}",
            )

        self.listener = listen
        try:
            for i in remaining:
                job.check()
                name = self.layers[i][0]
                events.append(self._step(int(plan.get(name, 0))))
        except ZipCancelled as exc:
            raise JobCancelled(
                f"stopped: {len(events)} layer(s) zipped, the interrupted one unchanged"
            ) from exc
        finally:
            self.listener = None
        job.progress(1000, 1000, "done")
        return events

    def retrain(
        self,
        job: Job,
        *,
        iterations: int,
        lr: float,
        batch_size: int = 32,
        device: str = "auto",
        optimizer: str = "sgd",
    ) -> dict[str, Any]:
        """Retrain jointly on every task (a job). On cancel or failure the network goes back
        to exactly what it was before this retraining."""
        session = self.session
        if not session.records:
            raise ValueError("zip a layer first: retraining recovers the accuracy a zip costs")
        check_retrain_options(iterations, lr, batch_size, device)
        record = session.records[-1]
        index = record.index
        snapshot = {k: v.detach().clone() for k, v in session.model.state_dict().items()}
        before_report = record.retraining
        before_device = session.device
        runs = self.retrain_log.setdefault(index, [])
        seed = self.settings.seed + 1000 * (index + 1) + len(runs)
        trains = [
            task.batches("calib", batch_size, shuffle=True, seed=seed + t)
            for t, task in enumerate(self.pair.tasks)
        ]
        dev = "auto" if device == "auto" else device

        def restore() -> None:
            with torch.no_grad():
                session.model.load_state_dict(snapshot)
            record.retraining = before_report
            if session.device != before_device:
                session.to(before_device)
            self._changed()

        def listen(ev: ProgressEvent) -> None:
            if ev.stage == "retrain":
                job.progress(
                    ev.done, ev.total, f"retraining after {record.name}: {ev.done}/{ev.total}"
                )
                if ev.losses is not None:
                    job.add_losses(ev.done, ev.losses)

        session.reset_cancel()  # a new job: only its own cancel counts
        job.on_cancel(session.cancel)
        self.listener = listen
        try:
            report = session.retrain(
                *trains,
                iterations=int(iterations),
                lr=float(lr),
                optimizer=optimizer,
                device=dev,
                seed=seed,
            )
        except BaseException:
            restore()
            raise
        finally:
            self.listener = None
        if report.cancelled or job.token.cancelled:
            done = report.iterations
            restore()
            raise JobCancelled(
                f"retraining cancelled after {done} of {iterations} iterations; the network is "
                "back to what it was before retraining"
            )
        self._changed()
        before = self.accuracy
        self.accuracy = self.evaluate()
        runs.append(
            {
                "iterations": report.iterations,
                "lr": float(lr),
                "batch_size": int(batch_size),
                "optimizer": optimizer,
                "seed": seed,
                "device": report.device,
            }
        )
        event = {
            "step": f"retrain {report.iterations} its",
            "layer": record.name,
            "index": index,
            "shared": record.k,
            "of": self.full_share(index),
            "predicted_error": None,
            "heldout_error": None,
            **self.acc_fields(),
            "saved_fraction": self.saved_fraction(),
            "before": before,
            "seconds": report.seconds,
            "final_losses": report.final_losses(),
            "device": report.device,
            "iterations": report.iterations,
            "lr": float(lr),
            "batch_size": int(batch_size),
        }
        self.events.append(event)
        return event


def check_retrain_options(iterations: Any, lr: Any, batch_size: Any, device: str) -> None:
    """Refuse bad retraining settings before a job starts (messages say what to do)."""
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)):
        raise ValueError("iterations must be a whole number")
    if not 1 <= int(iterations) <= 1_000_000:
        raise ValueError(f"iterations must be between 1 and 1,000,000, got {iterations}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0 or lr > 10:
        raise ValueError(f"the learning rate must be a number in (0, 10], got {lr}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"the batch size must be a positive whole number, got {batch_size}")
    if device not in ("auto", "cpu") and not str(device).startswith(("cuda", "mps")):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "CUDA was asked for, but this machine has no CUDA GPU; choose 'cpu' or 'auto' "
            "(auto uses a GPU when there is one)"
        )
    resolve_device(device)


def settings_refusal(loaded: LoadedModels, settings: ZipSettings) -> str | None:
    """The engine's reason for refusing `settings` on these models, or None when it accepts
    them. Two models take every setting ZipConfig accepts; for three or more the engine refuses
    some (batch_norm="keep", damping="auto"): asked with placeholder data (None), the session
    refuses a setting before it reads any data, and otherwise stops at the data (a TypeError),
    so nothing is traced or computed."""
    try:
        config = ZipConfig(**settings.config())
    except (TypeError, ValueError) as exc:
        return str(exc)
    if loaded.n_tasks <= 2:
        return None
    try:
        ZipSession.many(loaded.nets, [None] * loaded.n_tasks, config=config)
    except ValueError as exc:
        return str(exc)
    except TypeError:
        return None
    return None
