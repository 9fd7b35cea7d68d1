"""Zipping step by step: `ZipSession` zips one hidden layer per `step`, bottom-up.

Each step computes the layer's Hessians for both tasks through the current zipped network,
the N_A × N_B cost matrix, the pairs (by the chosen method and matching), the merged weights, and
applies them; it keeps a `LayerRecord`. `undo()` puts the layer back exactly; stepping the same
layer again (`restep`) reuses its Hessians and costs. `mtz_core.pipeline.zip_models` is the
one-call front door.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed
from .analysis import GroupAnalysis, LayerAnalysis, ManyAnalysis, best_damping, hessian_kind
from .architecture import check_compatible, trace_model, trace_norms
from .batches import CalibrationData
from .clusters import union_ward, within_costs, zipit_clusters
from .config import AUTO_DAMPING_GRID, ZipConfig
from .devices import device_of, resolve_device
from .hessian import LayerHessian
from .layout import incoming_vectors, vectors_to_weights
from .matching import resolve_plan, validate_tuples
from .norms import recalibrate
from .progress import CancelToken, ProgressCallback, ProgressEvent, ZipCancelled
from .records import LayerRecord, SharePreview, ZipResult
from .streams import (
    centred_pair_errors,
    layer_hessian,
    pair_errors,
    unit_correlations,
    unit_sensitivity,
)
from .subset_step import check_subsets, subset_step
from .training import TASK_LETTERS, TrainReport, retrain_tasks
from .zipped import GroupUndo, LayerSizes, ZippedLayer, ZippedNet

__all__ = ["ZipSession"]


@dataclass
class _Undo:
    index: int
    undo: GroupUndo
    version: int
    state: dict[str, torch.Tensor] | None = None  # weights right after the step, before retraining


class ZipSession:
    """Zip two models layer by layer (`ZipSession.many` for more); see the module docstring.

    `heldout_a`/`heldout_b` (optional, like the calibration data) give each record a
    `heldout_error`: the measured increase of E_A + E_B on data the Hessians never saw.

    `device`: None keeps the network where the models are (the meaning None has everywhere in
    `mtz_core`); "auto" picks CUDA, then MPS, then the CPU; or a device name.

    `cancel`: a `CancelToken` that stops the running step or retraining (`cancel()` sets the
    session's own token when none is given). A cancel that arrives between two calls is kept
    for the next one; the session's own token is cleared once a call has stopped for it.
    """

    def __init__(
        self,
        model_a: nn.Module,
        model_b: nn.Module,
        data_a: Any,
        data_b: Any,
        *,
        config: ZipConfig | None = None,
        device: Any = None,
        progress: ProgressCallback | None = None,
        after_step: Callable[[ZipSession, LayerRecord], None] | None = None,
        heldout_a: Any = None,
        heldout_b: Any = None,
        cancel: CancelToken | None = None,
        **options: Any,
    ) -> None:
        if (heldout_a is None) != (heldout_b is None):
            raise ValueError("give both heldout_a and heldout_b, or neither")
        heldout = None if heldout_a is None else [heldout_a, heldout_b]
        self._setup([model_a, model_b], [data_a, data_b], heldout, config, device, options)
        self._finish_setup(progress, after_step, cancel)

    @classmethod
    def many(
        cls,
        models: Sequence[nn.Module],
        data: Sequence[Any],
        *,
        config: ZipConfig | None = None,
        device: Any = None,
        progress: ProgressCallback | None = None,
        after_step: Callable[[ZipSession, LayerRecord], None] | None = None,
        heldout: Sequence[Any] | None = None,
        cancel: CancelToken | None = None,
        **options: Any,
    ) -> ZipSession:
        """A session over T ≥ 2 models of one architecture, each with its own task (`data[t]`
        its calibration data, `heldout[t]` optional). A shared unit is shared by all T tasks:
        each step pairs the first two models' units by the MTZ cost, then matches every further
        model's units to the merged ones (that side's Hessian is the sum of its tasks'
        Hessians, exactly), and merges each T-tuple with the T-way Hessian-weighted average
        (docs/method.md). T = 2 is `ZipSession(a, b, data_a, data_b)`."""
        if isinstance(models, nn.Module) or not isinstance(models, Sequence):
            raise TypeError(f"models must be a list of modules, got {type(models).__name__}")
        if not 2 <= len(models) <= len(TASK_LETTERS):
            raise ValueError(f"zip 2 to {len(TASK_LETTERS)} models, got {len(models)}")
        if isinstance(data, (torch.Tensor, str)) or len(data) != len(models):
            raise ValueError(f"give one calibration source per model ({len(models)}) in data=")
        if heldout is not None and len(heldout) != len(models):
            raise ValueError(f"give one held-out source per model ({len(models)}), or none")
        self = cls.__new__(cls)
        self._setup(list(models), list(data), heldout, config, device, options)
        self._finish_setup(progress, after_step, cancel)
        return self

    def _setup(self, models, data, heldout, config, device, options) -> None:
        if config is not None and options:
            raise TypeError(f"pass either config= or options, not both (got {sorted(options)})")
        self.config = config if config is not None else ZipConfig(**options)
        letters = TASK_LETTERS[: len(models)]
        for x, m in zip(letters, models):
            if not isinstance(m, nn.Module):
                raise TypeError(f"model_{x} must be a torch.nn.Module, got {type(m).__name__}")
        if device is None:
            devices = [device_of(m) for m in models]
            if len(set(devices)) != 1:
                where = ", ".join(f"{x.upper()} {d}" for x, d in zip(letters, devices))
                raise ValueError(f"models are on different devices ({where}); pass device=")
            self.device = devices[0]
        else:
            self.device = resolve_device(device)
        dtype = next(models[0].parameters()).dtype
        self.data = tuple(
            CalibrationData.wrap(d, f"data_{x}", self.device, dtype) for x, d in zip(letters, data)
        )
        self.heldout = None
        if heldout is not None:
            self.heldout = tuple(
                CalibrationData.wrap(d, f"heldout_{x}", self.device, dtype)
                for x, d in zip(letters, heldout)
            )
        shapes = [d.sample_shape() for d in self.data]
        for x, shape in zip(letters[1:], shapes[1:]):
            if shape != shapes[0]:
                raise ValueError(
                    f"input shapes differ: data_a has {shapes[0]}, data_{x} has {shape}"
                )
        bn = self.config.batch_norm
        traced = [
            trace_model(m, shapes[0], label=f"model {x.upper()}", batch_norm=bn)
            for x, m in zip(letters, models)
        ]
        archs = [a for a, _ in traced]
        for arch in archs[1:]:
            check_compatible(archs[0], arch)
        self.architecture = archs[0]
        self._check_clusters(len(models))
        move = [
            [(w.to(self.device), None if b is None else b.to(self.device)) for w, b in ws]
            for _, ws in traced
        ]
        norms = [trace_norms(m, a) for m, a in zip(models, archs)]
        self.model = ZippedNet.from_models(archs, move, norms).eval()
        self._check_faithful(*models)
        if self.config.subsets:
            check_subsets(self)  # refuses what it does not cover; pool layers from here on
        self._groups = self.model.groups
        self._hidden = [(g.name, *self.model.layers[g.members[0]].widths()) for g in self._groups]
        self.params = {x: sum(p.numel() for p in m.parameters()) for x, m in zip(letters, models)}

    def _finish_setup(self, progress, after_step, cancel) -> None:
        if cancel is not None and not isinstance(cancel, CancelToken):
            raise TypeError(f"cancel must be a mtz_core.CancelToken, got {type(cancel).__name__}")
        self.progress = progress
        self.after_step = after_step
        self.records: list[LayerRecord] = []
        self._undo: list[_Undo] = []
        self._cache: OrderedDict[tuple[int, int], LayerAnalysis] = OrderedDict()
        self._counter = 0
        self._version = 0
        self._own_token = cancel is None
        self._cancel = cancel if cancel is not None else CancelToken()

    # -- inspection ----------------------------------------------------------------------
    @property
    def algebra_device(self) -> torch.device:
        """float64 algebra runs on the models' device when it has float64 (CPU, CUDA)."""
        return self.device if self.device.type in ("cpu", "cuda") else torch.device("cpu")

    @property
    def hidden_layers(self) -> list[tuple[Any, ...]]:
        """(name, n_a, n_b, …: one width per model) of every channel group, in zip order, with
        the models' own widths (zipping does not change them)."""
        return list(self._hidden)

    @property
    def next_index(self) -> int | None:
        i = len(self.records)
        return i if i < len(self._groups) else None

    @property
    def done(self) -> bool:
        return self.next_index is None

    @property
    def groups(self):
        """The zippable groups in step order (`mtz_core.program.ZipGroup`): one layer each for a
        chain; every layer writing one residual stream together for a residual network."""
        return self._groups

    def cost_matrix(self) -> np.ndarray:
        """The next layer's cost matrix (computing and caching its Hessians if needed).

        With damping="auto" it is the matrix for the factor that suits a full share best.
        """
        index = self._require_next()
        if self.config.subsets:
            raise ValueError(
                "cost_matrix() is one matching's matrix; subsets=True matches stage by stage: "
                "step and read the record's cost (the first two models') and pair_costs"
            )
        if self.model.n_tasks > 2:
            raise ValueError(
                f"cost_matrix() is the two-model matrix; with {self.model.n_tasks} models the "
                "costs are stage-wise (the first two models' matrix, then each further model "
                "against the merged units): step and read the record's cost and pair_costs"
            )
        analysis = self._analysis(index)
        damping = self.config.damping
        if damping == "auto":
            damping, _ = analysis.select_damping(
                analysis.full_share, self.config, index, check=self._check
            )
        return analysis.variant(damping).cost.cpu().numpy()

    def result(self) -> ZipResult:
        params = dict(self.params, zipped=self.model.num_parameters())
        return ZipResult(self.model, list(self.records), params, self.architecture, self.config)

    @property
    def cancel_token(self) -> CancelToken:
        return self._cancel

    def cancel(self) -> None:
        """Ask the running step or retraining to stop (thread-safe); if none is running, the
        next one stops at its start."""
        self._cancel.cancel()

    def reset_cancel(self) -> None:
        """Forget a cancel request nothing has acted on (a UI starting a new job)."""
        self._cancel.reset()

    def to(self, device: Any) -> ZipSession:
        """Move the network and the data's destination to `device` (e.g. to retrain on a GPU)."""
        dev = resolve_device(device)
        self.model.to(dev)
        for d in (*self.data, *(self.heldout or ())):
            d.device = dev
        self.device = dev
        self._cache.clear()
        return self

    # -- stepping ------------------------------------------------------------------------
    def step(self, share: Any = None, *, k: Any = None, pairs: Any = None) -> LayerRecord:
        """Zip the next group (a hidden layer of a chain; the layers writing one residual stream
        together): `share` a fraction in [0, 1] of the narrower side (or a dict by name), `k` a
        number of pairs (an int, or a dict by name), or explicit `pairs`. Neither given: share
        1.0.

        Raises `ZipCancelled` (network unchanged) when `cancel()` is called meanwhile.
        """
        index = self._require_next()
        group = self._groups[index]
        name = group.name
        first = self.model.layers[group.members[0]]
        spec = first.spec
        widths = tuple(first.widths())
        n_a, n_b = widths[:2]
        if pairs is not None:
            if share is not None or k is not None:
                raise ValueError("pass pairs= alone, without share= or k=")
            chosen = validate_tuples(pairs, widths, name)
            asked: float | None = None
            count = chosen.shape[0]
        else:
            share_l, k_l = self._for_layer(share, "share", name), self._for_layer(k, "k", name)
            # for more than two models a share is a fraction of the narrowest model's units
            plan = (n_a, n_b) if len(widths) == 2 else (min(widths),) * 2
            count = resolve_plan(share_l, k_l, [(name, *plan)])[name]
            asked = None if k_l is not None else float(1.0 if share_l is None else share_l)
            chosen = None
        self._check()
        if self.config.subsets:
            if chosen is not None:
                raise ValueError(
                    "pairs= sets tuples shared by every task; subsets=True chooses units "
                    "shared by subsets of the tasks (pass share= or k=)"
                )
            undo, record = subset_step(self, index, share_l, k_l, asked)
            distributed.sync_step(self.model, record.units)  # ranks agree
            return self._finish_step(index, undo, record)
        if self.config.method == "zipit" or self.config.within_model:
            if chosen is not None:
                raise ValueError(
                    "pairs= sets one-to-one pairs; method='zipit' and within_model=True "
                    "choose merges of their own (pass share= or k=)"
                )
            return self._cluster_step(index, count, asked)
        analysis = self._analysis(index)
        self._check()
        cfg = self.config
        t0 = time.perf_counter()
        scores = None
        damping = cfg.damping
        many = isinstance(analysis, ManyAnalysis)
        if many:
            if damping == "auto":
                damping, scores = analysis.select_damping(
                    count, chosen, cfg, index, check=self._check
                )
            chosen, merged, variant, tuple_costs, pinv = analysis.plan(
                count, chosen, cfg, index, damping
            )
            kinds = [kind for _, kind, _, _ in analysis.members]
            member_analyses = [None] * len(kinds)
        else:
            if damping == "auto":
                damping, scores = analysis.select_damping(
                    count, cfg, index, chosen, check=self._check
                )
            variant = analysis.variant(damping)
            if chosen is None:
                chosen = analysis.choose(variant, count, cfg, index)
            chosen = chosen.to(self.algebra_device)
            merged = analysis.merge(variant, chosen, cfg.method)
            pinv = variant.pseudo_inverse
            kinds = [la.kind for _, la in analysis.members]
            member_analyses = [la for _, la in analysis.members]
        parts = []
        for i, la, kind, m in zip(group.members, member_analyses, kinds, merged):
            layer = self.model.layers[i]
            w, b = vectors_to_weights(m, layer.spec, layer.sizes.in_shared, kind, layer.has_bias)
            parts.append((i, layer, la, m, w, b))
        t1 = time.perf_counter()
        self._emit(index, "matching", 1, 1)
        errors = torch.zeros(chosen.shape[0], dtype=torch.float64, device=self.algebra_device)
        weights, shifts = {}, {}
        if many and analysis.exact:
            errors = analysis.errors(merged, chosen).to(errors.device)
        for member, (i, layer, la, m, w, b) in enumerate(parts):
            if many:
                err, shift = self._many_errors(analysis, member, i, layer, chosen, m, w, b)
                if err is not None:
                    errors = errors + err
            else:
                err, shift = self._applied_errors(i, layer, la, chosen, m, w, b, with_shifts=True)
                errors = errors + err.to(errors.device)
            dtype = layer.like.dtype
            weights[i] = (w.to(self.device, dtype), None if b is None else b.to(self.device, dtype))
            shifts[i] = shift
            self._check()
        before = self.model.num_parameters()
        undo = self.model.zip_group(index, chosen.cpu(), weights, shifts)
        remerged: dict[str, float] = {}
        heldout = None
        try:
            remerge_held = 0.0
            for r, rows in undo.pending.items():
                err, held_r = self._remerge(index, r, rows, damping)
                remerged[self.model.layers[r].spec.name] = err
                remerge_held += held_r
            t2 = time.perf_counter()
            self._emit(index, "merge", 1, 1)
            if self.heldout is not None:
                heldout = remerge_held
                for member, (i, _layer, la, _m, w, b) in enumerate(parts):
                    scales = None
                    if many and analysis.scales[member] is not None:
                        scales = analysis.pair_scales(member, chosen)
                    heldout += self._heldout_error(
                        index, i, undo.layers[i], la, chosen, w, b, shifts[i], scales
                    )
        except BaseException:
            self.model.restore_group(undo)
            raise
        pairs_np = chosen.cpu().numpy().astype(np.int64)
        cost_np = variant.cost.cpu().numpy()
        pair_errors_np = errors.cpu().numpy()
        if many:
            pair_costs = tuple_costs.cpu().numpy()
            task_hs = analysis.members[0][2]  # the first member's Hessian of every task
            h_first = task_hs[0]
            n_samples = tuple(h.n_samples for h in task_hs)
            # λ_t = damping · trace(H_t)/D: what each task's Hessian gets in every stage
            lambdas = tuple(h.damped(damping)[1] for h in task_hs)
            h_dim, h_blocks, kind = h_first.s + int(first.has_bias), h_first.k, kinds[0]
        else:
            pair_costs = cost_np[pairs_np[:, 0], pairs_np[:, 1]]
            la = analysis.first
            n_samples = (la.h_a.n_samples, la.h_b.n_samples)
            lambdas = variant.lambdas
            h_dim, h_blocks, kind = la.h_a.s + int(first.has_bias), la.h_a.k, la.kind
        record = LayerRecord(
            name=name,
            index=index,
            kind=spec.kind,
            n_a=n_a,
            n_b=n_b,
            shared_inputs=first.sizes.in_shared,
            per_unit=spec.kernel_positions if spec.kind == "conv" else spec.positions,
            bias=first.has_bias,
            share=asked,
            pairs=pairs_np,
            cost=cost_np,
            pair_costs=pair_costs,
            pair_errors=pair_errors_np,
            predicted_error=float(pair_errors_np.sum()) + sum(remerged.values()),
            method=cfg.method,
            matching=cfg.matching,
            hessian=kind,
            hessian_dim=h_dim,
            hessian_blocks=h_blocks,
            damping=damping,
            lambdas=lambdas,
            n_samples=n_samples,
            pseudo_inverse=pinv,
            seconds=dict(analysis.seconds, matching=t1 - t0, merge=t2 - t1),
            heldout_error=heldout,
            damping_scores=scores,
            members=tuple(self.model.layers[i].spec.name for i in group.members),
            remerged=remerged,
            saved=before - self.model.num_parameters(),
            widths=tuple(self._hidden[index][1:]) if many else (),
        )
        if heldout is not None:
            record.seconds["heldout"] = time.perf_counter() - t2
        norms = [self.model.layers[i].norm for i in (*group.members, *undo.pending)]
        norms = [n for n in norms if n is not None]
        if cfg.recalibrate and norms:
            t3 = time.perf_counter()
            try:
                recalibrate(
                    self.model,
                    self.data,
                    lambda x, t: self.model(x, t),
                    norms=norms,
                    check=self._check,
                )
            except BaseException:
                self.model.restore_group(undo)
                raise
            record.seconds["recalibrate"] = time.perf_counter() - t3
        distributed.sync_step(self.model, pairs_np)  # ranks agree; rank 0's weights (no-op alone)
        return self._finish_step(index, undo, record)

    def _finish_step(self, index: int, undo: GroupUndo, record: LayerRecord) -> LayerRecord:
        """Record a zipped group (undo entry, record, version), then run `after_step`."""
        entry = _Undo(index, undo, self._version)
        self._undo.append(entry)
        self.records.append(record)
        self._bump()
        self._emit(index, "done", 1, 1)
        if self.after_step is not None:
            entry.state = _clone_state(self.model)
            try:
                self.after_step(self, record)
            finally:
                self._bump()  # the callback may have changed weights (retraining)
        return record

    def _cluster_step(self, index: int, count: int, asked: float | None) -> LayerRecord:
        """Zip group `index` with `count` merges by clusters (`mtz_core.clusters`): MTZ with
        within-model merges, or ZipIt!. Errors are exact for the exact Hessian kinds: each
        task's unit j moves from its row v_j to the row r_j its merged unit applies for that
        task, and the layer error grows by ½ (r_j − v_j)ᵀ H_t (r_j − v_j), H_t over all of
        task t's inputs."""
        cfg = self.config
        group = self._groups[index]
        (li,) = group.members
        layer = self.model.layers[li]
        spec, sizes = layer.spec, layer.sizes
        kind = hessian_kind(layer, cfg)
        dev = self.algebra_device
        n_a, n_b = sizes.out_own
        t0 = time.perf_counter()
        on_batch = self._on_batch(index, "hessian")
        full_h, full_v = [], []
        for t in (0, 1):
            units = self._units(layer, t)
            h, _ = layer_hessian(
                self.model,
                li,
                t,
                self.data[t],
                kind,
                False,
                dev,
                check=self._check,
                on_batch=on_batch,
                units=units,
            )
            full_h.append(h)
            full_v.append(self._vectors(layer, layer.own_weight[t], layer.own_bias[t], units, kind))
        t1 = time.perf_counter()
        damping = cfg.damping
        lambdas = (0.0, 0.0)
        seconds = {"hessian": t1 - t0}
        if cfg.method == "zipit":
            reader = group.readers[0]
            sims = unit_correlations(
                self.model,
                reader,
                self.data,
                dev,
                check=self._check,
                on_batch=self._on_batch(index, "features"),
            )
            assign, shared = zipit_clusters(sims, n_a, count, cfg.zipit_alpha, cfg.zipit_beta)
            cost = (1 - sims[:n_a, n_a:]).clone()
            union = 1 - sims
            merged = self._cluster_means(layer, assign, shared, kind)
        else:
            analysis = self._analysis(index).first
            variant = analysis.variant(damping)
            lambdas = variant.lambdas
            cost = variant.cost
            within = [within_costs(h.damped(damping)[0], v) for h, v in zip(full_h, full_v)]
            union = torch.cat(
                [torch.cat([within[0], cost], 1), torch.cat([cost.T, within[1]], 1)], 0
            )
            assign, shared = union_ward(within[0], within[1], cost, count)
            cross = self._shared_members(assign, shared)
            merged = analysis.merge(variant, cross.to(dev), "mtz")
        seconds["matching"] = time.perf_counter() - t1
        w, b = vectors_to_weights(merged, spec, sizes.in_shared, kind, layer.has_bias)
        dtype = layer.like.dtype
        w = w.to(self.device, dtype)
        b = None if b is None else b.to(self.device, dtype)
        before = self.model.num_parameters()
        held_h = None
        if self.heldout is not None:
            held_h = [
                layer_hessian(
                    self.model,
                    li,
                    t,
                    self.heldout[t],
                    kind,
                    False,
                    dev,
                    check=self._check,
                    on_batch=self._on_batch(index, "heldout"),
                    units=self._units(layer, t),
                )[0]
                for t in (0, 1)
            ]
        undo = self.model.zip_clusters(index, [a.to(self.device) for a in assign], shared, w, b)
        try:
            unit_err, held = self._cluster_errors(li, assign, kind, full_h, full_v, held_h)
        except BaseException:
            self.model.restore_group(undo)
            raise
        sizes_of = [
            torch.bincount(a, minlength=int(max(a.max() for a in assign)) + 1) for a in assign
        ]
        members = sizes_of[0] + sizes_of[1]
        merged_ids = torch.nonzero(members > 1).flatten()
        pair_costs = np.array(
            [self._cluster_cost(union, assign, int(u), n_a) for u in merged_ids.tolist()]
        )
        one_each = torch.nonzero((sizes_of[0][:shared] == 1) & (sizes_of[1][:shared] == 1))
        pairs_np = self._shared_members(assign, shared)[one_each.flatten()].numpy()
        record = LayerRecord(
            name=group.name,
            index=index,
            kind=spec.kind,
            n_a=n_a,
            n_b=n_b,
            shared_inputs=sizes.in_shared,
            per_unit=spec.kernel_positions if spec.kind == "conv" else spec.positions,
            bias=layer.has_bias,
            share=asked,
            pairs=pairs_np.astype(np.int64),
            cost=cost.cpu().numpy(),
            pair_costs=pair_costs,
            pair_errors=unit_err[merged_ids.to(unit_err.device)].cpu().numpy(),
            predicted_error=float(unit_err.sum()),
            method=cfg.method,
            matching=cfg.matching,
            hessian=kind,
            hessian_dim=full_h[0].s + int(layer.has_bias),
            hessian_blocks=full_h[0].k,
            damping=damping if cfg.method == "mtz" else 0.0,
            lambdas=lambdas,
            n_samples=(full_h[0].n_samples, full_h[1].n_samples),
            seconds=seconds,
            heldout_error=held,
            members=(spec.name,),
            saved=before - self.model.num_parameters(),
            clusters=tuple(a.cpu().numpy() for a in assign),
            n_shared=shared,
        )
        distributed.sync_step(self.model, np.concatenate(record.clusters))  # ranks agree
        return self._finish_step(index, undo, record)

    def _pair_weights(self, index: int, layer_index: int) -> torch.Tensor:
        """output_weighted: 2 g_i g_j / (g_i + g_j) for unit i of A and j of B, g each task's
        Fisher sensitivity of the unit (`unit_sensitivity`; 0 where neither matters)."""
        g_a, g_b = (
            unit_sensitivity(
                self.model,
                layer_index,
                t,
                self.data[t],
                check=self._check,
                on_batch=self._on_batch(index, "sensitivity"),
            ).to(self.algebra_device)
            for t in (0, 1)
        )
        both = g_a[:, None] + g_b[None, :]
        return torch.where(both > 0, 2 * g_a[:, None] * g_b[None, :] / both.clamp_min(1e-300), 0.0)

    def _check_clusters(self, n_models: int) -> None:
        """method='zipit' and within_model=True merge units of one model: refused, naming the
        reason, where that is not defined yet."""
        cfg = self.config
        if cfg.output_weighted:
            if n_models != 2 or self.architecture.graph is not None:
                raise ValueError(
                    "output_weighted=True weighs the units of one layer: two models, chains of "
                    "layers (no residual additions)"
                )
        if cfg.method != "zipit" and not cfg.within_model:
            return
        what = "method='zipit'" if cfg.method == "zipit" else "within_model=True"
        if n_models != 2:
            raise ValueError(f"{what} zips two models; got {n_models}")
        if self.architecture.graph is not None:
            raise ValueError(
                f"{what} supports chains of layers; these models have residual "
                "additions (use method='mtz' without within_model)"
            )
        if cfg.batch_norm == "keep" and any(sp.norm for sp in self.architecture.layers):
            raise ValueError(
                f"{what} merges units of one model, which a kept batch norm cannot follow: "
                "use batch_norm='fold'"
            )
        if cfg.damping == "auto":
            raise ValueError(f"{what} takes a fixed damping factor, not 'auto'")

    def _vectors(
        self,
        layer: ZippedLayer,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        units: int,
        kind: str,
    ) -> torch.Tensor:
        """Rows `weight` (+ `bias`) of `layer` over its first `units` input units, float64."""
        dev = self.algebra_device
        return incoming_vectors(
            weight.detach().to(dev, torch.float64),
            None if bias is None else bias.detach().to(dev, torch.float64),
            layer.spec,
            units,
            kind,
        )

    @staticmethod
    def _shared_members(assign: Sequence[torch.Tensor], shared: int) -> torch.Tensor:
        """(shared, 2): the first unit of each task in each shared cluster."""
        cols = []
        for a in assign:
            first = torch.full((shared,), -1, dtype=torch.int64)
            for j in reversed(range(a.numel())):
                u = int(a[j])
                if u < shared:
                    first[u] = j
            cols.append(first)
        return torch.stack(cols, 1)

    def _cluster_means(
        self, layer: ZippedLayer, assign: Sequence[torch.Tensor], shared: int, kind: str
    ) -> torch.Tensor:
        """ZipIt!'s merged rows over the shared inputs: the mean of every member's row."""
        s = layer.sizes.in_shared
        vs = [self._vectors(layer, layer.own_weight[t], layer.own_bias[t], s, kind) for t in (0, 1)]
        total = vs[0].new_zeros((shared, vs[0].shape[1]))
        count = vs[0].new_zeros(shared)
        for a, v in zip(assign, vs):
            a = a.to(v.device)
            inside = a < shared
            total.index_add_(0, a[inside], v[inside])
            count.index_add_(0, a[inside], torch.ones_like(a[inside], dtype=v.dtype))
        return total / count[:, None]

    def _cluster_errors(
        self,
        li: int,
        assign: Sequence[torch.Tensor],
        kind: str,
        hs: Sequence[LayerHessian],
        vs: Sequence[torch.Tensor],
        held: Sequence[LayerHessian] | None,
    ) -> tuple[torch.Tensor, float | None]:
        """Each merged unit's E_A + E_B increase (by merged unit id), and the held-out total."""
        layer = self.model.layers[li]
        n_units = int(max(int(a.max()) for a in assign)) + 1
        err = torch.zeros(n_units, dtype=torch.float64, device=self.algebra_device)
        held_total = 0.0
        for t, a in enumerate(assign):
            rows = self._vectors(layer, *layer.task_weight(t), self._units(layer, t), kind)
            present = torch.bincount(a, minlength=n_units) > 0
            position = torch.cumsum(present.long(), 0) - 1  # merged id -> row in t's layout
            delta = rows[position[a].to(rows.device)] - vs[t]
            err.index_add_(0, a.to(err.device), 0.5 * hs[t].quad(delta))
            if held is not None:
                held_total += float(0.5 * held[t].quad(delta).sum())
        return err, (held_total if held is not None else None)

    @staticmethod
    def _units(layer: ZippedLayer, task: int) -> int:
        return layer.sizes.in_shared + layer.sizes.in_own[task]

    @staticmethod
    def _cluster_cost(
        union: torch.Tensor, assign: Sequence[torch.Tensor], u: int, n_a: int
    ) -> float:
        """The matching's cost of merged unit u: its members' largest pairwise union cost."""
        ids = torch.cat(
            [torch.nonzero(assign[0] == u).flatten(), n_a + torch.nonzero(assign[1] == u).flatten()]
        )
        sub = union[ids][:, ids].cpu()
        sub = sub[~torch.eye(len(ids), dtype=torch.bool)]
        return float(sub.max())

    def _heldout_error(
        self,
        index: int,
        layer_index: int,
        before: ZippedLayer,
        analysis: LayerAnalysis | None,
        pairs: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        shifts: torch.Tensor | None,
        scales: Sequence[torch.Tensor] | None = None,
    ) -> float:
        """The increase of Σ_t E_t the applied weights cause at layer `layer_index` on the
        held-out data (`before`: the layer as it was, rows the original neurons). `scales`:
        each tuple's kept-norm scales per task (for T ≥ 3; two models: from `analysis`)."""
        args = (self.model, layer_index, before, pairs.cpu(), weight, bias, self.heldout)
        kw = {"check": self._check, "on_batch": self._on_batch(index, "heldout")}
        if scales is None and analysis is not None and analysis.scales is not None:
            scales = analysis.pair_scales(pairs)
        if scales is None:
            held = pair_errors(*args, self.algebra_device, **kw)
        else:
            held = centred_pair_errors(*args, self.algebra_device, scales, shifts, **kw)[0]
        return float(held.sum())

    def _remerge(
        self, index: int, reader: int, rows: list[torch.Tensor], damping: float
    ) -> tuple[float, float]:
        """Merge the already-shared rows of layer `reader` over the input columns this step
        shared: per row pair (fixed), the two tasks' weights on those columns (`rows[t]`) and
        the shared bias become one vector, weighted by the reader's Hessians over its shared
        inputs — the same two-Hessian merge as a step, with the pairs given. Returns the
        increase of E_A + E_B it causes on the Hessian samples and on the held-out data (0
        without)."""
        layer = self.model.layers[reader]
        sz = layer.sizes
        k_r = sz.shared
        view = ZippedLayer(
            replace(layer.spec, norm=False),
            LayerSizes(sz.in_shared, sz.in_own, 0, (k_r,) * layer.n_tasks),
            layer.like,
        )
        with torch.no_grad():
            for t in range(layer.n_tasks):
                view.own_weight[t].copy_(torch.cat([rows[t], layer.shared_own_weight[t]], dim=1))
                if layer.has_bias:
                    view.own_bias[t].copy_(layer.shared_bias)
        n_tasks = layer.n_tasks
        ident = torch.arange(k_r, device=self.algebra_device)[:, None].expand(k_r, n_tasks)
        if n_tasks > 2:
            many = self._many_analysis(index, [reader], view)
            _, (merged,), _, _, _ = many.plan(k_r, ident, self.config, index, damping)
            kind = many.members[0][1]
            analysis = None
        else:
            analysis = self._layer_analysis(index, reader, view)
            merged = analysis.merge(analysis.variant(damping), ident, self.config.method)
            kind = analysis.kind
        weight, bias = vectors_to_weights(merged, layer.spec, sz.in_shared, kind, layer.has_bias)
        if analysis is None:
            errors, shifts = self._many_errors(many, 0, reader, view, ident, merged, weight, bias)
            if errors is None:
                errors = many.errors([merged], ident)
        else:
            errors, shifts = self._applied_errors(
                reader, view, analysis, ident, merged, weight, bias, with_shifts=True
            )
        dtype = layer.like.dtype
        held = 0.0
        if self.heldout is not None:
            scales = None
            if analysis is None and many.scales[0] is not None:
                scales = many.pair_scales(0, ident)
            held = self._heldout_error(
                index, reader, view, analysis, ident, weight, bias, shifts, scales
            )
        self.model.set_shared_rows(
            reader,
            weight.to(self.device, dtype),
            None if bias is None else bias.to(self.device, dtype),
            shifts,
        )
        return float(errors.sum()), held

    def preview(self) -> SharePreview:
        """What zipping the next layer would do at every share k = 0 … min(n_A, n_B): the pairs
        and the predicted error, exactly as `step(k=k)` would pick and record them (its Hessians
        are computed here once and reused by the step). Needs a matching whose k pairs are a
        prefix of its k + 1 pairs (greedy; random and euclidean pairs too)."""
        index = self._require_next()
        cfg = self.config
        if cfg.matching != "greedy":
            raise ValueError(
                f"a preview of every share needs greedy matching (the first k pairs of k + 1); "
                f"matching={cfg.matching!r} picks each k anew: step(k=...) and read the record"
            )
        if self.model.n_tasks > 2:
            raise ValueError("a preview of every share covers two models; step(k=...) instead")
        if cfg.subsets:
            raise ValueError(
                "a preview of every share covers one matching; subsets=True matches stage by "
                "stage: step(k=...) and read the record"
            )
        if cfg.method == "zipit" or cfg.within_model:
            what = "method='zipit'" if cfg.method == "zipit" else "within_model=True"
            raise ValueError(
                f"a preview of every share covers one-to-one pairs; {what} merges groups of "
                "units: step(k=...) and read the record"
            )
        group = self._analysis(index)
        if len(group.members) > 1:
            raise ValueError(
                f"a preview of every share covers single-layer groups; {group.name!r} is a "
                "residual stream of several layers: step(k=...) and read the record"
            )
        layer_index, analysis = group.members[0]
        layer = self.model.layers[layer_index]
        m = analysis.full_share
        dampings = AUTO_DAMPING_GRID if cfg.damping == "auto" else (cfg.damping,)
        orders, merged, held = {}, {}, {}
        for d in dampings:
            self._check()
            variant = analysis.variant(d)
            orders[d] = analysis.choose(variant, m, cfg, index).to(self.algebra_device)
            merged[d] = analysis.merge(variant, orders[d], cfg.method)
            if cfg.damping == "auto":
                held[d] = torch.cumsum(analysis.held_errors(merged[d], orders[d]), 0)
        if analysis.exact:
            errors = {d: analysis.model_errors(merged[d], orders[d]) for d in dampings}
        else:  # one pass over the Hessian samples for every candidate of every damping
            all_pairs = torch.cat([orders[d] for d in dampings])
            all_merged = torch.cat([merged[d] for d in dampings])
            weight, bias = vectors_to_weights(
                all_merged, layer.spec, layer.sizes.in_shared, analysis.kind, layer.has_bias
            )
            flat = self._applied_errors(
                layer_index, layer, analysis, all_pairs, all_merged, weight, bias
            )
            errors = dict(zip(dampings, flat.split(m)))
        cum = {d: torch.cumsum(errors[d], 0).cpu().numpy() for d in dampings}
        chosen = []
        for count in range(m + 1):
            if len(dampings) == 1 or count == 0:
                chosen.append(dampings[-1] if count == 0 and len(dampings) > 1 else dampings[0])
                continue
            scores = {d: float(held[d][count - 1]) for d in dampings}
            chosen.append(best_damping(scores))
        if len(dampings) > 1 and m:
            chosen[0] = chosen[m]
        predicted = np.array(
            [0.0] + [float(cum[chosen[c]][c - 1]) for c in range(1, m + 1)], dtype=np.float64
        )
        full = chosen[m]
        n_a, n_b = layer.sizes.out_own[:2]
        return SharePreview(
            name=layer.spec.name,
            index=index,
            method=cfg.method,
            n_a=n_a,
            n_b=n_b,
            cost=analysis.variant(full).cost.cpu().numpy(),
            predicted=predicted,
            damping=np.array(chosen, dtype=np.float64),
            orders={d: o.cpu().numpy().astype(np.int64) for d, o in orders.items()},
            remerges=tuple(
                self.model.layers[r].spec.name
                for r in self._groups[index].readers
                if self.model.layers[r].sizes.shared
            ),
        )

    def retrain(
        self,
        *trains: Any,
        iterations: int,
        restore_on_cancel: bool = False,
        **options: Any,
    ) -> TrainReport:
        """Retrain the current network jointly on every task: one training source per task, in
        the models' order (see `mtz_core.training.retrain`).

        Undoing the last step undoes this retraining too. When `cancel()` is called it stops
        early and keeps the weights of the last completed iteration, or, with
        `restore_on_cancel=True` (what an interactive UI wants), puts back the weights from
        before this call and records nothing (the report still says what ran).
        """
        if self._undo and self._undo[-1].state is None:
            self._undo[-1].state = _clone_state(self.model)
        before = _clone_state(self.model) if restore_on_cancel else None
        index = self.records[-1].index if self.records else 0

        def report(p):
            self._emit(index, "retrain", p.iteration, p.total, losses=p.losses)

        if len(trains) != self.model.n_tasks:
            raise TypeError(
                f"retrain needs one training source per task ({self.model.n_tasks}), got "
                f"{len(trains)}"
            )
        options.setdefault("device", None)
        try:
            rep = retrain_tasks(
                self.model,
                trains,
                iterations=iterations,
                progress=report,
                cancel=self._cancel,
                **options,
            )
        finally:
            self._bump()
        if rep.cancelled and self._own_token:
            self._cancel.reset()  # this call acted on it
        if rep.cancelled and before is not None:
            self.model.load_state_dict(before)
            return rep
        if rep.iterations and self.model.layers[0].like.device != self.device:
            self.to(self.model.layers[0].like.device)
        if self.records:
            self.records[-1].retraining = _combine(self.records[-1].retraining, rep)
        return rep

    def undo(self) -> LayerRecord:
        """Undo the last step exactly (and the retraining or callback that followed it)."""
        if not self._undo:
            raise ValueError("nothing to undo: no layer has been zipped")
        entry = self._undo.pop()
        if entry.state is not None:
            self.model.load_state_dict(entry.state)
        self.model.restore_group(entry.undo)
        self.model.to(self.device)  # a retraining since may have moved the network
        self._version = entry.version
        return self.records.pop()

    def restep(self, share: Any = None, *, k: Any = None, pairs: Any = None) -> LayerRecord:
        """Zip the last zipped layer again with another share, reusing its Hessians and costs."""
        self.undo()
        return self.step(share, k=k, pairs=pairs)

    def run(self, counts: Mapping[str, int]) -> ZipResult:
        """Step through every remaining layer with `counts[name]` pairs (missing: 0)."""
        while not self.done:
            name = self._groups[self.next_index].name
            self.step(k=int(counts.get(name, 0)))
        return self.result()

    # -- internals -----------------------------------------------------------------------
    def _require_next(self) -> int:
        index = self.next_index
        if index is None:
            raise ValueError(
                f"all {len(self._groups)} hidden layers are zipped; undo() to change one"
            )
        return index

    def _bump(self) -> None:
        self._counter += 1
        self._version = self._counter

    def _emit(self, index, stage, done, total, task=None, losses=None) -> None:
        if self.progress is not None:
            name = self._groups[index].name
            n = len(self._groups)
            self.progress(ProgressEvent(name, index, n, stage, done, total, task, losses))

    def _check(self) -> None:
        """Raise `ZipCancelled` when a cancel was asked for (consuming the session's own
        token: the call that stops for it is the one it was meant for)."""
        if self._cancel.cancelled:
            if self._own_token:
                self._cancel.reset()
            raise ZipCancelled("cancelled; the network is unchanged by the interrupted step")

    def _for_layer(self, value: Any, what: str, name: str) -> Any:
        """`value`'s entry for layer `name` when it is a dict by layer name (missing: 0)."""
        if not isinstance(value, Mapping):
            return value
        names = [n for n, _, _ in self._hidden]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{what} names unknown layer(s) {unknown}; the layers are {names}")
        return value.get(name, 0)

    def _applied_errors(
        self,
        index: int,
        layer: ZippedLayer,
        analysis: LayerAnalysis,
        pairs: torch.Tensor,
        merged: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        with_shifts: bool = False,
    ) -> Any:
        """Per pair, the increase of E_A + E_B on the Hessian samples that the applied weights
        cause: closed form from the undamped Hessians when they are exact, otherwise measured by
        one pass over those samples (blocked Hessians drop cross-block terms).

        For a layer whose norm is kept per task, the change of each task's mean pre-norm output
        is absorbed by its running mean, and the error is what remains; `with_shifts` also
        returns those mean changes (k × 2; None for a layer without a kept norm).
        """
        samples_only = self.config.damping == "auto"
        args = (self.model, index, layer, pairs.cpu(), weight, bias, self.data)
        kw = {"check": self._check, "on_batch": self._on_batch(self._running_group(), "errors")}
        if analysis.scales is None:
            if analysis.exact:
                errors = analysis.model_errors(merged, pairs)
            else:
                errors = pair_errors(
                    *args, self.algebra_device, hessian_samples_only=samples_only, **kw
                )
            return (errors, None) if with_shifts else errors
        if analysis.exact:
            errors = analysis.model_errors(merged, pairs)
            shifts = analysis.mean_shifts(merged, pairs)
        else:
            errors, shifts = centred_pair_errors(
                *args,
                self.algebra_device,
                analysis.pair_scales(pairs),
                hessian_samples_only=samples_only,
                **kw,
            )
        return (errors, shifts) if with_shifts else errors

    def _on_batch(self, index: int, stage: str) -> Callable[[int, int | None, int], None]:
        return lambda done, total, task: self._emit(index, stage, done, total, task)

    def _running_group(self) -> int:
        """The group whose step is running (its members' and re-merged readers' progress
        events carry it): the next group."""
        nxt = self.next_index
        return nxt if nxt is not None else len(self._groups) - 1

    def _analysis(self, index: int) -> GroupAnalysis:
        """Group `index`'s analyses for the current network state (cached)."""
        key = (index, self._version)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        group = self._groups[index]
        if self.model.n_tasks > 2:
            analysis = self._many_analysis(index, group.members)
        else:
            members = [(i, self._layer_analysis(index, i)) for i in group.members]
            analysis = GroupAnalysis(group.name, members)
            if self.config.output_weighted:
                analysis.pair_weights = self._pair_weights(index, group.members[0])
        self._emit(index, "costs", 1, 1)
        self._cache[key] = analysis
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return analysis

    def _many_analysis(
        self, index: int, layer_indices: Sequence[int], view: ZippedLayer | None = None
    ) -> ManyAnalysis:
        """Every task's Hessians and incoming vectors of the layers (T ≥ 3 models; `view`: the
        rows of a re-merge, for its single layer)."""
        t0 = time.perf_counter()
        members, scales, helds = [], [], []
        split = self.config.damping == "auto"
        for i in layer_indices:
            layer = self.model.layers[i]
            rows = layer if view is None else view
            kind = hessian_kind(layer, self.config)
            hs, vs, held = [], [], []
            for t in range(self.model.n_tasks):
                h, h_held = layer_hessian(
                    self.model,
                    i,
                    t,
                    self.data[t],
                    kind,
                    split,
                    self.algebra_device,
                    check=self._check,
                    on_batch=self._on_batch(index, "hessian"),
                )
                hs.append(h)
                held.append(h_held)
                bias = rows.own_bias[t]
                vs.append(
                    incoming_vectors(
                        rows.own_weight[t].detach().to(self.algebra_device, torch.float64),
                        None
                        if bias is None
                        else bias.detach().to(self.algebra_device, torch.float64),
                        layer.spec,
                        layer.sizes.in_shared,
                        kind,
                    )
                )
            members.append((i, kind, hs, vs))
            helds.append(held)
            sc = None
            if layer.norm is not None:  # a view's rows are the layer's first (shared) units
                n = rows.own_weight[0].shape[0]
                sc = [
                    layer.norm.scale(t)[:n].detach().to(self.algebra_device, torch.float64)
                    for t in range(self.model.n_tasks)
                ]
            scales.append(sc)
        name = self._groups[index].name
        seconds = {"hessian": time.perf_counter() - t0}
        return ManyAnalysis(name, members, seconds, scales, helds if split else None)

    def _many_errors(
        self,
        many: ManyAnalysis,
        member: int,
        layer_index: int,
        before: ZippedLayer,
        pairs: torch.Tensor,
        merged: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """A member's errors per tuple when they are measured (None when `many.errors` gives
        them in closed form for the whole group), and its kept norm's mean shifts (k × T;
        None without a kept norm)."""
        kept = many.scales[member] is not None
        if many.exact:
            return None, (many.mean_shifts(member, merged, pairs) if kept else None)
        args = (self.model, layer_index, before, pairs.cpu(), weight, bias, self.data)
        kw = dict(
            hessian_samples_only=self.config.damping == "auto",
            check=self._check,
            on_batch=self._on_batch(self._running_group(), "errors"),
        )
        if not kept:
            return pair_errors(*args, self.algebra_device, **kw), None
        scales = many.pair_scales(member, pairs)
        return centred_pair_errors(*args, self.algebra_device, scales, **kw)

    def _layer_analysis(
        self, index: int, layer_index: int, view: ZippedLayer | None = None
    ) -> LayerAnalysis:
        """Layer `layer_index`'s Hessians (through the current network) and incoming vectors
        (of `view`'s rows when given: a re-merge's already-shared rows)."""
        layer = self.model.layers[layer_index]
        rows = layer if view is None else view
        kind = hessian_kind(layer, self.config)
        split = self.config.damping == "auto"
        t0 = time.perf_counter()
        (h_a, held_a), (h_b, held_b) = (
            layer_hessian(
                self.model,
                layer_index,
                t,
                self.data[t],
                kind,
                split,
                self.algebra_device,
                check=self._check,
                on_batch=self._on_batch(index, "hessian"),
            )
            for t in (0, 1)
        )
        t1 = time.perf_counter()
        va, vb = (
            incoming_vectors(
                rows.own_weight[t].detach().to(self.algebra_device, torch.float64),
                None
                if rows.own_bias[t] is None
                else rows.own_bias[t].detach().to(self.algebra_device, torch.float64),
                layer.spec,
                layer.sizes.in_shared,
                kind,
            )
            for t in (0, 1)
        )
        held = (held_a, held_b) if split else None
        times = {"hessian": t1 - t0}
        scales = None
        if layer.norm is not None:  # a view's rows are the layer's first (shared) units
            n = rows.own_weight[0].shape[0]
            scales = tuple(
                layer.norm.scale(t)[:n].detach().to(self.algebra_device, torch.float64)
                for t in (0, 1)
            )
        analysis = LayerAnalysis(
            layer.spec.name, kind, h_a, h_b, held, va, vb, times, scales=scales
        )
        analysis.with_costs = view is None  # a re-merge's pairs are given: no cost matrix
        if not split and view is None:
            analysis.variant(self.config.damping)
        analysis.seconds["costs"] = time.perf_counter() - t1
        return analysis

    def _check_faithful(self, *models: nn.Module) -> None:
        """Our replay of each traced model must give its outputs in eval mode (what is zipped:
        batch norm with its running statistics, no dropout). A model in train mode is put in
        eval mode for the check and back afterwards, so its statistics never change."""
        x = next(iter(self.data[0]))[:8]
        with torch.no_grad():
            ours = self.model.forward_all(x)
            for t, m in enumerate(models):
                label = TASK_LETTERS[t].upper()
                modes = [(mod, mod.training) for mod in m.modules()]
                m.eval()
                try:
                    theirs = m(x.to(device_of(m))).to(ours[t].device)
                finally:
                    for mod, mode in modes:
                        mod.training = mode
                if theirs.shape != ours[t].shape or not torch.allclose(
                    theirs, ours[t], rtol=1e-3, atol=1e-4 * (1 + float(theirs.abs().max()))
                ):
                    raise ValueError(
                        f"model {label}: the traced layers do not reproduce the model's output "
                        "(its forward does something the tracer did not see); it cannot be zipped"
                    )


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _combine(first: TrainReport | None, second: TrainReport) -> TrainReport:
    if first is None:
        return second
    return TrainReport(
        first.iterations + second.iterations,
        first.samples + second.samples,
        first.losses + second.losses,
        first.seconds + second.seconds,
        second.cancelled,
        second.device,
        first.clipped + second.clipped,
    )
