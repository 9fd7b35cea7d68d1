"""The pair-cost heatmap of a layer, and how a large cost matrix is reduced for it.

A matrix wider than `MAX_CELLS` a side is pooled in blocks (mean, min or max), and the
figure's `layout.meta` says how, so a layer with thousands of neurons never sends millions
of numbers to the browser."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ._style import COLORS, MARGIN, MAX_CELLS

__all__ = ["PoolInfo", "pool_matrix", "matched_order", "cost_heatmap"]


class PoolInfo(dict):
    """How a matrix was reduced for display: block sizes and the pooling statistic."""

    @property
    def pooled(self) -> bool:
        return self["block"] != (1, 1)


def pool_matrix(
    matrix: np.ndarray, max_cells: int = MAX_CELLS, how: str = "mean"
) -> tuple[np.ndarray, PoolInfo]:
    """Pool `matrix` in blocks so neither side exceeds `max_cells` (mean, min or max per block).

    Rows/columns that do not fill the last block are padded with NaN and ignored by the
    statistic. Returns the pooled matrix and its `PoolInfo` (block sizes, shape, statistic).
    """
    if how not in ("mean", "min", "max"):
        raise ValueError(f"pool how must be 'mean', 'min' or 'max', got {how!r}")
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {m.shape}")
    n_r, n_c = m.shape
    br = max(1, math.ceil(n_r / max_cells))
    bc = max(1, math.ceil(n_c / max_cells))
    info = PoolInfo(block=(br, bc), how=how, shape=(n_r, n_c))
    if br == 1 and bc == 1:
        info["out_shape"] = (n_r, n_c)
        return m, info
    rows, cols = math.ceil(n_r / br), math.ceil(n_c / bc)
    padded = np.full((rows * br, cols * bc), np.nan)
    padded[:n_r, :n_c] = m
    blocks = padded.reshape(rows, br, cols, bc)
    fn = {"mean": np.nanmean, "min": np.nanmin, "max": np.nanmax}[how]
    out = fn(blocks, axis=(1, 3))
    info["out_shape"] = out.shape
    return out, info


def matched_order(n_a: int, n_b: int, pairs: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Row and column orders that put `pairs` on the diagonal: paired neurons first (in pair
    order), then the unpaired ones in their original order."""
    pairs = np.zeros((0, 2), np.int64) if pairs is None else np.asarray(pairs, np.int64)

    def order(n: int, chosen: np.ndarray) -> np.ndarray:
        rest = np.setdiff1d(np.arange(n), chosen, assume_unique=False)
        return np.concatenate([chosen, rest]).astype(np.int64)

    return order(n_a, pairs[:, 0]), order(n_b, pairs[:, 1])


def _labels(order: np.ndarray, block: int, prefix: str) -> list[str]:
    if block == 1:
        return [f"{prefix} {i}" for i in order]
    out = []
    for start in range(0, len(order), block):
        stop = min(start + block, len(order)) - 1
        if np.array_equal(order, np.arange(len(order))):
            out.append(f"{prefix} {start}–{stop}")
        else:
            out.append(f"{prefix} #{start}–{stop}")
    return out


#: tick labels per heatmap axis: the neuron numbers at evenly spaced cells (all would overlap)
AXIS_TICKS = 11


def _ticks(order: np.ndarray, labels: list[str], block: int) -> dict:
    """Tick positions and texts for a heatmap axis: neuron numbers (the first of a block when
    pooled) at up to `AXIS_TICKS` evenly spaced cells. The cells are categories ("A 12"); the
    text is the bare number, so the axis reads like a ruler whichever the order."""
    n = len(labels)
    at = np.unique(np.linspace(0, n - 1, min(n, AXIS_TICKS)).round().astype(int)) if n else []
    return {
        "tickvals": [labels[i] for i in at],
        "ticktext": [str(int(order[i * block])) for i in at],
        "showticklabels": True,
    }


