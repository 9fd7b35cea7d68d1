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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .analysis import LayerAnalysis, hessian_kind
from .architecture import check_compatible, trace_model
from .batches import CalibrationData
from .config import ZipConfig
from .layout import incoming_vectors, vectors_to_weights
from .matching import resolve_shares, validate_pairs
from .progress import CancelToken, ProgressCallback, ProgressEvent
from .records import LayerRecord, ZipResult
from .streams import layer_hessian, measure_layer_error
from .training import TrainReport, retrain
from .zipped import ZippedLayer, ZippedNet

__all__ = ["ZipSession"]


@dataclass
class _Undo:
    index: int
    layers: tuple[ZippedLayer, ZippedLayer]
    version: int
    state: dict[str, torch.Tensor] | None = None  # weights right after the step, before retraining


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _resolve_device(device: Any, model_a: nn.Module, model_b: nn.Module) -> torch.device:
    if device is None:
        da, db = _device_of(model_a), _device_of(model_b)
        if da != db:
            raise ValueError(f"models are on different devices (A {da}, B {db}); pass device=")
        return da
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} was asked for, but CUDA is not available here")
    return dev


class ZipSession:
    """Zip two models layer by layer; see the module docstring.

    `heldout_a`/`heldout_b` (optional, like the calibration data) give each record a
    `heldout_error`: the measured increase of E_A + E_B on data the Hessians never saw.
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
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise TypeError(f"pass either config= or options, not both (got {sorted(options)})")
        self.config = config if config is not None else ZipConfig(**options)
        for label, m in (("model_a", model_a), ("model_b", model_b)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{label} must be a torch.nn.Module, got {type(m).__name__}")
        self.device = _resolve_device(device, model_a, model_b)
        dtype = next(model_a.parameters()).dtype
        self.data = (
            CalibrationData.wrap(data_a, "data_a", self.device, dtype),
            CalibrationData.wrap(data_b, "data_b", self.device, dtype),
        )
        self.heldout: tuple[CalibrationData, CalibrationData] | None = None
        if (heldout_a is None) != (heldout_b is None):
            raise ValueError("give both heldout_a and heldout_b, or neither")
        if heldout_a is not None:
            self.heldout = (
                CalibrationData.wrap(heldout_a, "heldout_a", self.device, dtype),
                CalibrationData.wrap(heldout_b, "heldout_b", self.device, dtype),
            )
        shape_a, shape_b = (d.sample_shape() for d in self.data)
        if shape_a != shape_b:
            raise ValueError(f"input shapes differ: data_a has {shape_a}, data_b has {shape_b}")
        arch_a, w_a = trace_model(model_a, shape_a, label="model A")
        arch_b, w_b = trace_model(model_b, shape_b, label="model B")
        check_compatible(arch_a, arch_b)
        self.architecture = arch_a
        move = [[(w.to(self.device), b.to(self.device)) for w, b in ws] for ws in (w_a, w_b)]
        self.model = ZippedNet.from_models([arch_a, arch_b], move).eval()
        self._check_faithful(model_a, model_b)
        self._hidden = [
            (la.name, la.out_units, lb.out_units) for la, lb in zip(arch_a.hidden, arch_b.hidden)
        ]
        self.params = {
            "a": sum(p.numel() for p in model_a.parameters()),
            "b": sum(p.numel() for p in model_b.parameters()),
        }
        self.progress = progress
        self.after_step = after_step
        self.records: list[LayerRecord] = []
        self._undo: list[_Undo] = []
        self._cache: OrderedDict[tuple[int, int], LayerAnalysis] = OrderedDict()
        self._counter = 0
        self._version = 0
        self._cancel = CancelToken()

    # -- inspection ----------------------------------------------------------------------
    @property
    def algebra_device(self) -> torch.device:
        """float64 algebra runs on the models' device when it has float64 (CPU, CUDA)."""
        return self.device if self.device.type in ("cpu", "cuda") else torch.device("cpu")

    @property
    def hidden_layers(self) -> list[tuple[str, int, int]]:
        """(name, n_a, n_b) of every zippable layer, in order, with the models' own widths
        (zipping does not change them)."""
        return list(self._hidden)

    @property
    def next_index(self) -> int | None:
        i = len(self.records)
        return i if i < len(self.model.layers) - 1 else None

    @property
    def done(self) -> bool:
        return self.next_index is None

    def cost_matrix(self) -> np.ndarray:
        """The next layer's cost matrix (computing and caching its Hessians if needed).

        With damping="auto" it is the matrix for the factor that suits a full share best.
        """
        index = self._require_next()
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

    def cancel(self) -> None:
        """Ask the running step or retraining to stop (thread-safe)."""
        self._cancel.cancel()

    def to(self, device: Any) -> ZipSession:
        """Move the network and the data's destination to `device` (e.g. to retrain on a GPU)."""
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} was asked for, but CUDA is not available here")
        self.model.to(dev)
        for d in (*self.data, *(self.heldout or ())):
            d.device = dev
        self.device = dev
        self._cache.clear()
        return self

    # -- stepping ------------------------------------------------------------------------
    def step(self, share: Any = 1.0, *, pairs: Any = None) -> LayerRecord:
        """Zip the next hidden layer with `share` (fraction or count) or explicit `pairs`.

        Raises `ZipCancelled` (network unchanged) when `cancel()` is called meanwhile.
        """
        index = self._require_next()
        self._cancel.reset()
        layer = self.model.layers[index]
        name, spec = layer.spec.name, layer.spec
        n_a, n_b = layer.sizes.out_own[:2]
        if pairs is not None:
            chosen = validate_pairs(pairs, n_a, n_b, name=name)
            asked: Any = "pairs"
            k = chosen.shape[0]
        else:
            if isinstance(share, Mapping):
                share = share[name] if name in share else 0
            k = resolve_shares(share, [(name, n_a, n_b)])[name]
            asked, chosen = share, None
        analysis = self._analysis(index)
        self._cancel.check()
        cfg = self.config
        t0 = time.perf_counter()
        scores = None
        damping = cfg.damping
        if damping == "auto":
            damping, scores = analysis.select_damping(k, cfg, index, chosen, check=self._check)
        variant = analysis.variant(damping)
        if chosen is None:
            chosen = analysis.choose(variant, k, cfg, index)
        chosen = chosen.to(self.algebra_device)
        t1 = time.perf_counter()
        self._emit(index, "matching", 1, 1)
        merged, errors = analysis.merge(variant, chosen, cfg.method)
        s = layer.sizes.in_shared
        weight, bias = vectors_to_weights(merged, spec, s, analysis.kind)
        self._cancel.check()
        dtype = layer.own_bias[0].dtype
        old = self.model.zip_layer(
            index, chosen.cpu(), weight.to(self.device, dtype), bias.to(self.device, dtype)
        )
        t2 = time.perf_counter()
        self._emit(index, "merge", 1, 1)
        heldout = None
        if self.heldout is not None:
            try:
                heldout = measure_layer_error(
                    self.model,
                    index,
                    old[0],
                    chosen.cpu(),
                    weight,
                    bias,
                    self.heldout,
                    self.algebra_device,
                    check=self._check,
                    on_batch=self._on_batch(index, "heldout"),
                )
            except BaseException:
                self.model.restore_layers(index, old)
                raise
        pairs_np = chosen.cpu().numpy().astype(np.int64)
        cost_np = variant.cost.cpu().numpy()
        pair_errors = errors.cpu().numpy()
        record = LayerRecord(
            name=name,
            index=index,
            kind=spec.kind,
            n_a=n_a,
            n_b=n_b,
            shared_inputs=s,
            per_unit=spec.kernel_positions if spec.kind == "conv" else spec.positions,
            share=asked,
            pairs=pairs_np,
            cost=cost_np,
            pair_costs=cost_np[pairs_np[:, 0], pairs_np[:, 1]],
            pair_errors=pair_errors,
            predicted_error=float(pair_errors.sum()),
            method=cfg.method,
            matching=cfg.matching,
            hessian=analysis.kind,
            hessian_dim=analysis.h_a.dim,
            hessian_blocks=analysis.h_a.blocks.shape[0],
            damping=damping,
            lambdas=variant.lambdas,
            n_samples=(analysis.h_a.n_samples, analysis.h_b.n_samples),
            seconds=dict(analysis.seconds, matching=t1 - t0, merge=t2 - t1),
            heldout_error=heldout,
            damping_scores=scores,
        )
        if heldout is not None:
            record.seconds["heldout"] = time.perf_counter() - t2
        entry = _Undo(index, old, self._version)
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

    def retrain(
        self,
        train_a: Any,
        train_b: Any,
        *,
        iterations: int,
        restore_on_cancel: bool = False,
        **options: Any,
    ) -> TrainReport:
        """Retrain the current network jointly on both tasks (see `mtz_core.training.retrain`).

        Undoing the last step undoes this retraining too. When `cancel()` is called it stops
        early and keeps the weights of the last completed iteration, or, with
        `restore_on_cancel=True` (what an interactive UI wants), puts back the weights from
        before this call and records nothing (the report still says what ran).
        """
        self._cancel.reset()
        if self._undo and self._undo[-1].state is None:
            self._undo[-1].state = _clone_state(self.model)
        before = _clone_state(self.model) if restore_on_cancel else None
        index = self.records[-1].index if self.records else 0

        def report(p):
            self._emit(index, "retrain", p.iteration, p.total, losses=p.losses)

        options.setdefault("device", None)
        try:
            rep = retrain(
                self.model,
                train_a,
                train_b,
                iterations=iterations,
                progress=report,
                cancel=self._cancel,
                **options,
            )
        finally:
            self._bump()
        if rep.cancelled and before is not None:
            self.model.load_state_dict(before)
            return rep
        if rep.iterations and self.model.layers[0].own_bias[0].device != self.device:
            self.to(self.model.layers[0].own_bias[0].device)
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
        self.model.restore_layers(entry.index, entry.layers)
        self._version = entry.version
        return self.records.pop()

    def restep(self, share: Any = 1.0, *, pairs: Any = None) -> LayerRecord:
        """Zip the last zipped layer again with another share, reusing its Hessians and costs."""
        self.undo()
        return self.step(share, pairs=pairs)

    def run(self, shares: Mapping[str, int]) -> ZipResult:
        """Step through every remaining layer with counts from `resolve_shares`."""
        while not self.done:
            name = self.model.layers[self.next_index].spec.name
            self.step(int(shares.get(name, 0)))
        return self.result()

    # -- internals -----------------------------------------------------------------------
    def _require_next(self) -> int:
        index = self.next_index
        if index is None:
            raise ValueError(
                f"all {len(self.model.layers) - 1} hidden layers are zipped; undo() to change one"
            )
        return index

    def _bump(self) -> None:
        self._counter += 1
        self._version = self._counter

    def _emit(self, index, stage, done, total, task=None, losses=None) -> None:
        if self.progress is not None:
            name = self.model.layers[index].spec.name
            n = len(self.model.layers) - 1
            self.progress(ProgressEvent(name, index, n, stage, done, total, task, losses))

    def _check(self) -> None:
        self._cancel.check()

    def _on_batch(self, index: int, stage: str) -> Callable[[int, int | None, int], None]:
        return lambda done, total, task: self._emit(index, stage, done, total, task)

    def _analysis(self, index: int) -> LayerAnalysis:
        """The layer's Hessians and vectors for the current network state (cached)."""
        key = (index, self._version)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        layer = self.model.layers[index]
        kind = hessian_kind(layer, self.config)
        split = self.config.damping == "auto"
        t0 = time.perf_counter()
        (h_a, held_a), (h_b, held_b) = (
            layer_hessian(
                self.model,
                index,
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
                layer.own_weight[t].detach().to(self.algebra_device, torch.float64),
                layer.own_bias[t].detach().to(self.algebra_device, torch.float64),
                layer.spec,
                layer.sizes.in_shared,
                kind,
            )
            for t in (0, 1)
        )
        held = (held_a, held_b) if split else None
        analysis = LayerAnalysis(kind, h_a, h_b, held, va, vb, {"hessian": t1 - t0})
        if not split:
            analysis.variant(self.config.damping)
        analysis.seconds["costs"] = time.perf_counter() - t1
        self._emit(index, "costs", 1, 1)
        self._cache[key] = analysis
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return analysis

    def _check_faithful(self, model_a: nn.Module, model_b: nn.Module) -> None:
        """Our replay of each traced model must give its outputs (when it is in eval mode)."""
        x = next(iter(self.data[0]))[:8]
        with torch.no_grad():
            ours = self.model.forward_all(x)
            for t, (label, m) in enumerate((("A", model_a), ("B", model_b))):
                if any(mod.training for mod in m.modules()):
                    continue  # running it would update batch-norm statistics: skip the check
                theirs = m(x.to(_device_of(m))).to(ours[t].device)
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
    )
