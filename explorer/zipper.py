"""The app's handle on one zip in progress: a `ZipSession` plus what the pages show about it.

`ZipState` steps, undoes, resets and retrains through the engine's `ZipSession` and keeps, per
hidden layer, a `CostView`: the cost matrix, and the pairs and predicted error at every share
(the engine's `SharePreview`). A view is computed once (the next layer's from
`session.preview()`, a zipped layer's from its record) and reused for every redraw, so moving a
share slider never recomputes a Hessian. All the mathematics stays in `mtz_core`.
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

from .jobs import Job, JobCancelled
from .pair import LoadedPair

__all__ = [
    "ZipSettings",
    "CostView",
    "ZipState",
    "plan_savings",
    "default_plan",
    "point_row",
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
    cost: np.ndarray  # (n_a, n_b): the damped MTZ costs that steer the choice of pairs
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

    @property
    def n_a(self) -> int:
        return int(self.cost.shape[0])

    @property
    def n_b(self) -> int:
        return int(self.cost.shape[1])

    @property
    def max_k(self) -> int:
        return int(min(self.cost.shape))

    def pairs_for(self, k: int) -> np.ndarray:
        """The pairs for share k: the applied ones for a zipped layer, else the preview's."""
        if self.chosen is not None:
            return self.chosen
        if self.preview is not None:
            return self.preview.pairs(int(min(max(k, 0), self.max_k)))
        return np.zeros((0, 2), dtype=np.int64)

    def predicted(self, k: int) -> float | None:
        """The predicted error of zipping with k pairs (None when it is not known)."""
        k = int(min(max(k, 0), self.max_k))
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
    def from_record(rec: LayerRecord, preview: SharePreview | None) -> CostView:
        curve = None if preview is None else preview.predicted[1:]
        note = f"zipped with {rec.k} pairs ({rec.method}, damping {rec.damping:g})"
        if rec.pseudo_inverse:
            note += "; H_A + H_B was singular: the pseudo-inverse was used"
        no_curve = ""
        if preview is None and len(rec.members) > 1:
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


def default_plan(layers: Sequence[tuple[str, int, int]]) -> dict[str, int]:
    """Half of the narrower side of every hidden layer."""
    return {name: min(n_a, n_b) // 2 for name, n_a, n_b in layers}


def plan_savings(
    layers: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]], ks: Sequence[int]
) -> list[int]:
    """Parameters each group's sharing saves, counted from the sizes: every weight layer saves
    k_out·(s·K + 1), with k_out the shared units of the group it writes, s those of the group it
    reads (every input when it reads the model's input), K the weights per input unit (kernel
    or flatten positions), and no + 1 without a bias. A layer's saving is counted in the group
    it writes; for a chain this is k·(s·K + 1) per hidden layer, s the previous layer's k.

    `layers`, `groups`: the pair's rows (`LoadedPair.layers`, `LoadedPair.groups`); `ks` one
    count per group. Batch norm folded into the layers is not counted (the engine's
    `saved_fraction` counts it: the folded norms' parameters are gone even at k = 0).
    """
    if len(ks) != len(groups):
        raise ValueError(f"need one share per group ({len(groups)}), got {len(ks)}")
    k_of = {g["group"]: int(k) for g, k in zip(groups, ks)}
    saved = dict.fromkeys(k_of, 0)
    for row in layers:
        k_out = k_of.get(row.get("group"), 0)
        if not k_out:
            continue
        s = row["inputs"] if row.get("reads") is None else k_of.get(row["reads"], 0)
        saved[row["group"]] += k_out * (int(s) * int(row["per_unit"]) + int(row.get("bias", True)))
    return [saved[g["group"]] for g in groups]


