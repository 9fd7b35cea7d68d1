"""Running data through the zipped network up to one layer: its Hessians, and its error
measured on held-out data.

Both read the layer's inputs through a forward pre-hook (`hessian.capture_inputs`) that stops
the pass at the layer, one batch at a time, in eval mode, without gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .batches import CalibrationData
from .config import AUTO_HOLDOUT_EVERY
from .hessian import LayerHessian, SecondMoment, capture_inputs, hessian_rows, hessian_shape
from .zipped import ZippedLayer, ZippedNet

__all__ = ["stream_inputs", "layer_hessian", "measure_layer_error"]

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
) -> int:
    """Feed layer `index`'s inputs for task `task` on every batch of `data` to `take`;
    returns the number of samples. `check` runs before each batch (cancellation)."""
    layer = model.layers[index]
    total = data.total()
    samples = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture_inputs(layer, take) as run:
            for i, x in enumerate(data):
                check()
                run(lambda x=x: model(x, task))
                samples += x.shape[0]
                on_batch(i + 1, total, task)
    finally:
        model.train(was_training)
    return samples


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
) -> tuple[LayerHessian, torch.Tensor | None]:
    """Task `task`'s Hessian of layer `index` over its shared inputs; with `split`, every
    AUTO_HOLDOUT_EVERY-th sample goes to a second, held-out accumulator instead."""
    layer = model.layers[index]
    spec, s = layer.spec, layer.sizes.in_shared
    blocks, dim = hessian_shape(spec, s, kind)
    if s == 0:  # no shared inputs: a shared neuron shares only its bias, and E[1·1] = 1
        ones = torch.ones(blocks, 1, 1, dtype=torch.float64, device=device)
        return LayerHessian(ones, kind, 0, 0), (ones if split else None)
    acc = SecondMoment(dim, blocks, device)
    hold = SecondMoment(dim, blocks, device) if split else None
    s_cols = layer.input_columns(s)
    seen = [0]

    def take(xs: list[torch.Tensor]) -> None:
        x = xs[0][:, :s_cols]
        if hold is None:
            acc.update(hessian_rows(x, spec, kind))
            return
        idx = torch.arange(seen[0], seen[0] + x.shape[0], device=x.device)
        out = idx % AUTO_HOLDOUT_EVERY == AUTO_HOLDOUT_EVERY - 1
        acc.update(hessian_rows(x[~out], spec, kind))
        if bool(out.any()):
            hold.update(hessian_rows(x[out], spec, kind))
        seen[0] += x.shape[0]

    samples = stream_inputs(model, index, task, data, take, check=check, on_batch=on_batch)
    if hold is not None and (hold.n == 0 or acc.n == 0):
        raise ValueError(
            f"damping='auto' holds out every {AUTO_HOLDOUT_EVERY}th calibration sample; "
            f"data_{'ab'[task]} has {samples} samples, give at least {AUTO_HOLDOUT_EVERY}"
        )
    held = hold.finalize() if hold is not None else None
    used = samples - samples // AUTO_HOLDOUT_EVERY if split else samples
    return LayerHessian(acc.finalize(), kind, acc.n, used), held


def measure_layer_error(
    model: ZippedNet,
    index: int,
    old: ZippedLayer,
    pairs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    heldout: Sequence[CalibrationData],
    device: torch.device,
    *,
    check: Callable[[], None],
    on_batch: OnBatch,
) -> float:
    """½·mean over held-out samples (× output positions) of Σ over the shared neurons of the
    squared pre-activation change, summed over the tasks: the predicted error, measured.

    `model` is already zipped at `index` (its inputs there are what they were before), `old`
    the layer before zipping, `weight`/`bias` the shared neurons' new weights (float64).
    Only the shared inputs' weights changed, so the change is (w̃ − w_old)·x̄ over them.
    """
    if pairs.shape[0] == 0:
        return 0.0
    layer = model.layers[index]
    spec, s = layer.spec, layer.sizes.in_shared
    s_cols = layer.input_columns(s)
    total = 0.0
    for task, data in enumerate(heldout):
        rows = pairs[:, task].to(old.own_bias[task].device)
        d_w = weight.to(device) - old.own_weight[task][rows, :s_cols].to(device, torch.float64)
        d_b = bias.to(device) - old.own_bias[task][rows].to(device, torch.float64)
        sums = [0.0, 0]

        def take(xs: list[torch.Tensor], d_w=d_w, d_b=d_b, sums=sums) -> None:
            x = xs[0][:, :s_cols].to(device, torch.float64)
            if s == 0:  # only the bias changed
                n = x.shape[0] * (math.prod(spec.out_shape[1:]) if spec.kind == "conv" else 1)
                sums[0] += float((d_b**2).sum()) * n
                sums[1] += n
                return
            dy = layer.apply_weights(x, d_w, d_b)
            sums[0] += float((dy**2).sum())
            sums[1] += dy.shape[0] * dy[0, 0].numel()

        stream_inputs(model, index, task, data, take, check=check, on_batch=on_batch)
        total += 0.5 * sums[0] / sums[1]
    return total
