"""The shipped demos (pairs, and the three-model set) load offline, match their cards, zip, and
are reproducible."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mtz_core import evaluate, zip_many
from mtz_core.checkpoints import load_checkpoint
from mtz_core.demo import ASSETS_DIR, DEMOS, build_demo, load_demo


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_loads_and_matches_its_cards(name):
    demo = load_demo(name)
    assert len(demo.models) == len(demo.tasks) == len(demo.cards) == len(DEMOS[name].tasks)
    for model, task, card, text in zip(demo.models, demo.tasks, demo.cards, DEMOS[name].tasks):
        assert card["task"] == task.name == text
        acc = evaluate(model, task.batches("test", 512)).accuracy
        assert acc == pytest.approx(card["accuracy"]["test"], abs=1e-4)
        assert acc > 0.9
    calib = [[x for x, _ in task.batches("calib", 256, limit=512)] for task in demo.tasks]
    result = zip_many(demo.models, calib, share=0.5)
    n = len(demo.models)
    # a shared unit replaces one unit of every model: at most (T - 1)/T of the parameters
    assert 0 < result.saved_fraction < (n - 1) / n


def test_the_three_model_demo_is_three_models_on_thirds_of_the_digits():
    demo = load_demo("digits-three")
    assert [t.name for t in demo.tasks] == ["digits:0-3", "digits:4-6", "digits:7-9"]
    assert [c["model"] for c in demo.cards] == ["a", "b", "c"]
    assert [c["seed"] for c in demo.cards] == [1, 2, 3]
    assert demo.model_a is demo.models[0] and demo.task_b is demo.tasks[1]


def test_demo_assets_are_small():
    total = sum(p.stat().st_size for p in ASSETS_DIR.rglob("*") if p.is_file())
    assert total < 5 * 2**20


@pytest.mark.parametrize(
    "name",
    ["moons-circles", "digits-three", pytest.param("digits-resnet", marks=pytest.mark.slow)],
)
def test_rebuilding_a_demo_reproduces_its_files(tmp_path, name):
    """Fixed seeds reproduce the shipped models on any CPU: the weights up to float32 round-off
    (another CPU's kernels move a rebuilt weight by about 1e-6, so within 1e-4 of the tensor's
    scale), and exactly the same predictions on the test split. The ResNet pair and the
    three-model set are built and trained in float64 (`DemoSpec.train_dtype`)."""
    build_demo(name, tmp_path)
    demo = load_demo(name)
    for which, shipped_model, task in zip(DEMOS[name].letters, demo.models, demo.tasks):
        shipped = load_file(ASSETS_DIR / name / f"{which}.safetensors")
        again = load_file(tmp_path / f"{which}.safetensors")
        assert shipped.keys() == again.keys()
        for key in shipped:
            scale = float(shipped[key].abs().max())
            torch.testing.assert_close(again[key], shipped[key], rtol=1e-4, atol=1e-4 * scale)
        model, _ = load_checkpoint(tmp_path / f"{which}.safetensors")
        x, _ = task.test
        with torch.no_grad():
            assert torch.equal(model.eval()(x).argmax(1), shipped_model(x).argmax(1))


def test_unknown_demo():
    with pytest.raises(ValueError, match="unknown demo 'nope'"):
        load_demo("nope")
