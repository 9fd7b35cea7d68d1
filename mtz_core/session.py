"""Zipping step by step: `ZipSession` zips one hidden layer per `step`, bottom-up.

Each step computes the layer's Hessians for both tasks through the current zipped network,
the N_A × N_B cost matrix, the pairs (by the chosen method and matching), the merged weights, and
applies them; it keeps a `LayerRecord`. `undo()` puts the layer back exactly; stepping the same
layer again (`restep`) reuses its Hessians and costs. `zip_models` is the one-call front door.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .architecture import Architecture, check_compatible, trace_model
from .batches import CalibrationData
from .config import ZipConfig
from .costs import (
    SharingOperator,
    average_merge,
    cost_matrix,
    hessian_merge,
    merge_error,
    sharing_operator,
    squared_distance,
)
from .hessian import (
    AUTO_EXACT_MAX_DIM,
    LayerHessian,
    SecondMoment,
    capture_inputs,
    damp,
    hessian_rows,
    hessian_shape,
)
from .layout import incoming_vectors, vectors_to_weights
from .matching import greedy_pairs, optimal_pairs, resolve_shares, validate_pairs
from .progress import CancelToken, ProgressCallback, ProgressEvent
from .zipped import ZippedLayer, ZippedNet

__all__ = ["LayerRecord", "ZipResult", "ZipSession", "zip_models"]


@dataclass
class LayerRecord:
    """What zipping one layer did. Indices are in the models' own neuron numbering."""

    name: str
    index: int
    kind: str  # "linear" | "conv"
    n_a: int
    n_b: int
    shared_inputs: int  # s: shared input units the cost and the shared weights cover
    share: Any  # what was asked for (fraction, count, or "pairs")
    pairs: np.ndarray  # int64 (k, 2): column 0 neuron of A, column 1 neuron of B
    cost: np.ndarray  # float64 (n_a, n_b): the MTZ cost d[i, j], whatever the method
    pair_costs: np.ndarray  # float64 (k,): cost[pairs[:, 0], pairs[:, 1]]
    pair_errors: np.ndarray  # float64 (k,): predicted error of each applied merge
    predicted_error: float  # Σ pair_errors: predicted increase of E_A + E_B
    method: str
    matching: str
    hessian: str  # "exact" | "channel" | "block"
    hessian_dim: int  # D, with the bias entry
    hessian_blocks: int
    damping: float
    lambdas: tuple[float, float]  # mean λ added per task
    n_samples: tuple[int, int]  # calibration samples per task
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.pairs.shape[0])

    def saved_parameters(self) -> int:
        """Parameters this layer's sharing saves: k·(s·K + 1)."""
        return self.k * (self.shared_inputs * self._per_unit + 1)

    _per_unit: int = 1


@dataclass
class ZipResult:
    """A zipped network, what each layer did, and the parameter counts."""

    model: ZippedNet
    layers: list[LayerRecord]
    params: dict[str, int]
    architecture: Architecture
    config: ZipConfig

    @property
    def saved(self) -> int:
        """Parameters saved against keeping both models: a + b − zipped."""
        return self.params["a"] + self.params["b"] - self.params["zipped"]

    @property
    def saved_fraction(self) -> float:
        return self.saved / (self.params["a"] + self.params["b"])


@dataclass
class _Analysis:
    """One layer's Hessians, sharing operator, vectors and costs (reused by restep)."""

    kind: str
    h_a: LayerHessian
    h_b: LayerHessian
    damped_a: torch.Tensor
    damped_b: torch.Tensor
    lambdas: tuple[float, float]
    op: SharingOperator | None
    va: torch.Tensor
    vb: torch.Tensor
    cost: torch.Tensor
    seconds: dict[str, float]


