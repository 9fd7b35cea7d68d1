"""The Learn page's numbers: the method on the loaded models, and the 2-D worked example.

Everything here is read from the engine (records, cost matrices, the zipped network); the page
only renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .jobs import NullJob
from .loaded import LoadedModels
from .zipper import CostView, ZipSettings, ZipState, plan_savings

__all__ = [
    "PairNumbers",
    "pair_numbers",
    "BoundaryStages",
    "boundary_stages",
    "shows_boundaries",
    "zip_boundaries",
]


@dataclass
class PairNumbers:
    """Real numbers of the loaded models for the formulas (A and B: the first two)."""

    layers: list[dict[str, Any]]  # hidden layers: name, n_a, n_b, inputs, per_unit, dim
    params_a: int
    params_b: int
    calib_a: int
    calib_b: int
    example_layer: str
    example_dim: int  # D of that layer's Hessian, with the bias entry
    cheapest: tuple[int, int, float] | None  # (i, j, d) of the cheapest pair
    dearest: tuple[int, int, float] | None
    median: float | None
    n_pairs: int
    full_saving: list[int]  # parameters saved per layer if every layer were fully shared
    damping: Any
    first_saving: tuple[int, int, int, int]  # (k, s, K, saved) for the first layer fully shared
    first_group_saving: int = 0  # the same for its whole group (its other members' too)
    params_total: int = 0  # every model's parameters together


def pair_numbers(pair: LoadedModels, state: ZipState | None, view: CostView | None) -> PairNumbers:
    """The formulas' numbers: one row per zippable group, described by its first member layer
    (for a chain, each hidden layer); its Hessian size D counts the inputs it reads shared in
    full (every input for a layer reading the model's input)."""
    by_name = {row["layer"]: row for row in pair.layers}
    full_k = {g["group"]: min(pair.widths(g)) for g in pair.groups}
    layers = []
    for g in pair.groups:
        row = by_name[g["members"][0]]
        s = row["inputs"] if row["reads"] is None else full_k.get(row["reads"], 0)
        layers.append(
            {
                "name": g["group"],
                "first_layer": row[
                    "layer"
                ],  # the group's first member (the group itself in a chain)
                "members": len(g["members"]),
                "bias": row["bias"],
                "kind": row["kind"],
                "n_a": g["width A"],
                "n_b": g["width B"],
                "inputs": row["inputs"],
                "per_unit": row["per_unit"],
                "dim": s * row["per_unit"] + 1,
            }
        )
    full = plan_savings(pair.layers, pair.groups, list(full_k.values()))
    first = layers[0]
    k0 = full_k[pair.groups[0]["group"]]
    alone = plan_savings(pair.layers, pair.groups, [k0] + [0] * (len(pair.groups) - 1))
    cheapest = dearest = median = None
    n_pairs = 0
    example = first["name"]
    dim = layers[0]["dim"]
    if view is not None:
        cost = view.cost
        n_pairs = cost.size
        i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
        cheapest = (int(i), int(j), float(cost[i, j]))
        i, j = np.unravel_index(int(np.argmax(cost)), cost.shape)
        dearest = (int(i), int(j), float(cost[i, j]))
        median = float(np.median(cost))
        example = view.layer
        if state is not None and view.index < len(state.records):
            dim = state.records[view.index].hessian_dim
        else:
            dim = layers[view.index]["dim"] if view.index == 0 else dim
    return PairNumbers(
        layers=layers,
        params_a=pair.params[0],
        params_b=pair.params[1],
        calib_a=min(
            pair.task_a.size("calib"), (state.settings if state else ZipSettings()).calib_samples
        ),
        calib_b=min(
            pair.task_b.size("calib"), (state.settings if state else ZipSettings()).calib_samples
        ),
        example_layer=example,
        example_dim=dim,
        cheapest=cheapest,
        dearest=dearest,
        median=median,
        n_pairs=n_pairs,
        full_saving=full,
        damping=(state.settings if state else ZipSettings()).damping,
        first_saving=(
            k0,
            first["inputs"],
            first["per_unit"],
            k0 * (first["inputs"] * first["per_unit"] + int(first["bias"])),
        ),
        first_group_saving=alone[0],
        params_total=sum(pair.params),
    )


@dataclass
class BoundaryStages:
    xs: np.ndarray
    ys: np.ndarray
    titles: list[str]  # one per stage
    probs: list[list[np.ndarray]]  # [stage][task] → (len(ys), len(xs)) p(class 1)
    accuracy: list[tuple[float, float]]
    points: list[tuple[np.ndarray, np.ndarray]]  # per task: test inputs, labels
    shares: list[int]
    predicted: list[float]
    #: each zipped layer's output energy (`ZipState.output_energy`): the predicted error's scale
    energy: list[float | None] = field(default_factory=list)


def _grid(pair: LoadedModels, n: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    pts = torch.cat([pair.task_a.test[0], pair.task_b.test[0]]).numpy()
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = 0.15 * (hi - lo)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], n)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], n)
    gx, gy = np.meshgrid(xs, ys)
    grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32))
    return xs, ys, grid


