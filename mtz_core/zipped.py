"""The zipped multi-task network: shared, per-task-into-shared and per-task weight blocks.

Every weight layer l holds, for tasks t = 0..T-1:

* ``shared_weight`` (k, s·P | s, kh, kw) and ``shared_bias`` (k): the k shared neurons' weights from
  the s shared inputs, stored once;
* ``shared_own_weight[t]`` (k, u_t·P | u_t, kh, kw): those neurons' weights from task t's own
  (unshared) inputs, copied from task t's original neuron;
* ``own_weight[t]`` (o_t, (s+u_t)·P | s+u_t, kh, kw) and ``own_bias[t]``: task t's unpaired neurons.

A layer whose original has no bias (and no batch norm folded into it) stores no bias at all
(``shared_bias`` is None, ``own_bias[t]`` None), so parameter counts stay exact.

A task's activations are laid out [shared units (in pair order); its own units], so the channel-
wise operations between layers (activations, pooling, flatten) run on them unchanged. The original
pair is the same structure with k = 0 everywhere, which is how zipping starts.

Units shared by some of the tasks only (`ZipConfig.subsets`, the paper's scheme for T ≥ 3) live in
`mtz_core.pools.PoolLayer`s instead; `ZippedNet.with_pools` converts a network exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import Architecture, LayerSpec
from .norms import NormState, TaskNorm
from .ops import OpSpec
from .pools import PoolLayer, PoolSizes, pool_layer_from
from .program import ZipGroup

__all__ = [
    "ZippedNet",
    "TaskProgram",
    "ZippedLayer",
    "LayerSizes",
    "GroupUndo",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

FORMAT_NAME = "mtz-zipped-net"
FORMAT_VERSION = 5
#: versions `load` reads (1: every layer had a bias; 2: no batch norm kept per task; 3: no
#: residual networks; 4: no units shared by subsets of tasks, `mtz_core.pools`)
READABLE_VERSIONS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class LayerSizes:
    """Unit counts of a zipped layer: shared inputs s, own inputs u_t, shared k, own outputs o_t."""

    in_shared: int
    in_own: tuple[int, ...]
    shared: int
    out_own: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("in_shared", "in_own", "shared", "out_own")}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> LayerSizes:
        return LayerSizes(d["in_shared"], tuple(d["in_own"]), d["shared"], tuple(d["out_own"]))


def _param(shape: Sequence[int], like: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.zeros(tuple(shape), dtype=like.dtype, device=like.device))


class ZippedLayer(nn.Module):
    """One weight layer of the zipped network (see the module docstring for the blocks)."""

    def __init__(self, spec: LayerSpec, sizes: LayerSizes, like: torch.Tensor) -> None:
        super().__init__()
        self.spec, self.sizes = spec, sizes
        p = spec.positions
        tail = tuple(spec.kernel_size) if spec.kind == "conv" else ()

        def w(rows: int, units: int) -> nn.Parameter:
            shape = (rows, units, *tail) if spec.kind == "conv" else (rows, units * p)
            return _param(shape, like)

        s, k = sizes.in_shared, sizes.shared
        self.has_bias = bool(spec.bias)
        self.shared_weight = w(k, s)
        self.shared_own_weight = nn.ParameterList([w(k, u) for u in sizes.in_own])
        self.own_weight = nn.ParameterList(
            [w(o, s + u) for o, u in zip(sizes.out_own, sizes.in_own)]
        )
        self.own_bias: Sequence[nn.Parameter | None]
        if self.has_bias:
            self.shared_bias = _param((k,), like)
            self.own_bias = nn.ParameterList([_param((o,), like) for o in sizes.out_own])
        else:
            self.register_parameter("shared_bias", None)
            self.own_bias = [None] * len(sizes.out_own)
        self.norm: TaskNorm | None = None
        if spec.norm:
            widths = [k + o for o in sizes.out_own]
            self.norm = TaskNorm(widths, spec.norm_affine, spec.norm_eps, spec.norm_momentum, like)

    @property
    def n_tasks(self) -> int:
        return len(self.sizes.out_own)

    def out_width(self, task: int) -> int:
        return self.sizes.shared + self.sizes.out_own[task]

    def widths(self) -> list[int]:
        """Each task's output units."""
        return [self.out_width(t) for t in range(self.n_tasks)]

    def input_columns(self, units: int) -> int:
        return units * (self.spec.positions if self.spec.kind == "linear" else 1)

    def apply_weights(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        if self.spec.kind == "linear":
            return F.linear(x, weight, bias)
        sp = self.spec
        return F.conv2d(x, weight, bias, sp.stride, sp.padding, sp.dilation)

    @property
    def like(self) -> torch.Tensor:
        """A tensor with the layer's dtype and device."""
        return self.own_weight[0]

    def task_weight(self, task: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Task t's full weight [[shared, shared-own], [own]] and bias (None without bias),
        rows [shared; own]."""
        top = torch.cat([self.shared_weight, self.shared_own_weight[task]], dim=1)
        weight = torch.cat([top, self.own_weight[task]], dim=0)
        if not self.has_bias:
            return weight, None
        return weight, torch.cat([self.shared_bias, self.own_bias[task]])

    def forward(
        self, xs: list[torch.Tensor], tasks: Sequence[int], shared_same: bool
    ) -> tuple[list[torch.Tensor], bool]:
        """Outputs for each task; `shared_same` says the tasks' shared inputs are identical.

        When they are, the shared neurons' product with the shared inputs is computed once for
        all tasks (`forward_all`'s single pass where layers are shared). A kept batch norm then
        normalises each task's output with that task's statistics.
        """
        outs, still_same = self._weights_forward(xs, tasks, shared_same)
        if self.norm is not None:
            outs = [self.norm(y, t) for y, t in zip(outs, tasks)]
            still_same = False
        return outs, still_same

    def _weights_forward(
        self, xs: list[torch.Tensor], tasks: Sequence[int], shared_same: bool
    ) -> tuple[list[torch.Tensor], bool]:
        s_cols = self.input_columns(self.sizes.in_shared)
        if self.spec.kind == "conv" and not shared_same:
            outs = []
            for x, t in zip(xs, tasks):
                w, b = self.task_weight(t)
                outs.append(self.apply_weights(x, w, b))
            return outs, False
        common = None
        if shared_same and self.sizes.shared and s_cols:
            common = self.apply_weights(
                _narrow(xs[0], 0, s_cols), self.shared_weight, self.shared_bias
            )
        outs = []
        for x, t in zip(xs, tasks):
            u = self.sizes.in_own[t]
            if self.sizes.shared and not s_cols:  # no shared inputs: only the bias is shared
                ys = self.apply_weights(x, self.shared_own_weight[t], self.shared_bias)
            elif self.sizes.shared:
                if common is not None:
                    ys = common
                else:
                    ys = self.apply_weights(
                        _narrow(x, 0, s_cols), self.shared_weight, self.shared_bias
                    )
                if u:
                    ys = ys + self.apply_weights(
                        _narrow(x, s_cols, None), self.shared_own_weight[t], None
                    )
            yo = (
                self.apply_weights(x, self.own_weight[t], self.own_bias[t])
                if self.sizes.out_own[t]
                else None
            )
            if yo is None:
                outs.append(ys)
            elif not self.sizes.shared:
                outs.append(yo)
            else:
                outs.append(torch.cat([ys, yo], dim=1))
        still_same = shared_same and all(self.sizes.in_own[t] == 0 for t in tasks)
        return outs, still_same


def _narrow(x: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
    return x[:, start:stop]


class ZippedNet(nn.Module):
    """A multi-task network zipped from T ≥ 2 models of one architecture.

    `forward(x, task)` gives one task's logits; `forward_all(x)` all tasks' logits from one pass
    where layers are shared. `export_task(t)` builds a plain `nn.Sequential` for deployment.
    """

    def __init__(
        self, architecture: Architecture, sizes: Sequence[LayerSizes], like: torch.Tensor
    ) -> None:
        super().__init__()
        if len(sizes) != len(architecture.layers):
            raise ValueError(f"{len(sizes)} layer sizes for {len(architecture.layers)} layers")
        self.architecture = architecture
        self.layers = nn.ModuleList(
            PoolLayer(spec, sz, like) if isinstance(sz, PoolSizes) else ZippedLayer(spec, sz, like)
            for spec, sz in zip(architecture.layers, sizes)
        )
        self.orders: nn.Module | None = None
        if architecture.graph is not None:
            # per unit space and task: the original unit at each position of the task's layout
            # [shared; own] (the embeddings of option-A shortcuts are index maps built from them)
            self.orders = nn.Module()
            for i, (_, space) in enumerate(architecture.graph.layer_spaces):
                for t, width in enumerate(self.layers[i].widths()):
                    name = f"s{space}_t{t}"
                    if not hasattr(self.orders, name):
                        self.orders.register_buffer(
                            name, torch.arange(width, dtype=torch.long, device=like.device)
                        )

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_models(
        cls,
        architectures: Sequence[Architecture],
        weights: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]],
        norms: Sequence[Sequence[NormState | None]] | None = None,
    ) -> ZippedNet:
        """The unzipped start: every model's layers side by side, nothing shared.

        The first layer's inputs are shared by construction (all tasks see the same input).
        `architectures[0]` names the layers; `norms` (per model, per layer) the kept batch norms
        of layers whose spec keeps one (`trace_norms`).
        """
        arch = architectures[0]
        n_layers = len(arch.layers)
        widths = [[a.layers[i].out_units for a in architectures] for i in range(n_layers)]
        n_tasks = len(weights)
        links = (
            arch.graph.layer_spaces
            if arch.graph is not None
            else [(i - 1, i) for i in range(n_layers)]
        )
        space_widths = {out: widths[i] for i, (_, out) in enumerate(links)}
        sizes = []
        for i, spec in enumerate(arch.layers):
            source = links[i][0]
            if source == -1:  # the model's input: shared by construction
                sizes.append(LayerSizes(spec.in_units, (0,) * n_tasks, 0, tuple(widths[i])))
            else:
                sizes.append(LayerSizes(0, tuple(space_widths[source]), 0, tuple(widths[i])))
        # Per-layer out_units differ per model: keep model A's spec, sizes carry the truth.
        net = cls(arch, sizes, weights[0][0][0])
        with torch.no_grad():
            for i, layer in enumerate(net.layers):
                for t, model_weights in enumerate(weights):
                    w, b = model_weights[i]
                    layer.own_weight[t].copy_(w)
                    if layer.has_bias:
                        layer.own_bias[t].copy_(b)
                    if layer.norm is not None:
                        state = None if norms is None else norms[t][i]
                        if state is None:
                            raise ValueError(f"layer {layer.spec.name!r} keeps a norm: pass norms=")
                        layer.norm.set_state(t, state)
        return net

    # -- running -------------------------------------------------------------------------
    @property
    def n_tasks(self) -> int:
        return self.layers[0].n_tasks

    def _check_tasks(self, tasks: Sequence[int]) -> None:
        for t in tasks:
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < self.n_tasks:
                raise ValueError(f"task must be an int in [0, {self.n_tasks - 1}], got {t!r}")

    def _run(
        self, x: torch.Tensor, tasks: Sequence[int], tail: int | None = None
    ) -> list[torch.Tensor]:
        """Outputs for `tasks`; `tail` limits the operations after the head to the first few."""
        self._check_tasks(tasks)
        if self.architecture.graph is not None:
            xs, same = self._run_graph(x, tasks)
            return _ops(self.architecture.ops_after[:tail], xs, same, self.training)[0]
        xs = [x] * len(tasks)
        same = True
        for layer in self.layers:
            xs, same = _ops(layer.spec.ops_before, xs, same, self.training)
            xs, same = layer(xs, tasks, same)
        return _ops(self.architecture.ops_after[:tail], xs, same, self.training)[0]

    def _run_graph(self, x: torch.Tensor, tasks: Sequence[int]) -> tuple[list[torch.Tensor], bool]:
        """Run the residual program: each slot holds every task's tensor (and whether the
        tasks' shared parts are identical); a slot is dropped after its last reader."""
        program = self.architecture.graph
        last = {}
        for i, step in enumerate(program.steps):
            for j in step.inputs:
                last[j] = i
        slots: dict[int, tuple[list[torch.Tensor], bool]] = {0: ([x] * len(tasks), True)}
        for i, step in enumerate(program.steps):
            xs, same = slots[step.inputs[0]]
            if step.kind == "layer":
                out = self.layers[step.layer](xs, tasks, same)
            elif step.kind == "op":
                out = _ops((step.op,), xs, same, self.training)
            elif step.kind == "add":
                ys, same_y = slots[step.inputs[1]]
                out = ([a + b for a, b in zip(xs, ys)], same and same_y)
            else:  # embed
                out = ([self._embed(step, h, t) for h, t in zip(xs, tasks)], False)
            slots[i + 1] = out
            for j in step.inputs:
                if last[j] == i and j != program.output:
                    slots.pop(j, None)
        return slots[program.output]

    def _embed(self, step, x: torch.Tensor, task: int) -> torch.Tensor:
        """Option-A shortcut: task `task`'s units of space `source` land at `offset` + their
        original index in space `target`, in that space's current layout; the rest are 0."""
        positions = self.embed_map(step, task)
        width = getattr(self.orders, f"s{step.target}_t{task}").numel()
        out = x.new_zeros((x.shape[0], width, *x.shape[2:]))
        out[:, positions] = x
        return out

    def embed_map(self, step, task: int) -> torch.Tensor:
        """Where each unit of the source layout lands in the target layout (task `task`)."""
        src = getattr(self.orders, f"s{step.source}_t{task}")
        tgt = getattr(self.orders, f"s{step.target}_t{task}")
        where = torch.empty_like(tgt)
        where[tgt] = torch.arange(tgt.numel(), device=tgt.device)
        return where[src + step.offset]

    def forward(self, x: torch.Tensor, task: int | None = None) -> torch.Tensor:
        """Task `task`'s output, as the original model of that task computes it."""
        if task is None:
            raise TypeError(
                f"ZippedNet needs the task: model(x, task) with task in [0, {self.n_tasks - 1}]; "
                "for a module with a single input, use export_task(task)"
            )
        return self._run(x, [task])[0]

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every task's output; shared layers' common products are computed once."""
        return self._run(x, list(range(self.n_tasks)))

    def logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Task `task`'s output before a softmax or log-softmax that ends the model: what a
        cross-entropy loss must be given (retraining, evaluation losses)."""
        ops = self.architecture.ops_after
        keep = len(ops)
        while keep and ops[keep - 1].kind in ("softmax", "log_softmax"):
            keep -= 1
        return self._run(x, [task], tail=keep)[0]

    # -- bookkeeping ---------------------------------------------------------------------
    @property
    def sizes(self) -> list[LayerSizes | PoolSizes]:
        return [layer.sizes for layer in self.layers]

    @property
    def pooled(self) -> bool:
        """The layers are `PoolLayer`s: units may be shared by subsets of the tasks."""
        return isinstance(self.layers[0], PoolLayer)

    def with_pools(self) -> ZippedNet:
        """The same network with every layer a `PoolLayer` (same outputs, same parameter
        count), the layout that can hold units shared by subsets of the tasks. Chains only."""
        if self.architecture.graph is not None:
            raise ValueError(
                "units shared by subsets of tasks are supported for chains of layers, not for "
                "residual networks"
            )
        net = self.clone()
        for i, layer in enumerate(net.layers):
            if not isinstance(layer, PoolLayer):
                net.layers[i] = pool_layer_from(layer)
        return net

    def num_parameters(self) -> int:
        """Parameters stored: every shared block once, every per-task block once."""
        return sum(p.numel() for p in self.parameters())

    def export_task(self, task: int) -> nn.Module:
        """A plain module computing task `task` alone (for deployment): an `nn.Sequential` for
        a chain, a `TaskProgram` (plain Conv2d/Linear/BatchNorm modules run by the program)
        for a residual network."""
        if not 0 <= task < self.n_tasks:
            raise ValueError(f"task must be in [0, {self.n_tasks - 1}], got {task!r}")
        if self.architecture.graph is not None:
            program = self.architecture.graph
            embeds = [
                self.embed_map(st, task) if st.kind == "embed" else None for st in program.steps
            ]
            widths = [
                getattr(self.orders, f"s{st.target}_t{task}").numel() if st.kind == "embed" else 0
                for st in program.steps
            ]
            layers = [_task_layer(layer, task) for layer in self.layers]
            ops_after = [op.to_module() for op in self.architecture.ops_after]
            net = TaskProgram(program, layers, embeds, widths, ops_after)
            return net.train(self.training)
        mods: list[nn.Module] = []
        for layer in self.layers:
            mods.extend(op.to_module() for op in layer.spec.ops_before)
            mods.extend(_task_layer(layer, task))
        mods.extend(op.to_module() for op in self.architecture.ops_after)
        return nn.Sequential(*mods).train(self.training)

    def spec_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture.to_dict(),
            "sizes": [s.to_dict() for s in self.sizes],
        }

    # -- saving --------------------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Save as safetensors: the tensors plus the spec (JSON) in the file's metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"zipped networks are saved as .safetensors; got {path.name!r}")
        meta = {"mtz_spec": json.dumps(self.spec_dict())}
        if metadata:
            meta["mtz_metadata"] = json.dumps(metadata)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = path.with_name(path.name + ".tmp")  # a crash never leaves half a file
        try:
            save_file(tensors, str(tmp), metadata=meta)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> ZippedNet:
        """Rebuild from a file written by `save`; the original models are not needed."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no zipped network at {str(path)!r}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path), device=str(device))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{str(path)!r} is not a safetensors file: {exc}") from exc
        if "mtz_spec" not in meta:
            raise ValueError(f"{str(path)!r} is a safetensors file but not a zipped network")
        spec = json.loads(meta["mtz_spec"])
        version = spec.get("format_version")
        if spec.get("format") != FORMAT_NAME or version not in READABLE_VERSIONS:
            raise ValueError(
                f"{str(path)!r} has format {spec.get('format')!r} version {version!r}; this "
                f"version reads {FORMAT_NAME!r} versions {list(READABLE_VERSIONS)}"
            )
        arch = Architecture.from_dict(spec["architecture"])
        sizes = [
            PoolSizes.from_dict(s) if "out_pools" in s else LayerSizes.from_dict(s)
            for s in spec["sizes"]
        ]
        like = next(v for v in tensors.values() if v.is_floating_point())
        net = cls(arch, sizes, like)
        net.load_state_dict(tensors)
        return net.eval()

    @property
    def groups(self) -> tuple[ZipGroup, ...]:
        """The zippable unit spaces in zip order (`Architecture.zip_groups`)."""
        return self.architecture.zip_groups()

    def zip_group(
        self,
        group: int,
        pairs: torch.Tensor,
        weights: Mapping[int, tuple[torch.Tensor, torch.Tensor | None]],
        shifts: Mapping[int, torch.Tensor | None] | None = None,
    ) -> GroupUndo:
        """Share `pairs` (k × T unit indices, one column per task) of group `group`.

        Every member layer's paired rows become shared neurons: `weights[i]` (weight, bias) on
        their shared inputs, each task's own-input weights kept; unpaired rows stay per task.
        A kept batch norm keeps every task's parameters and statistics per unit, in the new
        order, `shifts[i]` (k × T) added to the shared units' running means. Every reader's
        input columns are put in the order [shared (pair order); own]; a reader that already
        has shared rows (a residual stream zipped before this group) needs those rows' weights
        on the newly shared columns merged: they hold task 0's until `set_shared_rows`, and
        each task's are in the returned `GroupUndo.pending`. The replaced modules come back
        untouched, so `restore_group` undoes the step exactly.
        """
        groups = self.groups
        if not 0 <= group < len(groups):
            raise ValueError(f"group index must be in [0, {len(groups) - 1}], got {group}")
        g = groups[group]
        members = [self.layers[i] for i in g.members]
        if any(m.sizes.shared for m in members) or any(
            self.layers[r].sizes.in_shared for r in g.readers
        ):
            raise ValueError(f"group {g.name!r} is already zipped")
        pairs = pairs.to(device="cpu", dtype=torch.long)
        k = pairs.shape[0]
        orders = []
        for t, width in enumerate(members[0].widths()):
            taken = torch.zeros(width, dtype=torch.bool)
            taken[pairs[:, t]] = True
            orders.append(torch.cat([pairs[:, t], torch.nonzero(~taken).flatten()]))
        shifts = shifts or {}
        old: dict[int, ZippedLayer] = {}
        current: dict[int, ZippedLayer] = {}
        for i in g.members:
            old[i] = self.layers[i]
            w, b = weights[i]
            current[i] = _share_rows(self.layers[i], orders, k, w, b, shifts.get(i))
        pending: dict[int, list[torch.Tensor]] = {}
        for r in g.readers:
            old.setdefault(r, self.layers[r])
            current[r], rows = _follow_columns(current.get(r, self.layers[r]), orders, k)
            if rows is not None:
                pending[r] = rows
        old_orders: dict[str, torch.Tensor] = {}
        if self.orders is not None:
            with torch.no_grad():
                for t, order in enumerate(orders):
                    buf = getattr(self.orders, f"s{g.space}_t{t}")
                    old_orders[f"s{g.space}_t{t}"] = buf.clone()
                    buf.copy_(buf[order.to(buf.device)])
        for i, layer in current.items():
            layer.train(old[i].training)
            self.layers[i] = layer
        return GroupUndo(group, old, old_orders, pending)

    def zip_clusters(
        self,
        group: int,
        assign: Sequence[torch.Tensor],
        shared: int,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> GroupUndo:
        """Zip group `group` of a chain by clusters: `assign[t][j]` is the merged unit that unit
        j of task t becomes (ids 0..K-1; several units of one task may share an id).

        Units 0..`shared`-1 hold units of both tasks: they become shared neurons with `weight`
        (shared-input weights) and `bias`, and each task's own-input weights the mean of its
        members'. Units from `shared` on hold one task's units: that task's own neuron, the mean
        of its members' rows (the least-squares row for units that see the same inputs). Each
        reader's input columns of a merged unit are the sum of its members' columns: the unit
        stands for every one of them. With one unit per task in each cluster this is `zip_group`.
        Chains without kept batch norm only (the caller checks and names what it refuses).
        """
        groups = self.groups
        if not 0 <= group < len(groups):
            raise ValueError(f"group index must be in [0, {len(groups) - 1}], got {group}")
        g = groups[group]
        (i,) = g.members
        old_layer = self.layers[i]
        if old_layer.sizes.shared or any(self.layers[r].sizes.in_shared for r in g.readers):
            raise ValueError(f"group {g.name!r} is already zipped")
        like = old_layer.like
        n_units = int(max(int(a.max()) for a in assign if a.numel())) + 1
        members = []  # per task: (n_t, K) membership, and each unit's member count
        for t, a in enumerate(assign):
            if a.numel() != old_layer.out_width(t):
                raise ValueError(
                    f"assign[{t}] has {a.numel()} entries for {old_layer.out_width(t)} units"
                )
            m = torch.zeros(a.numel(), n_units, dtype=like.dtype, device=like.device)
            m[torch.arange(a.numel(), device=like.device), a.to(like.device)] = 1
            members.append(m)
        counts = [m.sum(0) for m in members]
        both = torch.stack([c > 0 for c in counts]).all(0)
        if not bool(both[:shared].all()) or bool(both[shared:].any()):
            raise ValueError(
                f"clusters 0..{shared - 1} must hold units of every task and the rest of one"
            )
        keep = [torch.nonzero(c > 0).flatten() for c in counts]  # each task's units, in id order
        sz = old_layer.sizes
        out_own = tuple(int(len(k_t)) - shared for k_t in keep)
        new = ZippedLayer(
            old_layer.spec, LayerSizes(sz.in_shared, sz.in_own, shared, out_own), like
        )
        s_cols = old_layer.input_columns(sz.in_shared)
        with torch.no_grad():
            new.shared_weight.copy_(weight.reshape(new.shared_weight.shape))
            if new.has_bias:
                new.shared_bias.copy_(bias)
            for t, (m, c, k_t) in enumerate(zip(members, counts, keep)):
                mean = (m / c.clamp_min(1)).T[k_t]  # (units of t, n_t): the mean over members
                w = old_layer.own_weight[t]
                rows = (mean @ w.reshape(w.shape[0], -1)).reshape(len(k_t), *w.shape[1:])
                new.shared_own_weight[t].copy_(rows[:shared, s_cols:])
                new.own_weight[t].copy_(rows[shared:])
                if new.has_bias:
                    new.own_bias[t].copy_((mean @ old_layer.own_bias[t])[shared:])
        old = {i: old_layer}
        self.layers[i] = new.train(old_layer.training)
        for r in g.readers:
            reader = self.layers[r]
            old[r] = reader
            self.layers[r] = _sum_columns(
                reader, [m[:, k_t] for m, k_t in zip(members, keep)], shared
            )
            self.layers[r].train(reader.training)
        return GroupUndo(group, old, {}, {})

    def set_shared_rows(
        self,
        index: int,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        mean_shift: torch.Tensor | None = None,
    ) -> None:
        """Layer `index`'s shared neurons take `weight` on the shared inputs and `bias`; a kept
        norm's running means of those units move by `mean_shift` (k × T)."""
        layer = self.layers[index]
        like = layer.like
        with torch.no_grad():
            layer.shared_weight.copy_(weight.reshape(layer.shared_weight.shape))
            if layer.has_bias and bias is not None:
                layer.shared_bias.copy_(bias)
            k = layer.sizes.shared
            if layer.norm is not None and mean_shift is not None and k:
                for t in range(self.n_tasks):
                    layer.norm.stats(t)[0][:k] += mean_shift[:, t].to(like.device, like.dtype)

    def restore_group(self, undo: GroupUndo) -> None:
        """Put back what `zip_group` replaced (undo)."""
        for i, layer in undo.layers.items():
            self.layers[i] = layer
        with torch.no_grad():
            for name, order in undo.orders.items():
                getattr(self.orders, name).copy_(order)

    def zip_layer(
        self,
        index: int,
        pairs: torch.Tensor,
        shared_weight: torch.Tensor,
        shared_bias: torch.Tensor,
        mean_shift: torch.Tensor | None = None,
    ) -> tuple[ZippedLayer, ZippedLayer]:
        """A chain's `zip_group` for layer `index`: returns the replaced layer and the next one
        (put them back with `restore_layers`)."""
        if self.architecture.graph is not None:
            raise ValueError("a residual network is zipped by group: use zip_group")
        if not 0 <= index < len(self.layers) - 1:
            raise ValueError(
                f"layer index must be a hidden layer in [0, {len(self.layers) - 2}], got {index}"
            )
        undo = self.zip_group(
            index, pairs, {index: (shared_weight, shared_bias)}, {index: mean_shift}
        )
        return undo.layers[index], undo.layers[index + 1]

    def restore_layers(self, index: int, layers: Sequence[ZippedLayer]) -> None:
        """Put back the layer modules `zip_layer` returned (undo)."""
        for offset, layer in enumerate(layers):
            self.layers[index + offset] = layer

    def clone(self) -> ZippedNet:
        """An independent copy (weights and structure)."""
        new = ZippedNet(self.architecture, self.sizes, self.layers[0].like)
        new.load_state_dict(self.state_dict())
        return new.train(self.training)


def _ops(
    ops: Sequence[OpSpec], xs: list[torch.Tensor], shared_same: bool, training: bool
) -> tuple[list[torch.Tensor], bool]:
    """Apply the in-between operations to each task's activations, once per distinct tensor.

    Dropout in training mode draws a mask per task, so shared inputs stop being identical.
    """
    done: dict[int, torch.Tensor] = {}
    out = []
    for x in xs:
        if id(x) not in done:
            h = x
            for op in ops:
                h = op.apply(h, training)
            done[id(x)] = h
        out.append(done[id(x)])
    if training and len(done) > 1 and any(op.kind == "dropout" for op in ops):
        shared_same = False
    return out, shared_same


@dataclass
class GroupUndo:
    """What `zip_group` replaced (layer modules by index, unit orders by buffer name) and the
    readers' per-task weights on the newly shared columns still to merge (`pending`)."""

    group: int
    layers: dict[int, ZippedLayer]
    orders: dict[str, torch.Tensor]
    pending: dict[int, list[torch.Tensor]]


def _share_rows(
    old: ZippedLayer,
    orders: list[torch.Tensor],
    k: int,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    shift: torch.Tensor | None,
) -> ZippedLayer:
    """`old` with the first k units of each task's `orders` shared (rows [shared; own])."""
    sz = old.sizes
    like = old.like
    dev = like.device
    new = ZippedLayer(
        old.spec, LayerSizes(sz.in_shared, sz.in_own, k, tuple(o - k for o in sz.out_own)), like
    )
    s_cols = old.input_columns(sz.in_shared)
    with torch.no_grad():
        new.shared_weight.copy_(weight.reshape(new.shared_weight.shape))
        if new.has_bias:
            new.shared_bias.copy_(bias)
        for t, order in enumerate(orders):
            paired, rest = order[:k].to(dev), order[k:].to(dev)
            w, b = old.own_weight[t], old.own_bias[t]
            new.shared_own_weight[t].copy_(w[paired, s_cols:])
            new.own_weight[t].copy_(w[rest])
            if new.has_bias:
                new.own_bias[t].copy_(b[rest])
            if old.norm is not None:
                new.norm.set_state(t, old.norm.state(t), order)
                if shift is not None and k:
                    new.norm.stats(t)[0][:k] += shift[:, t].to(dev, like.dtype)
                new.norm.load_counter(t, old.norm)
    return new


def _follow_columns(
    old: ZippedLayer, orders: list[torch.Tensor], k: int
) -> tuple[ZippedLayer, list[torch.Tensor] | None]:
    """`old` reading its input in each task's new order, the first k units shared.

    Rows already shared keep their bias and own-input weights; their weights on the newly
    shared columns differ per task and are returned (None when there are no shared rows); the
    new layer holds task 0's until they are merged."""
    sz = old.sizes
    like = old.like
    dev = like.device
    new = ZippedLayer(
        old.spec, LayerSizes(k, tuple(u - k for u in sz.in_own), sz.shared, sz.out_own), like
    )
    p = old.spec.positions if old.spec.kind == "linear" else 1
    pending = [] if sz.shared else None
    with torch.no_grad():
        for t, order in enumerate(orders):
            cols = order if p == 1 else (order[:, None] * p + torch.arange(p)).flatten()
            cols = cols.to(dev)
            new.own_weight[t].copy_(old.own_weight[t][:, cols])
            if new.has_bias:
                new.own_bias[t].copy_(old.own_bias[t])
            if pending is not None:
                moved = old.shared_own_weight[t][:, cols]
                pending.append(moved[:, : k * p].clone())
                new.shared_own_weight[t].copy_(moved[:, k * p :])
            if old.norm is not None:
                new.norm.set_state(t, old.norm.state(t))
                new.norm.load_counter(t, old.norm)
        if pending is not None:
            new.shared_weight.copy_(pending[0])
            if new.has_bias:
                new.shared_bias.copy_(old.shared_bias)
    return new, pending


def _sum_columns(old: ZippedLayer, members: list[torch.Tensor], shared: int) -> ZippedLayer:
    """`old` reading merged units: each task's input columns of a merged unit are the sum of
    its members' columns (`members[t]`: (n_t, units of t) 0/1, shared units first)."""
    sz = old.sizes
    if sz.shared:
        raise ValueError(f"layer {old.spec.name!r} already has shared rows: zip in order")
    like = old.like
    widths = [m.shape[1] for m in members]
    new = ZippedLayer(
        old.spec, LayerSizes(shared, tuple(w - shared for w in widths), sz.shared, sz.out_own), like
    )
    p = old.spec.positions if old.spec.kind == "linear" else 1
    with torch.no_grad():
        for t, m in enumerate(members):
            w = old.own_weight[t]
            if old.spec.kind == "linear":
                cols = torch.einsum("onp,nk->okp", w.reshape(w.shape[0], -1, p), m)
                new.own_weight[t].copy_(cols.reshape(w.shape[0], -1))
            else:
                new.own_weight[t].copy_(torch.einsum("onhw,nk->okhw", w, m))
            if new.has_bias:
                new.own_bias[t].copy_(old.own_bias[t])
    return new


def _task_layer(layer: ZippedLayer, task: int) -> list[nn.Module]:
    """Task `task`'s weight layer as plain modules: the Linear/Conv2d and its kept norm."""
    w, b = layer.task_weight(task)
    sp = layer.spec
    bias = b is not None
    if sp.kind == "linear":
        m: nn.Module = nn.Linear(w.shape[1], w.shape[0], bias=bias, dtype=w.dtype, device=w.device)
    else:
        m = nn.Conv2d(
            w.shape[1],
            w.shape[0],
            sp.kernel_size,
            sp.stride,
            sp.padding,
            sp.dilation,
            bias=bias,
            dtype=w.dtype,
            device=w.device,
        )
    with torch.no_grad():
        m.weight.copy_(w)
        if bias:
            m.bias.copy_(b)
    mods = [m]
    if layer.norm is not None:
        mods.append(layer.norm.to_module(task, 4 if sp.kind == "conv" else 2))
    return mods


class TaskProgram(nn.Module):
    """One task of a zipped residual network as plain modules: `layers[i]` is weight layer i
    (with its batch norm), run by the program's steps; an embedding copies its input's units to
    fixed positions of a zero tensor."""

    def __init__(
        self,
        program: Any,
        layers: Sequence[Sequence[nn.Module]],
        embeds: Sequence[torch.Tensor | None],
        widths: Sequence[int],
        ops_after: Sequence[nn.Module],
    ) -> None:
        super().__init__()
        self.program = program
        self.layers = nn.ModuleList(nn.Sequential(*mods) for mods in layers)
        self.ops = nn.ModuleList(
            st.op.to_module() if st.kind == "op" else nn.Identity() for st in program.steps
        )
        for i, where in enumerate(embeds):
            if where is not None:
                self.register_buffer(f"embed_{i}", where.clone())
        self.widths = list(widths)
        self.ops_after = nn.Sequential(*ops_after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slots = {0: x}
        for i, st in enumerate(self.program.steps):
            h = slots[st.inputs[0]]
            if st.kind == "layer":
                h = self.layers[st.layer](h)
            elif st.kind == "op":
                h = self.ops[i](h)
            elif st.kind == "add":
                h = h + slots[st.inputs[1]]
            else:
                out = h.new_zeros((h.shape[0], self.widths[i], *h.shape[2:]))
                out[:, getattr(self, f"embed_{i}")] = h
                h = out
            slots[i + 1] = h
        return self.ops_after(slots[self.program.output])