@dataclass
class _Undo:
    index: int
    layers: tuple[ZippedLayer, ZippedLayer] | None
    snapshot: ZippedNet | None
    version: int


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
    """Zip two models layer by layer; see the module docstring."""

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
        **options: Any,
    ) -> None:
        self.config = config if config is not None else ZipConfig(**options)
        if config is not None and options:
            raise TypeError(f"pass either config= or options, not both (got {sorted(options)})")
        for label, m in (("model_a", model_a), ("model_b", model_b)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{label} must be a torch.nn.Module, got {type(m).__name__}")
        self.device = _resolve_device(device, model_a, model_b)
        self.algebra_device = (
            self.device if self.device.type in ("cpu", "cuda") else torch.device("cpu")
        )
        dtype = next(model_a.parameters()).dtype
        self.data = (
            CalibrationData.wrap(data_a, "data_a", self.device, dtype),
            CalibrationData.wrap(data_b, "data_b", self.device, dtype),
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
        self.params = {
            "a": sum(p.numel() for p in model_a.parameters()),
            "b": sum(p.numel() for p in model_b.parameters()),
        }
        self.progress = progress
        self.after_step = after_step
        self.records: list[LayerRecord] = []
        self._undo: list[_Undo] = []
        self._cache: OrderedDict[tuple[int, int], _Analysis] = OrderedDict()
        self._counter = 0
        self._version = 0
        self._cancel = CancelToken()

    # -- inspection ----------------------------------------------------------------------
    @property
    def hidden_layers(self) -> list[tuple[str, int, int]]:
        """(name, n_a, n_b) of every zippable layer, in order."""
        return [
            (layer.spec.name, *layer.sizes.out_own[:2]) for layer in list(self.model.layers)[:-1]
        ]

    @property
    def next_index(self) -> int | None:
        i = len(self.records)
        return i if i < len(self.model.layers) - 1 else None

    @property
    def done(self) -> bool:
        return self.next_index is None

    def cost_matrix(self) -> np.ndarray:
        """The next layer's cost matrix (computing and caching its Hessians if needed)."""
        return self._analysis(self._require_next()).cost.cpu().numpy()

    def result(self) -> ZipResult:
        params = dict(self.params, zipped=self.model.num_parameters())
        return ZipResult(self.model, list(self.records), params, self.architecture, self.config)

    def cancel(self) -> None:
        """Ask the running step to stop (thread-safe); it raises `ZipCancelled`, state intact."""
        self._cancel.cancel()

    # -- stepping ------------------------------------------------------------------------
    def step(self, share: Any = 1.0, *, pairs: Any = None) -> LayerRecord:
        """Zip the next hidden layer with `share` (fraction or count) or explicit `pairs`."""
        index = self._require_next()
        self._cancel.reset()
        layer = self.model.layers[index]
        name = layer.spec.name
        n_a, n_b = layer.sizes.out_own[:2]
        if pairs is not None:
            chosen = validate_pairs(pairs, n_a, n_b, name=name)
            asked: Any = "pairs"
            k = chosen.shape[0]
        else:
            if isinstance(share, Mapping):
                share = {name: share[name]} if name in share else 0
            k = resolve_shares(share, [(name, n_a, n_b)])[name]
            asked, chosen = share, None
        analysis = self._analysis(index)
        self._cancel.check()
        cfg = self.config
        t0 = time.perf_counter()
        if chosen is None:
            chosen = self._choose(index, analysis, k)
        chosen = chosen.to(self.algebra_device)
        t1 = time.perf_counter()
        self._emit(index, "matching", 1, 1)
        a, b = analysis.va[chosen[:, 0]], analysis.vb[chosen[:, 1]]
        if cfg.method == "mtz":
            merged = hessian_merge(a, b, analysis.op)
        else:
            merged = average_merge(a, b)
        errors = merge_error(merged, a, b, analysis.damped_a, analysis.damped_b)
        s = layer.sizes.in_shared
        weight, bias = vectors_to_weights(merged, layer.spec, s, analysis.kind)
        dtype = layer.own_bias[0].dtype
        self._cancel.check()
        snapshot = self.model.clone() if self.after_step is not None else None
        old = self.model.zip_layer(
            index, chosen.cpu(), weight.to(self.device, dtype), bias.to(self.device, dtype)
        )
        t2 = time.perf_counter()
        self._emit(index, "merge", 1, 1)
        pairs_np = chosen.cpu().numpy().astype(np.int64)
        cost_np = analysis.cost.cpu().numpy()
        pair_errors = errors.cpu().numpy()
        record = LayerRecord(
            name=name,
            index=index,
            kind=layer.spec.kind,
            n_a=n_a,
            n_b=n_b,
            shared_inputs=s,
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
            damping=cfg.damping,
            lambdas=analysis.lambdas,
            n_samples=(analysis.h_a.n_samples, analysis.h_b.n_samples),
            seconds=dict(analysis.seconds, matching=t1 - t0, merge=t2 - t1),
            _per_unit=(
                layer.spec.kernel_positions if layer.spec.kind == "conv" else layer.spec.positions
            ),
        )
        self._undo.append(_Undo(index, old if snapshot is None else None, snapshot, self._version))
        self.records.append(record)
        self._bump()
        self._emit(index, "done", 1, 1)
        if self.after_step is not None:
            self.after_step(self, record)
            self._bump()  # the callback may have changed weights (retraining)
        return record

    def undo(self) -> LayerRecord:
        """Undo the last step exactly (and whatever the after-step callback did)."""
        if not self._undo:
            raise ValueError("nothing to undo: no layer has been zipped")
        entry = self._undo.pop()
        if entry.snapshot is not None:
            self.model = entry.snapshot
        else:
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

    def _emit(self, index: int, stage: str, done: int, total: int | None, task=None) -> None:
        if self.progress is not None:
            name = self.model.layers[index].spec.name
            n = len(self.model.layers) - 1
            self.progress(ProgressEvent(name, index, n, stage, done, total, task))

    def _hessian_kind(self, index: int) -> str:
        layer = self.model.layers[index]
        spec, s = layer.spec, layer.sizes.in_shared
        if spec.kind == "conv":
            return self.config.hessian
        if spec.positions == 1:
            return "exact"
        mode = self.config.flatten_hessian
        if mode == "auto":
            return "exact" if s * spec.positions + 1 <= AUTO_EXACT_MAX_DIM else "block"
        return mode

    def _analysis(self, index: int) -> _Analysis:
        key = (index, self._version)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        kind = self._hessian_kind(index)
        t0 = time.perf_counter()
        h_a, h_b = (self._hessian(index, t, kind) for t in (0, 1))
        t1 = time.perf_counter()
        damped_a, lam_a = damp(h_a.blocks, self.config.damping)
        damped_b, lam_b = damp(h_b.blocks, self.config.damping)
        op = sharing_operator(damped_a, damped_b)
        layer = self.model.layers[index]
        s = layer.sizes.in_shared
        va, vb = (
            incoming_vectors(
                layer.own_weight[t].detach().to(self.algebra_device, torch.float64),
                layer.own_bias[t].detach().to(self.algebra_device, torch.float64),
                layer.spec,
                s,
                kind,
            )
            for t in (0, 1)
        )
        cost = cost_matrix(va, vb, op.h_hat)
        if not torch.isfinite(cost).all():
            raise ValueError(f"layer {layer.spec.name!r}: the cost matrix has NaN or Inf entries")
        t2 = time.perf_counter()
        self._emit(index, "costs", 1, 1)
        analysis = _Analysis(
            kind,
            h_a,
            h_b,
            damped_a,
            damped_b,
            (float(lam_a.mean()), float(lam_b.mean())),
            op,
            va,
            vb,
            cost,
            {"hessian": t1 - t0, "costs": t2 - t1},
        )
        self._cache[key] = analysis
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return analysis

    def _hessian(self, index: int, task: int, kind: str) -> LayerHessian:
        layer = self.model.layers[index]
        spec, s = layer.spec, layer.sizes.in_shared
        blocks, dim = hessian_shape(spec, s, kind)
        if s == 0:  # no shared inputs: a shared neuron shares only its bias, and E[1·1] = 1
            ones = torch.ones(blocks, 1, 1, dtype=torch.float64, device=self.algebra_device)
            return LayerHessian(ones, kind, 0, 0)
        acc = SecondMoment(dim, blocks, self.algebra_device)
        s_cols = s * (spec.positions if spec.kind == "linear" else 1)
        samples = 0

        def take(xs: list[torch.Tensor]) -> None:
            acc.update(hessian_rows(xs[0][:, :s_cols], spec, kind))

        data = self.data[task]
        total = data.total()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), capture_inputs(layer, take) as run:
                for i, x in enumerate(data):
                    self._cancel.check()
                    run(lambda x=x: self.model(x, task))
                    samples += x.shape[0]
                    self._emit(index, "hessian", i + 1, total, task)
        finally:
            self.model.train(was_training)
        return LayerHessian(acc.finalize(), kind, acc.n, samples)

    def _choose(self, index: int, analysis: _Analysis, k: int) -> torch.Tensor:
        method, match = self.config.method, self.config.matching
        solver = greedy_pairs if match == "greedy" else optimal_pairs
        if method in ("mtz", "mtz-avg"):
            return solver(analysis.cost, k)
        if method == "euclidean":
            return solver(squared_distance(analysis.va, analysis.vb), k)
        n_a, n_b = analysis.cost.shape
        rng = np.random.default_rng([self.config.seed, index])
        rows = rng.choice(n_a, size=k, replace=False)
        cols = rng.choice(n_b, size=k, replace=False)
        return torch.as_tensor(np.stack([rows, cols], axis=1), dtype=torch.long)

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


def zip_models(
    model_a: nn.Module,
    model_b: nn.Module,
    data_a: Any,
    data_b: Any,
    *,
    share: Any = 1.0,
    pairs: Mapping[str, Any] | None = None,
    method: str = "mtz",
    matching: str = "greedy",
    hessian: str = "exact",
    flatten_hessian: str = "auto",
    damping: float | None = None,
    seed: int = 0,
    device: Any = None,
    progress: ProgressCallback | None = None,
    after_step: Callable[[ZipSession, LayerRecord], None] | None = None,
) -> ZipResult:
    """Zip every hidden layer of two models; see README and docs/method.md.

    `share`: a fraction in [0, 1] or a count for every layer, or a dict by layer name (missing
    layers: 0). `pairs`: {layer name: k×2 array} rebuilds a given zip exactly (overrides `share`;
    missing layers: 0).
    """
    config = ZipConfig(
        method=method,
        matching=matching,
        hessian=hessian,
        flatten_hessian=flatten_hessian,
        damping=ZipConfig.default_damping() if damping is None else damping,
        seed=seed,
    )
    session = ZipSession(
        model_a,
        model_b,
        data_a,
        data_b,
        config=config,
        device=device,
        progress=progress,
        after_step=after_step,
    )
    layers = session.hidden_layers
    names = [name for name, _, _ in layers]
    if pairs is not None:
        if not isinstance(pairs, Mapping):
            raise TypeError(
                f"pairs must be a dict {{layer name: k×2 array}}, got {type(pairs).__name__}"
            )
        unknown = sorted(set(pairs) - set(names))
        if unknown:
            raise ValueError(f"pairs names unknown layers {unknown}; the layers are {names}")
        checked = {
            name: validate_pairs(pairs.get(name, np.zeros((0, 2), np.int64)), n_a, n_b, name=name)
            for name, n_a, n_b in layers
        }
        for name in names:
            session.step(pairs=checked[name])
        return session.result()
    return session.run(resolve_shares(share, layers))


def hidden_layer_names(sessions: Sequence[ZipSession]) -> list[str]:  # pragma: no cover - helper
    return [name for name, _, _ in sessions[0].hidden_layers]
