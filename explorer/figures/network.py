"""The zipped network as a diagram: per hidden layer, A-only, shared and B-only neurons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from ._style import COLORS, MARGIN

__all__ = ["network_diagram"]


def network_diagram(
    layers: Sequence[dict[str, Any]], *, input_label: str = "input", heads: Sequence[str] = ()
) -> go.Figure:
    """The network as one column of boxes per hidden layer: A-only on top, shared in the middle,
    B-only below (heights ∝ neuron counts), then the two heads.

    `layers`: dicts with `layer`, `n_a`, `n_b`, `shared` and `status` ("zipped", "next",
    "pending"); optionally `members` (a residual group's layers, shown on hover).
    """
    fig = go.Figure()
    col_w, gap = 0.6, 1.0
    x = 0.0
    tallest = max([r["n_a"] + r["n_b"] - r["shared"] for r in layers] + [1])

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
        members = r.get("members")
        where = r["layer"] if not members or members == r["layer"] else f"{r['layer']} [{members}]"
        if a_only:
            box(
                x,
                y_a0,
                x + col_w,
                top,
                COLORS["a"],
                str(a_only),
                f"{where}: {a_only} A only",
                dash,
            )
        if k:
            box(x, y_s0, x + col_w, y_a0, COLORS["shared"], str(k), f"{where}: {k} shared")
        if b_only:
            box(
                x,
                -h / 2,
                x + col_w,
                y_s0,
                COLORS["b"],
                str(b_only),
                f"{where}: {b_only} B only",
                dash,
            )
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
    for t, (label, color) in enumerate(
        zip(heads or ("head A", "head B"), (COLORS["a"], COLORS["b"]))
    ):
        y0 = 0.15 if t == 0 else -0.75
        box(x, y0, x + col_w, y0 + 0.6, color, f"head {'AB'[t]}", label)
        arrow(x, y0 + 0.3, prev_right)
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
        margin=MARGIN,
        height=360,
        legend={"orientation": "h", "y": -0.05},
        plot_bgcolor="white",
    )
    return fig