def point_row(
    series: str,
    method: str,
    label: str,
    acc: tuple[float, float],
    saved_fraction: float,
    retrain_iterations: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """One configuration for the trade-off page (the sweep's column names)."""
    return {
        "series": series,
        "method": method,
        "label": label,
        "acc_a": float(acc[0]),
        "acc_b": float(acc[1]),
        "mean_acc": (float(acc[0]) + float(acc[1])) / 2,
        "saved_fraction": float(saved_fraction),
        "retrain_iterations": int(retrain_iterations),
        **extra,
    }


class ZipState:
    """One zip of the loaded pair, step by step, with its cached cost views and history."""

    def __init__(self, pair: LoadedPair, settings: ZipSettings | None = None) -> None:
        if not pair.zippable:
            raise ValueError(f"this pair cannot be zipped: {pair.reason}")
        self.pair = pair
        self.settings = settings or ZipSettings()
        s = self.settings
        ta, tb = pair.task_a, pair.task_b
        self.listener: Callable[[ProgressEvent], None] | None = None
        self.session = ZipSession(
            pair.model_a,
            pair.model_b,
            ta.batches("calib", s.batch_size, limit=s.calib_samples),
            tb.batches("calib", s.batch_size, limit=s.calib_samples),
            config=ZipConfig(**s.config()),
            heldout_a=ta.val[0][: s.heldout_samples],
            heldout_b=tb.val[0][: s.heldout_samples],
            progress=self._progress,
        )
        self.eval_data = (
            ta.batches("test", 512, limit=s.eval_samples),
            tb.batches("test", 512, limit=s.eval_samples),
        )
        # the original widths (session.hidden_layers reports the unshared ones once zipped)
        self._layers = list(self.session.hidden_layers)
        self.epoch = 0
        self._views: dict[int, CostView] = {}
        self._zipped_previews: dict[int, SharePreview] = {}
        self._next_epoch: int | None = None
        self.baseline = self.evaluate()
        self.accuracy = self.baseline
        self.events: list[dict[str, Any]] = []
        self.retrain_log: dict[int, list[dict[str, Any]]] = {}

    # -- inspection ----------------------------------------------------------------------
    @property
    def layers(self) -> list[tuple[str, int, int]]:
        """(name, n_a, n_b) of every hidden layer, with the original widths."""
        return self._layers

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
        text = ", ".join(
            f"{name} {ks.get(name, 0)}/{min(n_a, n_b)}" for name, n_a, n_b in self.layers
        )
        its = sum(e["iterations"] for runs in self.retrain_log.values() for e in runs)
        return text + (f" · retrained {its} its" if its else "")

    def sharing_rows(self) -> list[dict[str, Any]]:
        ks = self.shares()
        return [
            {
                "layer": name,
                "members": ", ".join(self.members(i)),
                "n_a": n_a,
                "n_b": n_b,
                "shared": ks.get(name, 0),
                "a_only": n_a - ks.get(name, 0),
                "b_only": n_b - ks.get(name, 0),
                "status": self.status(i),
            }
            for i, (name, n_a, n_b) in enumerate(self.layers)
        ]

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
                view = CostView.from_record(rec, self._zipped_previews.get(index))
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
        if len(group.members) > 1:
            try:
                preview = self.session.preview()
            except ValueError as exc:  # the engine's reason, shown where the curve would be
                cost = self.session.cost_matrix()
                return CostView.from_costs(index, group.name, cost, source, str(exc), note)
        else:
            preview = self.session.preview()
        return CostView.from_preview(preview, source, note=note)

    # -- actions -------------------------------------------------------------------------
    def evaluate(self) -> tuple[float, float]:
        model = self.session.model
        a = evaluate(model, self.eval_data[0], task=0).accuracy
        b = evaluate(model, self.eval_data[1], task=1).accuracy
        return a, b

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
        name, n_a, n_b = self.layers[index]
        if pairs is None:
            if k is None or isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise ValueError(f"the share of {name} must be a whole number of neurons")
            if not 0 <= int(k) <= min(n_a, n_b):
                raise ValueError(
                    f"share {k} is out of range for {name}: choose 0 to {min(n_a, n_b)} "
                    f"(the narrower of {n_a} and {n_b} neurons)"
                )
            rec = self.session.step(k=int(k))
        else:
            rec = self.session.step(pairs=pairs)
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
            "of": min(n_a, n_b),
            "predicted_error": rec.predicted_error,
            "heldout_error": rec.heldout_error,
            "pseudo_inverse": rec.pseudo_inverse,
            "acc_a": self.accuracy[0],
            "acc_b": self.accuracy[1],
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
        """Retrain jointly on both tasks (a job). On cancel or failure the network goes back
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
        ta, tb = self.pair.task_a, self.pair.task_b
        train_a = ta.batches("calib", batch_size, shuffle=True, seed=seed)
        train_b = tb.batches("calib", batch_size, shuffle=True, seed=seed + 1)
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
                train_a,
                train_b,
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
            "of": min(record.n_a, record.n_b),
            "predicted_error": None,
            "heldout_error": None,
            "acc_a": self.accuracy[0],
            "acc_b": self.accuracy[1],
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
