"""A layer's output energy (`mtz_core.output_energy`): the scale the app reads a predicted
error against, checked against ½ tr(W H Wᵀ) from the engine's own Hessian and against the
samples by hand."""

from __future__ import annotations

import pytest
import torch

from mtz_core import ZipConfig, ZipSession
from mtz_core.demo import load_demo
from mtz_core.output_energy import layer_output_energy


def _calib(task, n=256):
    return [x for x, _ in task.batches("calib", 64, limit=n)]


@pytest.mark.parametrize("demo", ["digits-mlp", "digits-conv"])
def test_the_energy_is_half_the_trace_of_w_h_wt_with_the_engines_hessian(demo):
    d = load_demo(demo)
    data = [_calib(t) for t in d.tasks]
    session = ZipSession.many(d.models, data, config=ZipConfig(damping=0.01))
    first = session._analysis(0).first  # the engine's Hessians of the first layer, by task
    for t, (h, v) in enumerate([(first.h_a, first.va), (first.h_b, first.vb)]):
        energy = layer_output_energy(d.models[t], [first.name], data[t])[first.name]
        assert energy == pytest.approx(float(0.5 * h.quad(v).sum()), rel=1e-6)


def test_the_energy_of_a_linear_layer_by_hand():
    d = load_demo("digits-mlp")
    x = torch.cat(_calib(d.task_a)).flatten(1).double()
    fc1 = d.model_a.fc1
    with torch.no_grad():
        y = x @ fc1.weight.double().T + fc1.bias.double()
    energy = layer_output_energy(d.model_a, ["fc1"], _calib(d.task_a))["fc1"]
    assert energy == pytest.approx(0.5 * float(y.pow(2).sum(1).mean()), rel=1e-6)


def test_an_unknown_layer_is_named_with_the_known_ones():
    d = load_demo("digits-mlp")
    with pytest.raises(ValueError, match="no weight layer.*'fc9'.*fc1"):
        layer_output_energy(d.model_a, ["fc9"], _calib(d.task_a))
