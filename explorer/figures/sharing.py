"""Which neurons are shared: counts per layer, a layer's matching, and a shared unit's incoming
weights as images (A's neuron, B's, …, the merged one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._style import COLORS, LETTERS, MARGIN, task_color, task_letters

__all__ = ["sharing_bars", "matching_figure", "weight_images"]


def sharing_bars(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Shared / A-only / B-only / … neuron counts per layer (stacked bars, one colour per task).

    `rows`: dicts with `layer`, `shared` and each task's own count (`a_only`, `b_only`,
    `c_only`, …; optionally `status`).
    """
    names = [r["layer"] for r in rows]
    letters = task_letters(rows[0], "{}_only") if rows else "ab"
    fig = go.Figure()
    series = [("shared", "shared", COLORS["shared"])]
    series += [(f"{c}_only", f"{c.upper()} only", task_color(t)) for t, c in enumerate(letters)]
    for key, label, color in series:
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
        margin=MARGIN,
        height=340,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def matching_figure(
    pairs: np.ndarray,
    pair_costs: np.ndarray,
    *widths: int,
    max_pairs: int = 400,
    max_lines: int = 60,
    seed: int = 0,
) -> go.Figure:
    """A picture of a layer's matching: one column of neurons per model (A left, then B, C, …),
    one line per shared unit through the neurons it replaces, coloured by cost tercile. More than
    `max_pairs` are sampled (`layout.meta.shown`). Lines are drawn for the `max_lines` cheapest
    shown units only (`layout.meta.lines`): at 200 lines and more the diagram was a grey mesh;
    every shown unit keeps its markers (and its hover) on the columns. Neuron numbers run
    beside the columns.

    `pairs`: (k, T) one column per model (pairs for two models, tuples for more); `widths`: each
    model's neuron count (n_a, n_b, …)."""
    n_models = len(widths)
    if n_models < 2:
        raise ValueError(f"give every model's width (at least two), got {list(widths)}")
    pairs = np.asarray(pairs, np.int64).reshape(-1, n_models)
    costs = np.asarray(pair_costs, np.float64).reshape(-1)
    labels = [LETTERS[t].upper() for t in range(n_models)]
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
        lined = idx[np.argsort(costs[idx], kind="stable")[:max_lines]]
        lined_mask = np.zeros(k, bool)
        lined_mask[lined] = True
        for label, mask, color in groups:
            sel = idx[mask[idx] & lined_mask[idx]]
            if sel.size == 0:
                continue
            xs, ys = [], []
            for p in sel:
                xs += [*range(n_models), None]
                ys += [pairs[p, t] / max(n - 1, 1) for t, n in enumerate(widths)] + [None]
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
        hover = np.concatenate([pairs[idx], costs[idx, None]], axis=1)
        who = " ↔ ".join(f"{c} %{{customdata[{t}]}}" for t, c in enumerate(labels))
        for side, width in enumerate(widths):
            fig.add_trace(
                go.Scatter(
                    x=np.full(idx.size, float(side)),
                    y=pairs[idx, side] / max(width - 1, 1),
                    mode="markers",
                    marker={"color": task_color(side), "size": 5},
                    customdata=hover,
                    hovertemplate=who + f"<br>cost %{{customdata[{n_models}]:.4g}}<extra></extra>",
                    name=f"{labels[side]}'s neurons",
                )
            )
    for side, width in enumerate(widths):  # neuron numbers beside each column, as on a ruler
        ticks = np.unique(np.linspace(0, width - 1, min(width, 6)).round().astype(int))
        fig.add_trace(
            go.Scatter(
                x=np.full(ticks.size, side + (-0.04 if side == 0 else 0.04)),
                y=ticks / max(width - 1, 1),
                mode="text",
                text=[str(t) for t in ticks],
                textposition="middle left" if side == 0 else "middle right",
                textfont={"color": COLORS["neutral"], "size": 11},
                showlegend=False,
                hoverinfo="skip",
                name=f"{labels[side]} neuron numbers",
            )
        )
    what = "pairs" if n_models == 2 else "tuples"
    sizes = " × ".join(f"{n} {c}" for n, c in zip(widths, labels))
    n_lines = min(int(idx.size), max_lines)
    fig.update_layout(
        title=f"Matching: {k} {what} of {sizes} neurons"
        + (f" ({idx.size} shown)" if idx.size < k else "")
        + (f"; lines for the {n_lines} cheapest" if n_lines < idx.size else ""),
        xaxis={
            "tickvals": list(range(n_models)),
            "ticktext": [f"{c} (neuron index ↓)" for c in labels],
            "range": [-0.3, n_models - 0.7],
        },
        yaxis={"showticklabels": False, "autorange": "reversed"},
        margin=MARGIN,
        height=480,
        legend={"orientation": "h", "y": -0.08},
        meta={"pairs": k, "shown": int(idx.size), "lines": n_lines if k else 0},
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
    fig.update_layout(title=title, margin=MARGIN, height=320)
    return fig
