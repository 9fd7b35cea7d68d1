"""Helpers for the residual-network tests: non-trivial batch-norm statistics and a copy of a
model whose hidden units are permuted group by group (residual streams consistently, option-A
embeddings respected), so zipping it with the original must recover the permutation."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mtz_core.graph import trace_graph


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model.eval()


def permuted_copy(
    model: nn.Module, input_shape: tuple[int, ...], seed: int = 1
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy whose unit i of each group is the original's unit perm[i]; returns the copy and
    the permutations by group name."""
    graph = trace_graph(model, input_shape)
    copy_ = copy.deepcopy(model)
    new_modules = dict(copy_.named_modules())
    g = torch.Generator().manual_seed(seed)
    node_space = {n.name: n.space for n in graph.nodes}
    embeds = {n.name: n for n in graph.nodes if n.kind == "embed"}
    perms: dict[int, torch.Tensor] = {}
    for grp in graph.groups:  # groups come in order, an embedded space before its target
        perm = torch.randperm(grp.units, generator=g)
        for e in grp.embeds:
            node = embeds[e]
            src = perms[node_space[node.inputs[0]]]
            n1, p = src.numel(), node.offset
            pads = [i for i in range(grp.units) if not p <= i < p + n1]
            perm = torch.empty(grp.units, dtype=torch.long)
            perm[p : p + n1] = p + src
            shuffled = torch.tensor(pads)[torch.randperm(len(pads), generator=g)]
            perm[torch.tensor(pads, dtype=torch.long)] = shuffled
        perms[grp.space] = perm
    with torch.no_grad():
        for grp in graph.groups:
            perm = perms[grp.space]
            for name in grp.members:
                m = new_modules[name]
                m.weight.copy_(m.weight[perm].clone())
                if m.bias is not None:
                    m.bias.copy_(m.bias[perm].clone())
            for _, bn_name in grp.norms:
                bn = new_modules[bn_name]
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bn, attr).copy_(getattr(bn, attr)[perm].clone())
            for name in grp.readers:
                m = new_modules[name]
                if isinstance(m, nn.Linear) and m.in_features != grp.units:
                    p = m.in_features // grp.units
                    cols = (perm[:, None] * p + torch.arange(p)).flatten()
                else:
                    cols = perm
                m.weight.copy_(m.weight[:, cols].clone())
    return copy_.eval(), {grp.name: perms[grp.space] for grp in graph.groups}
