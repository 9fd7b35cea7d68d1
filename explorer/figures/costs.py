"""What a layer's costs say: their histogram, the greedy sorted-cost curve (predicted layer
error against the share), and predicted against measured error per zipped layer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ._style import COLORS, MARGIN, log_ticks

__all__ = ["cost_histogram", "cost_curve", "layer_errors"]


def cost_histogram(
    cost: np.ndarray, *, scale: str = "linear", bins: int = 60, cache: dict | None = None
) -> go.Figure:
    """How the pair costs are distributed (counts per bin; log-spaced bins for `scale="log"`).
    `cache` (a dict kept with the matrix) saves the counting between redraws."""
    key = ("hist", scale, bins)
    if cache is not None and key in cache:
        return _histogram_figure(*cache[key], scale)
    counts, edges, n = _histogram(cost, scale, bins)
    if cache is not None:
        cache[key] = (counts, edges, n)
    return _histogram_figure(counts, edges, n, scale)


def _histogram(cost: np.ndarray, scale: str, bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    values = np.asarray(cost, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if scale == "log":
        values = values[values > 0]
        if values.size == 0:
            values = np.array([1e-12])
        lo, hi = float(values.min()), float(values.max())
        edges = np.logspace(np.log10(lo), np.log10(hi) + 1e-9, bins + 1)
        edges[0], edges[-1] = lo, max(hi, edges[-1])  # rounding must not drop the extremes
    else:
        edges = np.histogram_bin_edges(values, bins=bins)
    counts, edges = np.histogram(values, bins=edges)
    return counts, edges, int(values.size)


def _histogram_figure(counts: np.ndarray, edges: np.ndarray, n: int, scale: str) -> go.Figure:
    centres = np.sqrt(edges[:-1] * edges[1:]) if scale == "log" else (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(
        go.Bar(
            x=centres,
            y=counts,
            width=np.diff(edges),
            marker_color=COLORS["shared"],
            hovertemplate="cost ≈ %{x:.3g}<br>%{y} pairs<extra></extra>",
            name="pairs",
        )
    )
    fig.update_layout(
        title=f"Cost histogram ({n:,} pairs)",
        xaxis={"title": "cost d[i, j]"}
        # on a log axis Plotly labels 0.02 and 0.05 as "2" and "5", or every digit in full
        # until they run together: ticks that are written in full and kept apart
        | (
            {"type": "log", **log_ticks(float(edges[0]), float(edges[-1]))}
            if scale == "log"
            else {"type": "linear"}
        ),
        yaxis={"title": "pairs"},
        margin=MARGIN,
        height=320,
        bargap=0,
    )
    return fig


def cost_curve(
    curve: np.ndarray, k: int, *, applied: float | None = None, title: str = ""
) -> go.Figure:
    """Predicted layer error against the number of shared neurons.

    `curve[m - 1]` is the predicted error of zipping with m pairs (the engine's preview: the
    pairs the method picks and the weights it applies); the current share `k` is marked, and
    `applied` (the error of the pairs actually applied, if different) as well.
    """
    curve = np.asarray(curve, dtype=np.float64)
    xs = np.arange(0, curve.size + 1)
    ys = np.concatenate([[0.0], curve])
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            line={"color": COLORS["shared"]},
            name="predicted error of the first k pairs",
            hovertemplate="%{x} shared<br>predicted error %{y:.4g}<extra></extra>",
        )
    )
    k = int(min(max(k, 0), curve.size))
    fig.add_vline(x=k, line_dash="dash", line_color=COLORS["front"])
    fig.add_trace(
        go.Scatter(
            x=[k],
            y=[ys[k]],
            mode="markers",
            marker={"color": COLORS["front"], "size": 11},
            name=f"share {k}: predicted {ys[k]:.4g}",
        )
    )
    if applied is not None and not math.isclose(applied, ys[k], rel_tol=1e-6, abs_tol=1e-12):
        fig.add_trace(
            go.Scatter(
                x=[k],
                y=[applied],
                mode="markers",
                marker={"color": COLORS["b"], "size": 11, "symbol": "diamond"},
                name=f"applied pairs: {applied:.4g}",
            )
        )
    fig.update_layout(
        title=title or "Predicted error against the share",
        xaxis={"title": "shared neurons k"},
        yaxis={"title": "predicted layer error"},
        margin=MARGIN,
        height=320,
        legend={"orientation": "h", "y": -0.3},
    )
    return fig


def layer_errors(rows: Sequence[dict[str, Any]], *, overfit_ratio: float = 2.0) -> go.Figure:
    """Predicted against held-out measured layer error for each zipped layer.

    `rows`: dicts with `layer`, `predicted`, `heldout` (None when not measured). Layers where
    heldout > `overfit_ratio` × predicted are annotated.
    """
    names = [r["layer"] for r in rows]
    pred = [r["predicted"] for r in rows]
    held = [r["heldout"] if r.get("heldout") is not None else None for r in rows]
    fig = go.Figure(
        [
            go.Bar(x=names, y=pred, name="predicted (Hessian samples)", marker_color="#9467bd"),
            go.Bar(x=names, y=held, name="measured (held-out)", marker_color="#e377c2"),
        ]
    )
    # a log axis only where the errors span decades: bars on a log axis start at its bottom,
    # so close values would look many times apart
    positive = [v for v in (*pred, *held) if v is not None and v > 0]
    log = bool(positive) and max(positive) > 20 * min(positive)
    for name, p, h in zip(names, pred, held):
        if h is not None and p is not None and h > overfit_ratio * max(p, 1e-12):
            y = math.log10(h) if log and h > 0 else h  # annotations on a log axis take log10
            fig.add_annotation(
                x=name, y=y, text=f"×{h / max(p, 1e-12):.1f}", showarrow=False, yshift=10
            )
    fig.update_layout(
        barmode="group",
        title="Layer error: predicted vs measured on held-out data",
        yaxis={"title": "E_A + E_B increase"}
        | (
            {"type": "log", **log_ticks(min(positive), max(positive))}
            if log
            else {"type": "linear", "rangemode": "tozero"}
        ),
        margin=MARGIN,
        height=320,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