@torch.no_grad()
def _probs(state: ZipState, grid: torch.Tensor, n: int) -> list[np.ndarray]:
    model = state.session.model
    was = model.training
    model.eval()
    out = [_class1(model(grid.to(state.session.device), t), n) for t in (0, 1)]
    model.train(was)
    return out


def _class1(logits: torch.Tensor, n: int) -> np.ndarray:
    """p(class 1) from a grid's logits, as an (n, n) image."""
    p = torch.softmax(logits, dim=1)[:, 1] if logits.shape[1] > 1 else torch.sigmoid(logits[:, 0])
    return p.cpu().numpy().reshape(n, n)


@torch.no_grad()
def _original_probs(pair: LoadedModels, grid: torch.Tensor, n: int) -> list[np.ndarray]:
    """Each original model's p(class 1) on the grid (the loaded models, never the zip's)."""
    out = []
    for net in (pair.model_a, pair.model_b):
        was = net.training
        net.eval()
        device = next(net.parameters()).device
        out.append(_class1(net(grid.to(device)), n))
        net.train(was)
    return out


def shows_boundaries(pair: LoadedModels) -> bool:
    """Decision boundaries can be drawn: two tasks on 2-D points (the moons-circles pair)."""
    return not pair.many and tuple(pair.task_a.input_shape) == (2,)


def zip_boundaries(
    pair: LoadedModels, state: ZipState, seen: dict[int, Any], *, grid: int = 70
) -> BoundaryStages:
    """The Step page's boundaries: the original models', then the zip's after each layer it
    zipped (the Learn page's pictures, for the zip the student is making).

    A layer's stage is drawn when the page first sees it and kept in `seen` (the page keeps
    it for this zip: the engine does not keep the network of every step); the current stage is
    redrawn each time (a retraining changes it); stages past an undo are dropped."""
    if not shows_boundaries(pair):
        raise ValueError("decision boundaries need two tasks on 2-D inputs (moons-circles)")
    xs, ys, g = _grid(pair, grid)
    done = len(state.records)
    for k in [k for k in seen if k > done]:
        del seen[k]
    if 0 not in seen:
        seen[0] = ("original", _original_probs(pair, g, grid), tuple(state.baseline))
    if done:
        r = state.records[-1]
        width = min(dict((n, w) for n, *w in state.layers)[r.name])
        title = f"after {r.name} ({len(r.pairs)}/{width} shared)"
        if r.retraining is not None:
            title += ", retrained"
        seen[done] = (title, _probs(state, g, grid), tuple(state.accuracy))
    stages = [seen[k] for k in sorted(seen)]
    points = []
    for task in (pair.task_a, pair.task_b):
        x, y = task.test
        points.append((x[:200].numpy(), y[:200].numpy()))
    return BoundaryStages(
        xs,
        ys,
        [s[0] for s in stages],
        [s[1] for s in stages],
        [s[2] for s in stages],
        points,
        [len(r.pairs) for r in state.records],
        [],
    )


def boundary_stages(
    pair: LoadedModels,
    share: float,
    retrain_iterations: int = 0,
    *,
    lr: float = 0.05,
    grid: int = 70,
    max_points: int = 200,
) -> BoundaryStages:
    """Decision boundaries of both tasks before zipping and after zipping each hidden layer
    with `share` of its neurons (retraining after each if asked)."""
    if tuple(pair.task_a.input_shape) != (2,):
        raise ValueError("decision boundaries need 2-D inputs (the moons-circles pair)")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    state = ZipState(pair, ZipSettings(heldout_samples=200, eval_samples=1000))
    xs, ys, g = _grid(pair, grid)
    titles, probs, acc, shares, predicted = (
        ["original"],
        [_probs(state, g, grid)],
        [state.accuracy],
        [],
        [],
    )
    energy: list[float | None] = []
    for name, *widths in state.layers:
        k = int(round(share * min(widths)))
        event = state.step(k)
        shares.append(k)
        predicted.append(event["predicted_error"])
        energy.append(event.get("output_energy"))
        label = f"after {name} ({k}/{min(widths)} shared)"
        if retrain_iterations:
            state.retrain(NullJob(), iterations=retrain_iterations, lr=lr, device="cpu")  # type: ignore[arg-type]
            label += f", retrained {retrain_iterations}"
        titles.append(label)
        probs.append(_probs(state, g, grid))
        acc.append(state.accuracy)
    points = []
    for task in (pair.task_a, pair.task_b):
        x, y = task.test
        points.append((x[:max_points].numpy(), y[:max_points].numpy()))
    return BoundaryStages(xs, ys, titles, probs, acc, points, shares, predicted, energy)
