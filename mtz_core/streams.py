"""Running data through the zipped network up to one layer: its Hessians, and the error that
given weight changes cause there, measured on given data.

Both read the layer's inputs through a forward pre-hook (`hessian.capture_inputs`) that stops
the pass at the layer, one batch at a time, in eval mode, without gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from . import distributed
from .batches import CalibrationData
from .config import AUTO_HOLDOUT_EVERY, TASK_LETTERS
from .hessian import (
    LayerHessian,
    SecondMoment,
    capture_inputs,
    hessian_rows,
    hessian_shape,
    weight_blocks,
)
from .zipped import ZippedLayer, ZippedNet

__all__ = [
    "stream_inputs",
    "layer_hessian",
    "pair_errors",
    "centred_pair_errors",
    "unit_correlations",
    "unit_sensitivity",
]

#: called after each batch with (batches done, total or None, task)
OnBatch = Callable[[int, int | None, int], None]


def stream_inputs(
    model: ZippedNet,
    index: int,
    task: int,
    data: CalibrationData,
    take: Callable[[list[torch.Tensor]], None],
    *,
    check: Callable[[], None],
    on_batch: OnBatch,
    at: Callable[[int], None] | None = None,
    count_as: str | None = None,
) -> int:
    """Feed layer `index`'s inputs for task `task` on every batch of `data` to `take`;
    returns the number of samples. `check` runs before each batch (cancellation).

    Under `torch.distributed` (`mtz_core.distributed`) only this rank's batches are fed and the
    returned count is over every rank; `at(offset)` gets each fed batch's global offset of its
    first sample; `count_as` records this rank's samples ("calib": Hessians)."""
    layer = model.layers[index]
    total = data.total()
    samples = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture_inputs(layer, take) as run:
            for i, offset, x in distributed.shard_batches(data):
                check()
                if at is not None:
                    at(offset)
                run(lambda x=x: model(x, task))
                samples += x.shape[0]
                on_batch(i + 1, total, task)
    finally:
        model.train(was_training)
    if count_as is not None:
        distributed.record(count_as, task, samples)
    return distributed.sum_int(samples, device=data.device)


def _held_out(start: int, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out): the positions in a batch of samples start..start+count−1 that
    damping="auto" keeps in the Hessian and holds out of it, as index tensors on `device`.

    The split is arithmetic in the sample index, so it is computed on the host: a boolean mask
    on the device would make every batch wait for the device to count the mask's entries."""
    held = (torch.arange(start, start + count) % AUTO_HOLDOUT_EVERY) == AUTO_HOLDOUT_EVERY - 1
    kept, out = (~held).nonzero().squeeze(1), held.nonzero().squeeze(1)
    return kept.to(device, non_blocking=True), out.to(device, non_blocking=True)


def layer_hessian(
    model: ZippedNet,
    index: int,
    task: int,
    data: CalibrationData,
    kind: str,
    split: bool,
    device: torch.device,
    *,
    check: Callable[[], None],
    on_batch: OnBatch,
    units: int | None = None,
) -> tuple[LayerHessian, LayerHessian | None]:
    """Task `task`'s Hessian of layer `index` over its shared inputs (over its first `units`
    input units when given: all of them for a within-model merge); with `split`, every
    AUTO_HOLDOUT_EVERY-th sample goes to a second, held-out Hessian instead."""
    layer = model.layers[index]
    spec, s = layer.spec, (layer.sizes.in_shared if units is None else units)
    blocks, dim = hessian_shape(spec, s, kind)
    k = weight_blocks(spec, kind)
    if s == 0:  # no shared inputs: a shared neuron shares only its bias, and E[1·1] = 1
        ones = torch.ones(1, 1, 1, dtype=torch.float64, device=device)
        h = LayerHessian.from_moment(ones, k, layer.has_bias, kind)
        return h, (h if split else None)
    acc = SecondMoment(dim, blocks, device)
    hold = SecondMoment(dim, blocks, device) if split else None
    s_cols = layer.input_columns(s)
    seen = [0]

    def take(xs: list[torch.Tensor]) -> None:
        x = xs[0][:, :s_cols]
        if hold is None:
            acc.update(hessian_rows(x, spec, kind))
            return
        kept, out = _held_out(seen[0], x.shape[0], x.device)
        acc.update(hessian_rows(x.index_select(0, kept), spec, kind))
        if out.numel():
            hold.update(hessian_rows(x.index_select(0, out), spec, kind))
        seen[0] += x.shape[0]

    def at(offset: int) -> None:  # the global sample index (distributed: other ranks' too)
        seen[0] = offset

    samples = stream_inputs(
        model, index, task, data, take, check=check, on_batch=on_batch, at=at, count_as="calib"
    )
    distributed.all_reduce_moment(acc)
    if hold is not None:
        distributed.all_reduce_moment(hold)
    if hold is not None and (hold.n == 0 or acc.n == 0):
        raise ValueError(
            f"damping='auto' holds out every {AUTO_HOLDOUT_EVERY}th calibration sample; "
            f"data_{TASK_LETTERS[task]} has {samples} samples, give at least {AUTO_HOLDOUT_EVERY}"
        )
    used = samples - samples // AUTO_HOLDOUT_EVERY if split else samples
    h = acc.layer_hessian(k, layer.has_bias, kind, used)
    held = None
    if hold is not None:
        held = hold.layer_hessian(k, layer.has_bias, kind)
    return h, held


