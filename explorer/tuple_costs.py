"""One group's costs when three or more models are zipped (T ≥ 3), for the Costs page.

The engine zips T models stage by stage (`mtz_core.analysis.ManyAnalysis.plan`): the first two
models' units are paired by the MTZ cost, then every further model t is matched to the units
merged so far, whose Hessian is the sum of the merged tasks' Hessians. `TupleCosts` reads one
group's `ManyAnalysis` (every task's Hessians and incoming vectors) and gives, without
recomputing a Hessian:

- `pair_cost(i, j)`: the MTZ cost of sharing a unit of model i with one of model j (what the
  first stage uses for i, j = 0, 1);
- `stage_cost(t, k)`: the cost of matching model t's units to the k units merged from the models
  before it (the stage-wise matching's own matrix);
- `tuples(k)`: the k T-tuples a step with k shared units takes, and `predicted(k)` its predicted
  error (exact Hessians only; the session measures the others during the step).

All the algebra is the engine's: `LayerAnalysis` / `GroupAnalysis` make each matrix (with each
task's norm scales when the models keep their batch norm per task), `ManyAnalysis.plan` chooses
and merges. With a kept norm the merged side's Hessian differs per merged unit (its tasks'
scales), so there is no one stage matrix: `stage_cost` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mtz_core import ZipConfig
from mtz_core.analysis import GroupAnalysis, LayerAnalysis, ManyAnalysis

__all__ = ["TupleCosts", "comparisons"]


def comparisons(labels: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """The matrices a group of T models can show: every pair of models (i < j) as
    ("pair", i, j), then each further model against the zipped network ("stage", t, t)."""
    n = len(labels)
    out: list[tuple[str, int, int]] = [("pair", i, j) for i in range(n) for j in range(i + 1, n)]
    out += [("stage", t, t) for t in range(2, n)]
    return out


@dataclass
class TupleCosts:
    """A group's costs among T ≥ 3 models (see the module docstring)."""

    analysis: ManyAnalysis
    config: ZipConfig
    index: int  # the group's position in the zip order (seeds the random method)
    chosen: np.ndarray | None = None  # (k, T) the tuples applied, for a zipped group
    applied_error: float | None = None  # their recorded predicted error
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def damping(self) -> float:
        return float(self.config.damping)

    @property
    def n_tasks(self) -> int:
        return len(self.analysis.members[0][2])

    @property
    def widths(self) -> tuple[int, ...]:
        """Units per model."""
        return tuple(int(v.shape[0]) for v in self.analysis.members[0][3])

    @property
    def max_k(self) -> int:
        return min(self.widths)

    @property
    def scales(self) -> list[Any]:
        """Per member, each task's kept-norm unit scales (None: the member keeps no norm)."""
        found = getattr(self.analysis, "scales", None)  # an engine without kept norms: none
        return list(found) if found else [None] * len(self.analysis.members)

    @property
    def kept_norm(self) -> bool:
        return any(sc is not None for sc in self.scales)

    def _group(
        self,
        hs: list[Any],
        vs: list[tuple[torch.Tensor, torch.Tensor]],
        scales: list[Any] | None = None,
    ) -> GroupAnalysis:
        """A two-sided analysis of the group's members: side one's Hessian and vectors against
        side two's (`hs[m]`, `vs[m]`, `scales[m]`: member m's pairs)."""
        name = self.analysis.name
        scales = scales or [None] * len(hs)
        return GroupAnalysis(
            name,
            [
                (i, LayerAnalysis(name, kind, h1, h2, None, v1, v2, {}, scales=sc))
                for (i, kind, _, _), (h1, h2), (v1, v2), sc in zip(
                    self.analysis.members, hs, vs, scales
                )
            ],
        )

    def pair_cost(self, i: int, j: int) -> np.ndarray:
        """(n_i, n_j) the damped MTZ cost of sharing unit r of model i with unit c of model j
        (summed over a residual group's members; each task's norm scales for a kept norm)."""
        key = ("pair", i, j)
        if key not in self._cache:
            members = self.analysis.members
            group = self._group(
                [(hs[i], hs[j]) for _, _, hs, _ in members],
                [(vs[i], vs[j]) for _, _, _, vs in members],
                [None if sc is None else (sc[i], sc[j]) for sc in self.scales],
            )
            self._cache[key] = group.variant(self.damping).cost.cpu().numpy()
        return self._cache[key]

    def _plan(self, k: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The engine's plan for k shared units (the applied tuples for a zipped group):
        the (k, T) tuples and each member's merged vectors."""
        k = self._k(k)
        key = ("plan", k)
        if key not in self._cache:
            given = None if self.chosen is None else torch.as_tensor(self.chosen[:k])
            chosen, merged, _, _, _ = self.analysis.plan(
                k, given, self.config, self.index, self.damping
            )
            self._cache[key] = (chosen, merged)
        return self._cache[key]

    def _k(self, k: int) -> int:
        if self.chosen is not None:
            return len(self.chosen)
        return int(min(max(int(k), 0), self.max_k))

    def tuples(self, k: int) -> np.ndarray:
        """(k, T) the units each shared unit replaces, one column per model (for a zipped group
        the applied ones, whatever k)."""
        if self.chosen is not None:
            return self.chosen
        chosen, _ = self._plan(k)
        return chosen.cpu().numpy().astype(np.int64)

    def predicted(self, k: int) -> float | None:
        """The predicted error of a step with k shared units: Σ_t of each task's layer-error
        increase on the Hessian samples (None for blocked Hessians, which the session measures
        by a pass over the samples during the step)."""
        if self.chosen is not None:
            return self.applied_error
        if self._k(k) == 0:
            return 0.0
        if not self.analysis.exact:
            return None
        key = ("predicted", self._k(k))
        if key not in self._cache:
            chosen, merged = self._plan(k)
            self._cache[key] = float(self.analysis.errors(merged, chosen).sum())
        return self._cache[key]

    def stage_cost(self, t: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Model t (t ≥ 2) against the zipped network: the (k, n_t) cost of matching each of the
        k units merged from models 0 … t−1 (rows, in tuple order) to model t's units, with the
        merged side's Hessian the sum of those tasks' Hessians — the matrix the stage-wise
        matching reads. Returns it and the matched (row, unit of t) pairs."""
        if not 2 <= t < self.n_tasks:
            raise ValueError(f"stage {t} is out of range: models 2 to {self.n_tasks - 1}")
        if self.kept_norm:
            raise ValueError(
                "with batch norm kept per task, each merged unit's Hessian depends on its own "
                "tasks' norm scales, so the units merged so far have no one cost matrix against "
                "the next model; compare two models instead"
            )
        k = self._k(k)
        key = ("stage", t, k)
        if key not in self._cache:
            tuples = torch.as_tensor(self.tuples(k))
            members = self.analysis.members
            earlier = ManyAnalysis(
                self.analysis.name, [(i, kind, hs[:t], vs[:t]) for i, kind, hs, vs in members], {}
            )
            _, merged, _, _, _ = earlier.plan(
                k, tuples[:, :t], self.config, self.index, self.damping
            )
            sides = []
            for _, _, hs, _ in members:
                total = hs[0].plus(hs[1])
                for h in hs[2:t]:
                    total = total.plus(h)
                sides.append((total, hs[t]))
            group = self._group(
                sides, [(m.to(vs[t].device), vs[t]) for m, (_, _, _, vs) in zip(merged, members)]
            )
            cost = group.variant(self.damping).cost.cpu().numpy()
            pairs = np.stack([np.arange(k), tuples[:, t].numpy()], axis=1).astype(np.int64)
            self._cache[key] = (cost, pairs)
        return self._cache[key]

    def matrix(self, which: tuple[str, int, int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The matrix of comparison `which` (from `comparisons`) and the pairs marked on it:
        a pair of models with the columns of their tuples, or a stage with its matching."""
        kind, i, j = which
        if kind == "pair":
            tuples = self.tuples(k)
            return self.pair_cost(i, j), tuples[:, [i, j]]
        return self.stage_cost(i, k)
