"""Accuracy against parameters saved, one series per method or source, with the Pareto
front."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from ._style import COLORS, MARGIN, METHOD_COLORS, task_letters

__all__ = ["tradeoff_figure", "TUNED"]

#: the series of the best plans found within x points (`explorer.tuning.SERIES`): their own marker
TUNED = "tuned plan"
#: a marker per series that is not a sweep's method: the user's own points must not look like
#: each other ("tuned plan" and "step-through" were both large round markers) nor like a method
OWN_SYMBOLS = {
    "original": "star",
    TUNED: "hexagram",
    "yours (step-through)": "triangle-up",
    "yours (evaluated plan)": "pentagon",
}
#: Plotly's `zorder`: the Pareto front's open rings under the points they pass through, so a
#: ring never hides the mtz point it marks
FRONT_Z, POINTS_Z = 0, 1


def _percent_format(span: float | None) -> str:
    """Tick labels with enough decimals that neighbouring ticks (about span / 6 apart) differ."""
    if span is None or span >= 0.1:
        return ".0%"
    return ".1%" if span >= 0.01 else ".2%"


def tradeoff_figure(
    points: Any,
    *,
    y: str = "mean_acc",
    front: Any = None,
    title: str = "",
) -> go.Figure:
    """Accuracy against parameters saved (`saved_fraction`), one series per method/source.

    `points`: a pandas DataFrame with columns `saved_fraction`, one accuracy per task (`acc_a`,
    `acc_b`, `acc_c`, …), `mean_acc` (over all tasks), `method` and optionally `series`,
    `label` (series `tuned plan`: the best plans within x points, drawn as large hexagrams);
    `front`: the rows on the Pareto front (drawn as a line). `y` is `mean_acc` or one
    task's `acc_<letter>`.
    """
    columns = list(points.columns) if points is not None else []
    letters = task_letters(dict.fromkeys(columns), "acc_{}") or "ab"
    allowed = ["mean_acc", *(f"acc_{c}" for c in letters)]
    if y not in allowed:
        raise ValueError(f"y must be one of {', '.join(allowed)}, got {y!r}")
    names = ", ".join(c.upper() for c in letters)
    ylabel = f"mean accuracy ({names})" if y == "mean_acc" else f"accuracy task {y[4:].upper()}"
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
            color = METHOD_COLORS.get(name.split(" ")[0], None)  # "tuned plan": "tuned"
            if name.startswith("yours"):
                color = METHOD_COLORS["yours"]
            symbol = OWN_SYMBOLS.get(name, symbols.get(name, "circle"))
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
                        "size": 10 if swept else 14,
                        "color": color,
                        "symbol": symbol,
                        "line": {"width": 1, "color": "white"},
                    },
                    zorder=POINTS_Z,
                    name=str(series),
                    customdata=np.stack(
                        [group["label"].astype(str)]
                        + [group[f"acc_{c}"].astype(float) for c in letters],
                        axis=1,
                    ),
                    hovertemplate="%{customdata[0]}<br>saved %{x:.1%}<br>"
                    + " · ".join(
                        f"{c.upper()} %{{customdata[{t + 1}]:.3f}}" for t, c in enumerate(letters)
                    )
                    + "<extra>"
                    + str(series)
                    + "</extra>",
                )
            )
    yrange, xspan = None, None
    if points is not None and len(points):
        ys = np.asarray(points[y], dtype=float)
        ys = ys[np.isfinite(ys)]
        if ys.size:
            lo, hi = float(ys.min()), float(ys.max())
            pad = max(0.02, 0.1 * (hi - lo))
            yrange = [max(0.0, lo - pad), min(1.0, hi) + pad / 2]
        xs = np.asarray(points["saved_fraction"], dtype=float)
        xs = xs[np.isfinite(xs)]
        if xs.size:
            xspan = float(xs.max() - min(xs.min(), 0.0))
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
                zorder=FRONT_Z,
            )
        )
    fig.update_layout(
        title=title or "Accuracy vs parameters saved",
        xaxis={
            "title": "parameters saved (saved_fraction)",
            "tickformat": _percent_format(xspan),
            "range": None if xspan is not None else [0.0, 0.5],
        },
        yaxis={
            "title": ylabel,
            "tickformat": _percent_format(None if yrange is None else yrange[1] - yrange[0]),
            "range": yrange if yrange is not None else [0.0, 1.0],
        },
        margin=MARGIN,
        height=460,
        legend={"orientation": "h", "y": -0.15},
    )
    if xspan is None:  # nothing to draw yet: the axes' real ranges, and why they are empty
        fig.add_annotation(
            x=0.25,
            y=0.5,
            text="no configuration evaluated yet",
            showarrow=False,
            font={"color": COLORS["neutral"], "size": 14},
        )
    return fig
