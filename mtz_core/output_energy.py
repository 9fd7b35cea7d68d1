"""A layer's output energy on calibration samples: the scale to read a predicted error against.

A record's `predicted_error` is the increase of E = ½ mean ‖ΔW x̄‖² (over the Hessian's rows:
samples for a linear layer, samples × output positions for a convolution) summed over the
tasks. On its own that number has no scale a reader can judge: 0.8 may be tiny for a layer
whose outputs are large and ruinous for one whose outputs are small. The same quantity of the
original rows, ½ mean ‖W x̄‖² = ½ tr(W H Wᵀ) with H = mean x̄ x̄ᵀ (`mtz_core.hessian`), is the
layer's output energy in the same units; `predicted_error / Σ_t energy_t` is the fraction of
the layer's output the zip changes.

The records do not hold the Hessians (they are large and the session keeps only the current
group's), so the energy is measured directly: one forward pass of the original model over the
calibration samples with a hook on the layer's output, mean over the same rows as H. For a
layer with a batch norm folded into it the hook reads the norm's output, which is what the
folded rows compute.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .architecture import trace_model

__all__ = ["layer_output_energy"]


def _inputs(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@contextmanager
def _energy_hooks(model: nn.Module, modules: dict[str, str]) -> Iterator[dict[str, list[float]]]:
    """Forward hooks adding each output's Σ ‖row‖² and row count (removed in `finally`)."""
    sums = {name: [0.0, 0.0] for name in modules}
    handles = []

    def hook_for(name: str):
        def hook(_module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            y = out.detach().to(torch.float64)
            if y.dim() == 4:  # conv: one row per sample and output position
                sums[name][0] += float(y.pow(2).sum())
                sums[name][1] += y.shape[0] * y.shape[2] * y.shape[3]
            else:
                sums[name][0] += float(y.pow(2).sum())
                sums[name][1] += y.shape[0]

        return hook

    try:
        for name, module_name in modules.items():
            handles.append(model.get_submodule(module_name).register_forward_hook(hook_for(name)))
        yield sums
    finally:
        for h in handles:
            h.remove()


def layer_output_energy(
    model: nn.Module, layers: Sequence[str], data: Iterable[Any]
) -> dict[str, float]:
    """½ mean ‖y‖² of each named weight layer's output y on `data` (batches of inputs, or of
    (inputs, labels)), in the units of a record's `predicted_error`.

    `layers` are the traced layer names (`LayerRecord.name`, or a group's `members`). Rows are
    as in the layer's Hessian: samples for a linear layer, samples × output positions for a
    convolution; a batch norm folded into the layer is included. `model` is not changed (it is
    run in eval mode and put back)."""
    batches = iter(data)
    first = next(batches, None)
    if first is None:
        raise ValueError("layer_output_energy needs at least one batch of inputs in data=")
    x0 = _inputs(first)
    arch, _ = trace_model(model, tuple(x0.shape[1:]))
    specs = {sp.name: sp for sp in arch.layers}
    unknown = [n for n in layers if n not in specs]
    if unknown:
        raise ValueError(f"no weight layer(s) {unknown} in the model; its layers: {list(specs)}")
    modules = {n: specs[n].batch_norm or n for n in layers}
    was_training = model.training
    model.eval()
    try:
        with _energy_hooks(model, modules) as sums, torch.no_grad():
            model(x0)
            for batch in batches:
                model(_inputs(batch))
    finally:
        model.train(was_training)
    return {n: 0.5 * total / count for n, (total, count) in sums.items()}
