"""torchvision VGGs, with no per-architecture code: the unzipped start reproduces them, and a
permuted copy is recovered exactly through convs, batch norm, pooling, the adaptive pool and the
flatten into the classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import permuted_copy
from torch.testing import assert_close

from mtz_core import ZipSession, zip_models

pytestmark = pytest.mark.slow


def _vgg(name: str, seed: int, classes: int = 10):
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None, num_classes=classes)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", ["vgg11", "vgg16_bn"])
def test_unzipped_start_reproduces_torchvision_vggs(name):
    a, b = _vgg(name, 0, classes=10), _vgg(name, 1, classes=4)
    x = torch.randn(4, 3, 32, 32)
    session = ZipSession(a, b, [x], [x])
    with torch.no_grad():
        assert_close(session.model(x, 0), a(x), rtol=1e-4, atol=1e-5)
        assert_close(session.model(x, 1), b(x), rtol=1e-4, atol=1e-5)
    assert len(session.hidden_layers) == (15 if name == "vgg16_bn" else 10)


def test_permuted_vgg11_bn_is_recovered_exactly():
    a = _vgg("vgg11_bn", 2)
    b, perms = permuted_copy(a, seed=5)
    x = torch.randn(6, 3, 32, 32)
    result = zip_models(a, b, [x], [x], share=1.0)
    assert [r.hessian for r in result.layers][-2:] == ["block", "exact"]
    for rec, perm in zip(result.layers, perms):
        order = np.argsort(rec.pairs[:, 0])
        np.testing.assert_array_equal(rec.pairs[order, 1], perm.argsort().numpy())
        assert rec.pair_costs.max() <= 1e-12
    with torch.no_grad():
        want = a(x)
        for task in (0, 1):
            assert_close(result.model(x, task), want, rtol=1e-4, atol=1e-5)


def test_the_registry_keeps_torchvisions_vgg_configurations():
    """`VGG_CFGS` is a copy (building a VGG needs no torchvision): it must stay torchvision's."""
    from torchvision.models.vgg import cfgs

    from mtz_core.models.vgg import VGG_CFGS

    assert VGG_CFGS == cfgs