def pair_errors(
    model: ZippedNet,
    index: int,
    layer: ZippedLayer,
    pairs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    data: Sequence[CalibrationData],
    device: torch.device,
    *,
    hessian_samples_only: bool = False,
    check: Callable[[], None],
    on_batch: OnBatch,
) -> torch.Tensor:
    """For each pair, the increase of E_A + E_B on `data` (one source per task) when both
    neurons take `weight`/`bias` on the shared inputs: ½·mean over samples (× output positions)
    of the squared pre-activation change, summed over the tasks, shape (k,), float64.

    `layer` is layer `index` as it was before the pairs were applied (its rows are the
    original neurons); the inputs of layer `index` do not depend on its own weights, so the
    model may already be zipped there. Only the shared inputs' weights change, so the change is
    (w̃ − w_old)·x̄ over them. `hessian_samples_only`: skip the samples damping="auto" held out
    of the Hessian (what "on the Hessian data" means then).
    """
    sums, _, count = _pair_moments(
        model,
        index,
        layer,
        pairs,
        weight,
        bias,
        data,
        device,
        hessian_samples_only,
        check=check,
        on_batch=on_batch,
    )
    out = torch.zeros(pairs.shape[0], dtype=torch.float64, device=device)
    for t in range(len(data)):
        if count[t]:
            out += 0.5 * sums[t] / count[t]
    return out