def cost_heatmap(
    cost: np.ndarray,
    *,
    pairs: np.ndarray | None = None,
    order: str = "original",
    scale: str = "linear",
    pool: str = "mean",
    max_cells: int = MAX_CELLS,
    title: str = "",
    cache: dict | None = None,
    row_name: str = "A",
    col_name: str = "B",
    row_title: str | None = None,
    col_title: str | None = None,
) -> go.Figure:
    """The N_A × N_B pair-cost heatmap (rows: A's neurons, columns: B's), chosen pairs marked.

    `row_name`, `col_name` name the two sides in the hover ("A 12"), `row_title`, `col_title`
    the axes (default "neuron of A", "neuron of B"): any two models, or a model against the
    units merged so far (three or more models).

    `order="matched"` puts the pairs on the diagonal; `scale="log"` colours log10(cost) (the
    hover still shows the cost). Matrices larger than `max_cells` a side are pooled; the figure's
    `layout.meta` records `block`, `how`, `shape`, `pairs_shown`. `cache`, a dict kept with the
    matrix, saves the pooling between redraws of the same matrix.
    """
    if order not in ("original", "matched"):
        raise ValueError(f"order must be 'original' or 'matched', got {order!r}")
    if scale not in ("linear", "log"):
        raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
    cost = np.asarray(cost, dtype=np.float64)
    n_a, n_b = cost.shape
    pairs = np.zeros((0, 2), np.int64) if pairs is None else np.asarray(pairs, np.int64)
    if order == "matched":
        rows, cols = matched_order(n_a, n_b, pairs)
        key = ("matched", pool, max_cells, hash(pairs.tobytes()))
    else:
        rows, cols = np.arange(n_a), np.arange(n_b)
        key = ("original", pool, max_cells)
    if cache is not None and key in cache:
        pooled, info = cache[key]
    else:
        shown = cost[np.ix_(rows, cols)] if order == "matched" else cost
        pooled, info = pool_matrix(shown, max_cells, pool)
        if cache is not None:
            for old in [k for k in cache if k[0] == "matched"]:
                del cache[old]  # keep one matched ordering (the current share's)
            cache[key] = (pooled, info)
    br, bc = info["block"]
    ylab = _labels(rows, br, row_name)
    xlab = _labels(cols, bc, col_name)
    row_title = row_title or f"neuron of {row_name}"
    col_title = col_title or f"neuron of {col_name}"
    positive = pooled[np.isfinite(pooled) & (pooled > 0)]
    floor = float(positive.min()) if positive.size else 1e-12
    if scale == "log":
        z = np.log10(np.maximum(pooled, floor))
        custom = pooled.astype(np.float32)
        hover = "%{y}<br>%{x}<br>cost %{customdata:.4g}<extra></extra>"
        cbar = {"title": {"text": "log₁₀ cost"}}
    else:
        z, custom = pooled, None
        hover = "%{y}<br>%{x}<br>cost %{z:.4g}<extra></extra>"
        cbar = {"title": {"text": "cost"}}
    if info.pooled:
        hover = hover.replace("cost", f"{pool} cost", 1)
    heat = go.Heatmap(
        z=z.astype(np.float32),
        x=xlab,
        y=ylab,
        customdata=custom,
        colorscale="Viridis",
        reversescale=True,
        colorbar=cbar,
        hovertemplate=hover,
        name="cost",
    )
    fig = go.Figure(heat)
    # chosen pairs, in display (block) coordinates
    pos_r = np.empty(n_a, np.int64)
    pos_r[rows] = np.arange(n_a)
    pos_c = np.empty(n_b, np.int64)
    pos_c[cols] = np.arange(n_b)
    marks: set[tuple[int, int]] = set()
    for i, j in pairs:
        marks.add((int(pos_r[i] // br), int(pos_c[j] // bc)))
    if marks:
        pts = sorted(marks)
        size = max(3, min(10, 600 // max(len(ylab), 1)))
        x, y = [xlab[c] for _, c in pts], [ylab[r] for r, _ in pts]

        def squares(color: str, side: int, line: int, **trace: Any) -> go.Scatter:
            marker = {
                "symbol": "square-open",
                "color": color,
                "size": side,
                "line": {"width": line},
            }
            return go.Scatter(x=x, y=y, mode="markers", marker=marker, cliponaxis=False, **trace)

        fig.add_trace(
            squares(
                COLORS["front"],
                size,
                2,
                name=f"chosen pairs ({len(pairs)})",
                hovertemplate="%{y} ↔ %{x}<extra>chosen pair</extra>",
            )
        )
        # a white ring just outside each red square: red alone vanished on the dark (costly)
        # cells of the reversed Viridis scale; the ring shows there, the red on light cells
        fig.add_trace(
            squares(
                "white",
                size + 4,
                1,
                name="chosen pairs (outline)",
                showlegend=False,
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        title=title or f"Pair costs d[i, j] ({n_a} × {n_b})",
        margin=MARGIN,
        height=560,
        # fixed ranges: the chosen-pair markers must not pad the axes around the matrix
        xaxis={
            "title": col_title,
            **_ticks(cols, xlab, bc),
            "tickangle": 0,
            "ticks": "",
            "showgrid": False,
            "type": "category",
            "range": [-0.5, len(xlab) - 0.5],
        },
        yaxis={
            "title": row_title,
            **_ticks(rows, ylab, br),
            "ticks": "",
            "showgrid": False,
            "type": "category",
            "range": [len(ylab) - 0.5, -0.5],  # A's first neuron at the top
        },
        showlegend=bool(marks),  # name the red squares (one trace: Plotly would hide it)
        legend={"orientation": "h", "y": -0.05},
        meta={
            "block": [br, bc],
            "how": pool,
            "shape": [n_a, n_b],
            "cells": list(pooled.shape),
            "pairs_shown": len(marks),
            "order": order,
            "scale": scale,
            "axes": [row_title, col_title],
        },
    )
    return fig
