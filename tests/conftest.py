"""Small models, data and a neuron-permuting oracle shared by the engine tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def make_mlp(seed: int, widths=(24, 16), inputs: int = 64, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    prev = inputs
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    layers.append(nn.Linear(prev, classes))
    return nn.Sequential(*layers).eval()


class ConvNet(nn.Module):
    """conv-BN-ReLU-pool, conv-BN-ReLU-pool, flatten, fc, ReLU, dropout, head (8×8 inputs)."""

    def __init__(self, seed: int, c1: int = 6, c2: int = 8, fc: int = 12, classes: int = 5):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 4, fc), nn.ReLU(), nn.Dropout(0.5), nn.Linear(fc, classes)
        )
        with torch.no_grad():  # non-trivial batch-norm statistics
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        self.eval()

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class LeNet5(nn.Module):
    """LeNet-5 written with functional calls and x.view(x.size(0), -1), as many people write it."""

    def __init__(self, seed: int, classes: int = 10):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 40)
        self.fc2 = nn.Linear(40, 20)
        self.fc3 = nn.Linear(20, classes)
        self.eval()

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), kernel_size=2, stride=2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


def weight_layers(model: nn.Module) -> list[tuple[nn.Module, nn.Module | None]]:
    """(weight module, batch norm right after it or None), in forward order of a Sequential tree."""
    mods = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.BatchNorm2d))]
    out: list[tuple[nn.Module, nn.Module | None]] = []
    for m in mods:
        if isinstance(m, nn.BatchNorm2d):
            out[-1] = (out[-1][0], m)
        else:
            out.append((m, None))
    return out


def permuted_copy(model: nn.Module, seed: int = 123) -> tuple[nn.Module, list[torch.Tensor]]:
    """A copy of `model` whose hidden neurons are permuted; returns it and the permutations.

    perm[l][j] is the original neuron that the copy's neuron j of hidden layer l is.
    """
    import copy

    gen = torch.Generator().manual_seed(seed)
    copy_model = copy.deepcopy(model)
    layers = weight_layers(copy_model)
    perms = []
    with torch.no_grad():
        for i, (m, bn) in enumerate(layers[:-1]):
            n = m.weight.shape[0]
            perm = torch.randperm(n, generator=gen)
            perms.append(perm)
            m.weight.copy_(m.weight[perm])
            if m.bias is not None:
                m.bias.copy_(m.bias[perm])
            if bn is not None:
                for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                    t.copy_(t[perm])
            nxt = layers[i + 1][0]
            if isinstance(nxt, nn.Linear) and nxt.in_features != n:
                p = nxt.in_features // n
                cols = (perm[:, None] * p + torch.arange(p)).flatten()
            else:
                cols = perm
            nxt.weight.copy_(nxt.weight[:, cols])
    return copy_model, perms


@pytest.fixture
def digits_like() -> list[torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(96, 1, 8, 8)
    return [x[:48], x[48:]]