def centred_pair_errors(
    model: ZippedNet,
    index: int,
    layer: ZippedLayer,
    pairs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    data: Sequence[CalibrationData],
    device: torch.device,
    scales: Sequence[torch.Tensor],
    shifts: torch.Tensor | None = None,
    *,
    hessian_samples_only: bool = False,
    check: Callable[[], None],
    on_batch: OnBatch,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`pair_errors` for a layer whose batch norm is kept per task: task t's output change is
    s_t (δy − c_t), its running mean moved by c_t. With `shifts` None, c_t is the mean of δy
    on `data` (the best one, what the zip applies) and the errors are ½ s_t² Var(δy); otherwise
    c = `shifts` (k × T) as applied. Returns the errors (k,) and the shifts (k × T)."""
    sq, lin, count = _pair_moments(
        model,
        index,
        layer,
        pairs,
        weight,
        bias,
        data,
        device,
        hessian_samples_only,
        check=check,
        on_batch=on_batch,
    )
    k = pairs.shape[0]
    out = torch.zeros(k, dtype=torch.float64, device=device)
    means = torch.zeros(k, len(data), dtype=torch.float64, device=device)
    for t in range(len(data)):
        if not count[t]:
            continue
        mean = lin[t] / count[t]
        c = mean if shifts is None else shifts[:, t].to(device, torch.float64)
        # E[(δy − c)²] = E[δy²] − 2c E[δy] + c²
        mse = (sq[t] / count[t] - 2 * c * mean + c * c).clamp_min(0)
        out += 0.5 * scales[t].to(device, torch.float64).square() * mse
        means[:, t] = mean
    return out, (means if shifts is None else shifts.to(device, torch.float64))


def _pair_moments(
    model: ZippedNet,
    index: int,
    layer: ZippedLayer,
    pairs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    data: Sequence[CalibrationData],
    device: torch.device,
    hessian_samples_only: bool,
    *,
    check: Callable[[], None],
    on_batch: OnBatch,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Per task: Σ δy², Σ δy per pair, and the number of rows (samples × output positions)."""
    k = pairs.shape[0]
    sq_all, lin_all, rows_all = [], [], []
    spec, s = layer.spec, layer.sizes.in_shared
    s_cols = layer.input_columns(s)
    per_sample = math.prod(spec.out_shape[1:]) if spec.kind == "conv" else 1
    weight = weight.to(device, torch.float64)
    bias = None if bias is None else bias.to(device, torch.float64)
    for task, source in enumerate(data):
        sq = torch.zeros(k, dtype=torch.float64, device=device)
        lin = torch.zeros(k, dtype=torch.float64, device=device)
        count = [0, 0]  # samples seen, samples counted
        sq_all.append(sq)
        lin_all.append(lin)
        if k == 0:
            rows_all.append(0)
            continue
        rows = pairs[:, task].to(layer.like.device)
        d_w = weight - layer.own_weight[task][rows, :s_cols].to(device, torch.float64)
        d_b = None
        if bias is not None:
            d_b = bias - layer.own_bias[task][rows].to(device, torch.float64)

        def take(xs: list[torch.Tensor], d_w=d_w, d_b=d_b, sq=sq, lin=lin, count=count) -> None:
            x = xs[0][:, :s_cols].to(device, torch.float64)
            if hessian_samples_only:
                keep, _ = _held_out(count[0], x.shape[0], x.device)
                count[0] += x.shape[0]
                x = x.index_select(0, keep)
            count[1] += x.shape[0]
            if x.shape[0] == 0:
                return
            if s == 0:  # only the bias changed (and nothing at all without a bias)
                if d_b is not None:
                    sq.add_((d_b**2) * (x.shape[0] * per_sample))
                    lin.add_(d_b * (x.shape[0] * per_sample))
                return
            dy = layer.apply_weights(x, d_w, d_b)
            dims = [0, *range(2, dy.dim())]
            sq.add_((dy**2).sum(dim=dims))
            lin.add_(dy.sum(dim=dims))

        def at(offset: int, count=count) -> None:  # the global sample index
            count[0] = offset

        stream_inputs(model, index, task, source, take, check=check, on_batch=on_batch, at=at)
        distributed.all_reduce_(sq, lin)
        rows_all.append(distributed.sum_int(count[1], device) * per_sample)
    return sq_all, lin_all, rows_all


def unit_correlations(
    model: ZippedNet,
    reader: int,
    data: Sequence[CalibrationData],
    device: torch.device,
    *,
    check: Callable[[], None],
    on_batch: OnBatch,
) -> torch.Tensor:
    """Correlations of the units a layer's reader sees, tasks' units side by side: every
    sample of every `data` run through task 0's and task 1's networks (ZipIt!'s features: the
    post-activation outputs, each spatial or flatten position a sample). Float64, (n_0 + n_1)²;
    a unit that never varies correlates 0 with everything."""
    layer = model.layers[reader]
    spec = layer.spec
    got: list[torch.Tensor] = []
    s1 = s2 = None
    n = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture_inputs(layer, lambda xs: got.append(xs[0])) as run:
            for d_i, d in enumerate(data):
                total = d.total()
                for i, x in enumerate(d):
                    check()
                    feats = []
                    for t in (0, 1):
                        got.clear()
                        run(lambda x=x, t=t: model(x, t))
                        feats.append(_unit_rows(got[0], spec))
                    f = torch.cat(feats, dim=1).to(device, torch.float64)
                    s1 = f.sum(0) if s1 is None else s1 + f.sum(0)
                    s2 = f.T @ f if s2 is None else s2.addmm_(f.T, f)
                    n += f.shape[0]
                    on_batch(i + 1, total, d_i)
    finally:
        model.train(was_training)
    mean = s1 / n
    cov = s2 / n - mean[:, None] * mean[None, :]
    std = torch.diagonal(cov).clamp_min(0).sqrt()
    scale = std[:, None] * std[None, :]
    return torch.where(scale > 0, cov / scale.clamp_min(1e-300), torch.zeros_like(cov))


def _unit_rows(x: torch.Tensor, spec) -> torch.Tensor:
    """A layer's input as (samples, units): conv channels over every pixel, a flatten's
    channel-major columns over every position."""
    if x.dim() == 4:
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    p = spec.positions if spec.kind == "linear" else 1
    n = x.shape[1] // p
    return x.reshape(x.shape[0], n, p).transpose(1, 2).reshape(-1, n)


def unit_sensitivity(
    model: ZippedNet,
    index: int,
    task: int,
    data: CalibrationData,
    *,
    check: Callable[[], None],
    on_batch: OnBatch,
) -> torch.Tensor:
    """How much task `task`'s loss cares about each output unit of layer `index`: the diagonal
    of the Fisher information of the layer's outputs, E_x E_{y~p(y|x)} (∂(−log p(y|x))/∂z_j)²,
    summed over a conv unit's pixels (float64, one per unit). Exact: one backward pass per
    class through the current network, in eval mode, on every sample of `data`."""
    layer = model.layers[index]
    got: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _a, out: got.append(out[0][0]))
    total = None
    n = 0
    was_training = model.training
    model.eval()
    try:
        total_batches = data.total()
        for i, x in enumerate(data):
            check()
            got.clear()
            with torch.enable_grad():
                logp = torch.log_softmax(model.logits(x, task).double(), dim=1)
                z = got[0]
                p = logp.detach().exp()
                classes = logp.shape[1]
                for c in range(classes):
                    (g,) = torch.autograd.grad(-logp[:, c].sum(), z, retain_graph=c < classes - 1)
                    sq = g.double().square()
                    if sq.dim() == 4:
                        sq = sq.sum(dim=(2, 3))
                    part = (p[:, c : c + 1] * sq).sum(0)
                    total = part if total is None else total + part
            n += x.shape[0]
            on_batch(i + 1, total_batches, task)
    finally:
        handle.remove()
        model.train(was_training)
    return total / n
