"""The zipped network as a diagram: per hidden layer, the shared neurons and each task's own
(A-only, B-only, C-only, …), one colour per task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from ._style import COLORS, MARGIN, task_color, task_letters

__all__ = ["network_diagram"]


def network_diagram(
    layers: Sequence[dict[str, Any]], *, input_label: str = "input", heads: Sequence[str] = ()
) -> go.Figure:
    """The network as one column of boxes per hidden layer: A-only on top, shared in the middle,
    then B-only, C-only, … below (heights ∝ neuron counts), then one head per task. Shared
    neurons are purple, each task's own neurons and head its task colour.

    `layers`: dicts with `layer`, one width per task (`n_a`, `n_b`, `n_c`, …), `shared` and
    `status` ("zipped", "next", "pending"); optionally `members` (a residual group's layers,
    shown on hover). `heads`: one hover label per task.
    """
    fig = go.Figure()
    col_w, gap = 0.6, 1.0
    x = 0.0
    letters = task_letters(layers[0]) if layers else "ab"
    labels = [c.upper() for c in letters]

    def stored(r: dict[str, Any]) -> int:
        return sum(r[f"n_{c}"] for c in letters) - (len(letters) - 1) * r["shared"]

    tallest = max([stored(r) for r in layers] + [1])

    def arrow(x_to: float, y_to: float, x_from: float) -> None:
        """A grey arrow from the previous column's right edge (at height 0) to (x_to, y_to)."""
        fig.add_annotation(
            x=x_to,
            y=y_to,
            ax=x_from,
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

    every = "both" if len(letters) == 2 else f"all {len(letters)}"
    box(x, -0.5, x + col_w, 0.5, COLORS["shared"], "in", f"{input_label} (shared by {every})")
    prev_right = x + col_w
    x += col_w + gap
    for r in layers:
        total = stored(r)
        h = 0.3 + 2.7 * total / tallest
        k = r["shared"]
        own = [r[f"n_{c}"] - k for c in letters]
        unit = h / max(total, 1)
        top = h / 2
        dash = r.get("status") != "zipped"
        members = r.get("members")
        where = r["layer"] if not members or members == r["layer"] else f"{r['layer']} [{members}]"
        # from the top: A's own, the shared ones, then B's own, C's own, …
        stack = [(own[0], task_color(0), f"{labels[0]} only", dash)]
        stack.append((k, COLORS["shared"], "shared", False))
        stack += [(n, task_color(t), f"{labels[t]} only", dash) for t, n in enumerate(own)][1:]
        y = top
        for count, color, what, dashed in stack:
            if count:
                box(
                    x,
                    y - count * unit,
                    x + col_w,
                    y,
                    color,
                    str(count),
                    f"{where}: {count} {what}",
                    dashed,
                )
            y -= count * unit
        status = {"zipped": "✓ zipped", "next": "▶ next", "pending": "· pending"}.get(
            r.get("status", ""), ""
        )
        fig.add_annotation(
            x=x + col_w / 2, y=top + 0.25, text=f"<b>{r['layer']}</b>", showarrow=False
        )
        fig.add_annotation(x=x + col_w / 2, y=-h / 2 - 0.25, text=status, showarrow=False)
        arrow(x, 0, prev_right)
        prev_right = x + col_w
        x += col_w + gap
    n = len(letters)
    # one head per task, stacked around the middle, within the plot's height
    head_h = 0.6 if n <= 3 else 2.4 / n
    step = head_h + 0.3 if n <= 3 else 3.2 / n
    hovers = list(heads) if heads else [f"head {c}" for c in labels]
    for t, (label, hover) in enumerate(zip(labels, hovers)):
        y0 = (n - 1) * step / 2 - t * step - head_h / 2
        box(x, y0, x + col_w, y0 + head_h, task_color(t), f"head {label}", hover)
        arrow(x, y0 + head_h / 2, prev_right)
    legend = [("shared", COLORS["shared"])]
    legend += [(f"{c} only", task_color(t)) for t, c in enumerate(labels)]
    for name, color in legend:
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
        margin=MARGIN,
        height=360,
        legend={"orientation": "h", "y": -0.05},
        plot_bgcolor="white",
    )
    return fig
