"""Every figure of the explorer, as pure functions: numbers in, a Plotly figure out.

Nothing here imports Streamlit or touches session state, so each figure is tested on its own
(`tests/test_figures.py`). The colours are the same everywhere: shared neurons purple, task A's
own neurons blue, task B's orange.

Large inputs are reduced before they become a figure: a cost matrix is pooled to at most
`MAX_CELLS` × `MAX_CELLS` cells (the figure's `layout.meta` says how), matching lines and
scatter points are sampled, so a layer with thousands of neurons never sends millions of numbers
to the browser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "COLORS",
    "MAX_CELLS",
    "PoolInfo",
    "pool_matrix",
    "matched_order",
    "cost_heatmap",
    "cost_histogram",
    "cost_curve",
    "layer_errors",
    "sharing_bars",
    "matching_figure",
    "weight_images",
    "network_diagram",
    "loss_curves",
    "tradeoff_figure",
    "decision_boundaries",
    "training_curve",
]

COLORS = {
    "shared": "#7b3fa0",
    "a": "#1f77b4",
    "b": "#ff7f0e",
    "neutral": "#8c8c8c",
    "front": "#d62728",
}
METHOD_COLORS = {
    "mtz": "#7b3fa0",
    "mtz-avg": "#2ca02c",
    "euclidean": "#17becf",
    "random": "#8c8c8c",
    "original": "#000000",
    "yours": "#d62728",
}
#: the most cells a heatmap side may have; larger matrices are pooled in blocks
MAX_CELLS = 256
_MARGIN = {"l": 10, "r": 10, "t": 50, "b": 10}


# ------------------------------------------------------------------------------ cost matrices


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
) -> go.Figure:
    """The N_A × N_B pair-cost heatmap (rows: A's neurons, columns: B's), chosen pairs marked.

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
    ylab = _labels(rows, br, "A")
    xlab = _labels(cols, bc, "B")
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
        fig.add_trace(
            go.Scatter(
                x=[xlab[c] for _, c in pts],
                y=[ylab[r] for r, _ in pts],
                mode="markers",
                marker={
                    "symbol": "square-open",
                    "color": COLORS["front"],
                    "size": max(3, min(10, 600 // max(len(ylab), 1))),
                    "line": {"width": 1},
                },
                name=f"chosen pairs ({len(pairs)})",
                hovertemplate="%{y} ↔ %{x}<extra>chosen pair</extra>",
            )
        )
    fig.update_layout(
        title=title or f"Pair costs d[i, j] ({n_a} × {n_b})",
        margin=_MARGIN,
        height=560,
        xaxis={"title": "neuron of B", "showticklabels": False, "type": "category"},
        yaxis={
            "title": "neuron of A",
            "showticklabels": False,
            "type": "category",
            "autorange": "reversed",
        },
        legend={"orientation": "h", "y": -0.05},
        meta={
            "block": [br, bc],
            "how": pool,
            "shape": [n_a, n_b],
            "cells": list(pooled.shape),
            "pairs_shown": len(marks),
            "order": order,
            "scale": scale,
        },
    )
    return fig


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
        xaxis={"title": "cost d[i, j]", "type": "log" if scale == "log" else "linear"},
        yaxis={"title": "pairs"},
        margin=_MARGIN,
        height=320,
        bargap=0,
    )
    return fig


def cost_curve(
    curve: np.ndarray, k: int, *, applied: float | None = None, title: str = ""
) -> go.Figure:
    """Predicted layer error of the greedy choice against the number of shared neurons.

    `curve[m - 1]` is the sum of the m cheapest greedy pair costs; the current share `k` is
    marked, and `applied` (the error of the pairs actually applied, if different) as well.
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
            name="greedy: Σ cheapest pair costs",
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
        title=title or "Sorted cost curve (greedy choice)",
        xaxis={"title": "shared neurons k"},
        yaxis={"title": "predicted layer error"},
        margin=_MARGIN,
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
    for name, p, h in zip(names, pred, held):
        if h is not None and p is not None and h > overfit_ratio * max(p, 1e-12):
            fig.add_annotation(x=name, y=h, text=f"×{h / max(p, 1e-12):.1f}", showarrow=False)
    fig.update_layout(
        barmode="group",
        title="Layer error: predicted vs measured on held-out data",
        yaxis={"title": "E_A + E_B increase", "type": "log"},
        margin=_MARGIN,
        height=320,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


# ----------------------------------------------------------------------------------- sharing


def sharing_bars(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Shared / A-only / B-only neuron counts per layer (stacked bars).

    `rows`: dicts with `layer`, `shared`, `a_only`, `b_only` (and optionally `status`).
    """
    names = [r["layer"] for r in rows]
    fig = go.Figure()
    for key, label, color in (
        ("shared", "shared", COLORS["shared"]),
        ("a_only", "A only", COLORS["a"]),
        ("b_only", "B only", COLORS["b"]),
    ):
        fig.add_trace(
            go.Bar(
                x=names,
                y=[r[key] for r in rows],
                name=label,
                marker_color=color,
                hovertemplate="%{x}: %{y} " + label + "<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="stack",
        title="Neurons per layer",
        yaxis={"title": "neurons stored"},
        margin=_MARGIN,
        height=340,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def matching_figure(
    pairs: np.ndarray,
    pair_costs: np.ndarray,
    n_a: int,
    n_b: int,
    *,
    max_pairs: int = 400,
    seed: int = 0,
) -> go.Figure:
    """A bipartite picture of a layer's matching: A's neurons left, B's right, one line per pair
    coloured by cost tercile. More than `max_pairs` pairs are sampled (`layout.meta.shown`)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    costs = np.asarray(pair_costs, np.float64).reshape(-1)
    k = len(pairs)
    idx = np.arange(k)
    if k > max_pairs:
        idx = np.sort(np.random.default_rng(seed).choice(k, max_pairs, replace=False))
    fig = go.Figure()
    if k:
        cuts = np.quantile(costs, [1 / 3, 2 / 3]) if k >= 3 else np.array([np.inf, np.inf])
        groups = (
            ("cheapest third", costs <= cuts[0], "#2ca02c"),
            ("middle third", (costs > cuts[0]) & (costs <= cuts[1]), "#bcbd22"),
            ("dearest third", costs > cuts[1], "#d62728"),
        )
        for label, mask, color in groups:
            sel = idx[mask[idx]]
            if sel.size == 0:
                continue
            xs, ys = [], []
            for p in sel:
                xs += [0, 1, None]
                ys += [pairs[p, 0] / max(n_a - 1, 1), pairs[p, 1] / max(n_b - 1, 1), None]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    line={"color": color, "width": 1},
                    name=f"{label} ({sel.size})",
                    hoverinfo="skip",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=np.zeros(idx.size),
                y=pairs[idx, 0] / max(n_a - 1, 1),
                mode="markers",
                marker={"color": COLORS["a"], "size": 5},
                customdata=np.stack([pairs[idx, 0], pairs[idx, 1], costs[idx]], axis=1),
                hovertemplate="A %{customdata[0]} ↔ B %{customdata[1]}<br>cost "
                "%{customdata[2]:.4g}<extra></extra>",
                name="A's neurons",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=np.ones(idx.size),
                y=pairs[idx, 1] / max(n_b - 1, 1),
                mode="markers",
                marker={"color": COLORS["b"], "size": 5},
                customdata=np.stack([pairs[idx, 0], pairs[idx, 1], costs[idx]], axis=1),
                hovertemplate="A %{customdata[0]} ↔ B %{customdata[1]}<br>cost "
                "%{customdata[2]:.4g}<extra></extra>",
                name="B's neurons",
            )
        )
    fig.update_layout(
        title=f"Matching: {k} pairs of {n_a} A × {n_b} B neurons"
        + (f" ({idx.size} shown)" if idx.size < k else ""),
        xaxis={
            "tickvals": [0, 1],
            "ticktext": ["A (neuron index ↓)", "B (neuron index ↓)"],
            "range": [-0.2, 1.2],
        },
        yaxis={"showticklabels": False, "autorange": "reversed"},
        margin=_MARGIN,
        height=480,
        legend={"orientation": "h", "y": -0.08},
        meta={"pairs": k, "shown": int(idx.size)},
    )
    return fig


def weight_images(
    images: Sequence[np.ndarray], titles: Sequence[str], *, title: str = ""
) -> go.Figure:
    """Incoming weights shown as images (one panel each, one shared symmetric colour range).

    Each image is 2-D (H, W); a (C, H, W) array shows its channels side by side.
    """
    flat = []
    for img in images:
        a = np.asarray(img, dtype=np.float64)
        if a.ndim == 3:
            a = np.concatenate(list(a), axis=1)
        if a.ndim != 2:
            raise ValueError(f"each image must be 2-D or 3-D, got shape {a.shape}")
        flat.append(a)
    vmax = max(float(np.nanmax(np.abs(a))) for a in flat) or 1.0
    fig = make_subplots(rows=1, cols=len(flat), subplot_titles=list(titles))
    for c, a in enumerate(flat, start=1):
        fig.add_trace(
            go.Heatmap(
                z=a.astype(np.float32),
                zmin=-vmax,
                zmax=vmax,
                colorscale="RdBu",
                reversescale=True,
                showscale=c == len(flat),
                hovertemplate="row %{y}, col %{x}<br>weight %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=c,
        )
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{c}", row=1, col=c)
        fig.update_xaxes(showticklabels=False, row=1, col=c)
        fig.update_yaxes(showticklabels=False, row=1, col=c)
    fig.update_layout(title=title, margin=_MARGIN, height=320)
    return fig


def network_diagram(
    layers: Sequence[dict[str, Any]], *, input_label: str = "input", heads: Sequence[str] = ()
) -> go.Figure:
    """The network as one column of boxes per hidden layer: A-only on top, shared in the middle,
    B-only below (heights ∝ neuron counts), then the two heads.

    `layers`: dicts with `layer`, `n_a`, `n_b`, `shared` and `status` ("zipped", "next",
    "pending").
    """
    fig = go.Figure()
    col_w, gap = 0.6, 1.0
    x = 0.0
    tallest = max([r["n_a"] + r["n_b"] - r["shared"] for r in layers] + [1])

    def box(x0, y0, x1, y1, color, text, hover, dash=False):
        fig.add_shape(
            type="rect",
            x0=x0,
            y0=y0,
            x1=x1,
            y1=y1,
            fillcolor=color,
            opacity=0.85,
            layer="below",
            line={"color": "white" if not dash else "black", "width": 1, "dash": "dot"},
        )
        fig.add_trace(
            go.Scatter(
                x=[(x0 + x1) / 2],
                y=[(y0 + y1) / 2],
                mode="text",
                text=[text],
                textfont={"color": "white", "size": 11},
                hovertext=[hover],
                hoverinfo="text",
                showlegend=False,
            )
        )

    box(x, -0.5, x + col_w, 0.5, COLORS["shared"], "in", f"{input_label} (shared by both)")
    prev_right = x + col_w
    x += col_w + gap
    for r in layers:
        total = r["n_a"] + r["n_b"] - r["shared"]
        h = 0.3 + 2.7 * total / tallest
        a_only, b_only, k = r["n_a"] - r["shared"], r["n_b"] - r["shared"], r["shared"]
        unit = h / max(total, 1)
        top = h / 2
        y_a0 = top - a_only * unit
        y_s0 = y_a0 - k * unit
        dash = r.get("status") != "zipped"
        if a_only:
            box(
                x,
                y_a0,
                x + col_w,
                top,
                COLORS["a"],
                str(a_only),
                f"{r['layer']}: {a_only} A only",
                dash,
            )
        if k:
            box(x, y_s0, x + col_w, y_a0, COLORS["shared"], str(k), f"{r['layer']}: {k} shared")
        if b_only:
            box(
                x,
                -h / 2,
                x + col_w,
                y_s0,
                COLORS["b"],
                str(b_only),
                f"{r['layer']}: {b_only} B only",
                dash,
            )
        status = {"zipped": "✓ zipped", "next": "▶ next", "pending": "· pending"}.get(
            r.get("status", ""), ""
        )
        fig.add_annotation(
            x=x + col_w / 2, y=top + 0.25, text=f"<b>{r['layer']}</b>", showarrow=False
        )
        fig.add_annotation(x=x + col_w / 2, y=-h / 2 - 0.25, text=status, showarrow=False)
        fig.add_annotation(
            x=x,
            y=0,
            ax=prev_right,
            ay=0,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=2,
            arrowcolor="#999",
            text="",
        )
        prev_right = x + col_w
        x += col_w + gap
    for t, (label, color) in enumerate(
        zip(heads or ("head A", "head B"), (COLORS["a"], COLORS["b"]))
    ):
        y0 = 0.15 if t == 0 else -0.75
        box(x, y0, x + col_w, y0 + 0.6, color, f"head {'AB'[t]}", label)
        fig.add_annotation(
            x=x,
            y=y0 + 0.3,
            ax=prev_right,
            ay=0,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=2,
            arrowcolor="#999",
            text="",
        )
    for name, color in (
        ("shared", COLORS["shared"]),
        ("A only", COLORS["a"]),
        ("B only", COLORS["b"]),
    ):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"color": color, "size": 12, "symbol": "square"},
                name=name,
            )
        )
    fig.update_layout(
        title="The network: per-task and shared neurons",
        xaxis={"visible": False, "range": [-0.3, x + col_w + 0.3]},
        yaxis={"visible": False, "range": [-2.0, 2.0]},
        margin=_MARGIN,
        height=360,
        legend={"orientation": "h", "y": -0.05},
        plot_bgcolor="white",
    )
    return fig


# ---------------------------------------------------------------------------------- training


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if values.size < 3 or window <= 1:
        return values
    window = min(window, values.size)
    kernel = np.ones(window) / window
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def loss_curves(
    losses: Sequence[Sequence[float]], *, labels: Sequence[str] = ("task A", "task B")
) -> go.Figure:
    """Training loss per iteration of each task (raw, faint) with a moving average."""
    arr = np.asarray(losses, dtype=np.float64)
    fig = go.Figure()
    if arr.size:
        its = arr[:, 0]
        window = max(1, int(arr.shape[0] / 25))
        for t, (label, color) in enumerate(zip(labels, (COLORS["a"], COLORS["b"])), start=1):
            if t >= arr.shape[1]:
                break
            ok = np.isfinite(arr[:, t])  # a task may report no loss on some rows
            if not ok.any():
                continue
            its_t, loss_t = its[ok], arr[ok, t]
            fig.add_trace(
                go.Scatter(
                    x=its_t,
                    y=loss_t,
                    mode="lines",
                    line={"color": color, "width": 1},
                    opacity=0.3,
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=its_t,
                    y=_smooth(loss_t, window),
                    mode="lines",
                    line={"color": color, "width": 2},
                    name=f"{label} loss",
                )
            )
    fig.update_layout(
        title="Training loss",
        xaxis={"title": "iteration"},
        yaxis={"title": "cross-entropy", "rangemode": "tozero"},
        margin=_MARGIN,
        height=300,
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def training_curve(losses: Sequence[Sequence[float]], *, label: str = "model") -> go.Figure:
    """Loss of one model's training (rows `(iteration, loss)`)."""
    return loss_curves(losses, labels=(label,))


# ---------------------------------------------------------------------------------- trade-off


def tradeoff_figure(
    points: Any,
    *,
    y: str = "mean_acc",
    front: Any = None,
    title: str = "",
) -> go.Figure:
    """Accuracy against parameters saved (`saved_fraction`), one series per method/source.

    `points`: a pandas DataFrame with columns `saved_fraction`, `acc_a`, `acc_b`, `mean_acc`,
    `method` and optionally `series`, `label`; `front`: the rows on the Pareto front (drawn as a
    line). `y` is `mean_acc`, `acc_a` or `acc_b`.
    """
    if y not in ("mean_acc", "acc_a", "acc_b"):
        raise ValueError(f"y must be mean_acc, acc_a or acc_b, got {y!r}")
    ylabel = {
        "mean_acc": "mean accuracy (A, B)",
        "acc_a": "accuracy task A",
        "acc_b": "accuracy task B",
    }[y]
    fig = go.Figure()
    if points is not None and len(points):
        df = points.copy()
        if "series" not in df.columns:
            df["series"] = df["method"]
        if "label" not in df.columns:
            df["label"] = df["series"]
        symbols = {"mtz": "circle", "mtz-avg": "diamond", "euclidean": "square", "random": "x"}
        for series, group in df.groupby("series", sort=False):
            name = str(series)
            color = METHOD_COLORS.get(name.split(" ")[0], None)
            if name.startswith("yours"):
                color = METHOD_COLORS["yours"]
            symbol = "star" if name == "original" else symbols.get(name, "circle")
            swept = name in symbols  # a sweep's method: one line through its shares
            group = group.sort_values("saved_fraction") if swept else group
            fig.add_trace(
                go.Scatter(
                    x=group["saved_fraction"],
                    y=group[y],
                    mode="lines+markers" if swept else "markers",
                    line={"width": 1.5, "dash": "dot"} if swept else None,
                    opacity=0.85,
                    marker={
                        "size": 14 if name == "original" else 10,
                        "color": color,
                        "symbol": symbol,
                    },
                    name=str(series),
                    customdata=np.stack(
                        [group["acc_a"], group["acc_b"], group["label"].astype(str)], axis=1
                    ),
                    hovertemplate="%{customdata[2]}<br>saved %{x:.1%}<br>A %{customdata[0]:.3f}"
                    " · B %{customdata[1]:.3f}<extra>" + str(series) + "</extra>",
                )
            )
    yrange = None
    if points is not None and len(points):
        ys = np.asarray(points[y], dtype=float)
        ys = ys[np.isfinite(ys)]
        if ys.size:
            lo, hi = float(ys.min()), float(ys.max())
            pad = max(0.02, 0.1 * (hi - lo))
            yrange = [max(0.0, lo - pad), min(1.0, hi) + pad / 2]
    if front is not None and len(front):
        f = front.sort_values("saved_fraction")
        fig.add_trace(
            go.Scatter(
                x=f["saved_fraction"],
                y=f[y],
                mode="lines+markers",
                line={"color": COLORS["front"], "width": 2, "dash": "dash"},
                marker={
                    "size": 14,
                    "symbol": "circle-open",
                    "color": COLORS["front"],
                    "line": {"width": 2},
                },
                name="Pareto front",
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        title=title or "Accuracy vs parameters saved",
        xaxis={"title": "parameters saved (saved_fraction)", "tickformat": ".0%"},
        yaxis={"title": ylabel, "tickformat": ".0%", "range": yrange},
        margin=_MARGIN,
        height=460,
        legend={"orientation": "h", "y": -0.15},
    )
    return fig


# ------------------------------------------------------------------------------------- learn


def decision_boundaries(
    xs: np.ndarray,
    ys: np.ndarray,
    panels: Sequence[Sequence[np.ndarray]],
    row_titles: Sequence[str],
    col_titles: Sequence[str],
    points: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> go.Figure:
    """A grid of decision-boundary contours: rows are stages (original, after each layer),
    columns are tasks. `panels[r][c]` is the (len(ys), len(xs)) probability of class 1 (or the
    predicted class); `points[c]` the (inputs, labels) to overlay in column c."""
    n_rows, n_cols = len(panels), len(col_titles)
    titles = [f"{rt} — {ct}" for rt in row_titles for ct in col_titles]
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        subplot_titles=titles,
        horizontal_spacing=0.05,
        vertical_spacing=0.08 / max(n_rows - 1, 1) * 2,
    )
    for r, row in enumerate(panels, start=1):
        for c, z in enumerate(row, start=1):
            fig.add_trace(
                go.Contour(
                    x=xs,
                    y=ys,
                    z=np.asarray(z, np.float32),
                    colorscale=[[0, "#9ecae1"], [0.5, "#f7f7f7"], [1, "#fdae6b"]],
                    zmin=0,
                    zmax=1,
                    contours={"start": 0, "end": 1, "size": 0.1},
                    line={"width": 0.5},
                    showscale=False,
                    hovertemplate="(%{x:.2f}, %{y:.2f}) p(class 1) %{z:.2f}<extra></extra>",
                ),
                row=r,
                col=c,
            )
            fig.add_trace(
                go.Contour(
                    x=xs,
                    y=ys,
                    z=np.asarray(z, np.float32),
                    contours={"start": 0.5, "end": 0.5, "size": 1, "coloring": "none"},
                    line={"width": 2.5, "color": "black"},
                    showscale=False,
                    hoverinfo="skip",
                ),
                row=r,
                col=c,
            )
            if c - 1 < len(points):
                px, py = points[c - 1]
                px, py = np.asarray(px), np.asarray(py)
                fig.add_trace(
                    go.Scatter(
                        x=px[:, 0],
                        y=px[:, 1],
                        mode="markers",
                        marker={
                            "size": 4,
                            "color": np.where(py == 1, "#e6550d", "#3182bd"),
                            "line": {"width": 0.3, "color": "white"},
                        },
                        showlegend=False,
                        hoverinfo="skip",
                    ),
                    row=r,
                    col=c,
                )
            fig.update_xaxes(showticklabels=False, row=r, col=c)
            fig.update_yaxes(showticklabels=False, row=r, col=c)
    fig.update_layout(margin=_MARGIN, height=260 * n_rows + 40, showlegend=False)
    return fig
