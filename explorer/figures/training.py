"""What training does: loss curves (a job's, a retraining's), and the decision boundaries
of the 2-D teaching pair before and after each zipped layer (the Learn page)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._style import LETTERS, MARGIN, task_color

__all__ = ["loss_curves", "training_curve", "decision_boundaries"]


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if values.size < 3 or window <= 1:
        return values
    window = min(window, values.size)
    kernel = np.ones(window) / window
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


#: points per line of a loss chart: the live chart is redrawn while a job runs, and a chart
#: that grows with every iteration made each redraw (server, websocket, browser) slower, taking
#: CPU from the retraining it shows; 400 points are more than a 700-pixel-wide chart shows
LOSS_POINTS = 400


def _thin(n: int, max_points: int | None) -> np.ndarray:
    """Indices of at most `max_points` rows spread evenly over `n` (first and last kept)."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(2, max_points)).round().astype(int))


def loss_curves(
    losses: Sequence[Sequence[float]],
    *,
    labels: Sequence[str] | None = None,
    max_points: int | None = LOSS_POINTS,
) -> go.Figure:
    """Training loss per iteration of each task (raw, faint) with a moving average, in the
    task's colour. `losses`: rows (iteration, loss of task A, of task B, …); `labels` default
    to "task A", "task B", … one per loss column. The average is taken over every row; each
    line then draws at most `max_points` of them (None: all), so the figure's size stays the
    same however long the training (`layout.meta["rows"]` says how many rows it summarises)."""
    arr = np.asarray(losses, dtype=np.float64)
    traces: list[dict] = []
    if arr.size:
        its = arr[:, 0]
        window = max(1, int(arr.shape[0] / 25))
        if labels is None:
            labels = [f"task {x.upper()}" for x in LETTERS[: arr.shape[1] - 1]]
        colors = [task_color(t) for t in range(len(labels))]
        for t, (label, color) in enumerate(zip(labels, colors), start=1):
            if t >= arr.shape[1]:
                break
            ok = np.isfinite(arr[:, t])  # a task may report no loss on some rows
            if not ok.any():
                continue
            its_t, loss_t = its[ok], arr[ok, t]
            smooth = _smooth(loss_t, window)
            keep = _thin(its_t.size, max_points)
            its_t, loss_t, smooth = its_t[keep], loss_t[keep], smooth[keep]
            traces.append(
                {
                    "type": "scatter",
                    "x": its_t,
                    "y": loss_t,
                    "mode": "lines",
                    "line": {"color": color, "width": 1},
                    "opacity": 0.3,
                    "showlegend": False,
                    "hoverinfo": "skip",
                }
            )
            traces.append(
                {
                    "type": "scatter",
                    "x": its_t,
                    "y": smooth,
                    "mode": "lines",
                    "line": {"color": color, "width": 2},
                    "name": f"{label} loss",
                }
            )
    layout = {
        "title": {"text": "Training loss"},
        "xaxis": {"title": {"text": "iteration"}},
        # no "µ" on the ticks
        "yaxis": {"title": {"text": "cross-entropy"}, "rangemode": "tozero", "tickformat": ".2~g"},
        "margin": MARGIN,
        "height": 300,
        "legend": {"orientation": "h", "y": -0.25},
        "meta": {"rows": int(arr.shape[0]) if arr.ndim == 2 else 0},
    }
    # Built without plotly's property validation, which took 90% of the time (about 100 ms a
    # build, redone while a retraining runs: issue 11, item 4); every property above is in
    # plotly's own form, and a test checks the figure equals the validated one.
    return go.Figure(data=traces, layout=layout, _validate=False)


def training_curve(losses: Sequence[Sequence[float]], *, label: str = "model") -> go.Figure:
    """Loss of one model's training (rows `(iteration, loss)`)."""
    return loss_curves(losses, labels=(label,))


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
    fig.update_layout(margin=MARGIN, height=260 * n_rows + 40, showlegend=False)
    return fig
