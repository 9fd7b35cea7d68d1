"""The explorer's figures as pure functions: numbers in, Plotly figures out (no Streamlit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("plotly")
from explorer import figures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def arr(x) -> np.ndarray:
    """A trace's array, whether Plotly kept it as numpy or as a list."""
    return np.asarray(x)


def test_figures_module_does_not_import_streamlit():
    code = "import sys, explorer.figures; print('streamlit' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_pool_matrix_blocks_with_padding():
    m = np.arange(25, dtype=float).reshape(5, 5)
    pooled, info = figures.pool_matrix(m, max_cells=2, how="max")
    assert info["block"] == (3, 3) and pooled.shape == (2, 2)
    assert pooled[0, 0] == m[:3, :3].max() and pooled[1, 1] == m[3:, 3:].max()
    mean, _ = figures.pool_matrix(m, max_cells=2, how="mean")
    assert mean[1, 1] == pytest.approx(m[3:, 3:].mean())  # the NaN padding is ignored
    low, _ = figures.pool_matrix(m, max_cells=2, how="min")
    assert low[0, 1] == m[:3, 3:].min()
    same, info = figures.pool_matrix(m, max_cells=10)
    assert same is not None and not info.pooled and same.shape == (5, 5)
    with pytest.raises(ValueError, match="mean"):
        figures.pool_matrix(m, how="median")


def test_matched_order_puts_pairs_first():
    rows, cols = figures.matched_order(4, 3, np.array([[2, 0], [0, 2]]))
    assert list(rows) == [2, 0, 1, 3] and list(cols) == [0, 2, 1]


def test_cost_heatmap_caps_cells_and_marks_pairs():
    rng = np.random.default_rng(0)
    cost = rng.random((1000, 600))
    pairs = np.stack([np.arange(50), np.arange(50) + 10], axis=1)
    fig = figures.cost_heatmap(cost, pairs=pairs, scale="linear", pool="mean")
    heat = fig.data[0]
    z = arr(heat.z)
    assert max(z.shape) <= figures.MAX_CELLS
    assert fig.layout.meta["block"] == [4, 3] and fig.layout.meta["shape"] == [1000, 600]
    assert z.shape == (250, 200) and len(heat.x) == 200 and len(heat.y) == 250
    assert z[0, 0] == pytest.approx(cost[:4, :3].mean(), rel=1e-5)
    marks = fig.data[1]
    assert marks.name == "chosen pairs (50)" and len(marks.x) == fig.layout.meta["pairs_shown"]


def test_cost_heatmap_matched_order_puts_pairs_on_the_diagonal_and_log_hover():
    cost = np.array([[5.0, 1.0, 9.0], [2.0, 8.0, 0.5], [7.0, 3.0, 4.0]])
    pairs = np.array([[1, 2], [0, 1], [2, 0]])
    fig = figures.cost_heatmap(cost, pairs=pairs, order="matched", scale="log")
    heat, marks, _outline = fig.data
    assert list(heat.y) == ["A 1", "A 0", "A 2"] and list(heat.x) == ["B 2", "B 1", "B 0"]
    assert [heat.y.index(y) for y in marks.y] == [heat.x.index(x) for x in marks.x]
    np.testing.assert_allclose(arr(heat.customdata)[0, 0], 0.5, rtol=1e-6)  # hover: the cost
    np.testing.assert_allclose(arr(heat.z)[0, 0], np.log10(0.5), rtol=1e-6)  # colour: log10
    with pytest.raises(ValueError):
        figures.cost_heatmap(cost, order="sorted")


def test_cost_histogram_counts_every_pair():
    cost = np.random.default_rng(1).random((30, 40)) + 1e-3
    for scale in ("linear", "log"):
        fig = figures.cost_histogram(cost, scale=scale)
        assert arr(fig.data[0].y).sum() == 1200
    assert fig.layout.xaxis.type == "log"


def test_cost_curve_marks_the_share_and_the_applied_error():
    curve = np.cumsum([0.1, 0.2, 0.4])
    fig = figures.cost_curve(curve, 2, applied=0.5)
    assert list(arr(fig.data[0].y)) == pytest.approx([0.0, 0.1, 0.3, 0.7])
    assert list(fig.data[1].x) == [2] and fig.data[1].y[0] == pytest.approx(0.3)
    assert fig.data[2].name.startswith("applied pairs: 0.5")
    assert len(figures.cost_curve(curve, 2, applied=0.3).data) == 2  # same: no extra marker


def test_layer_errors_flags_overfitting():
    rows = [
        {"layer": "fc1", "predicted": 1.0, "heldout": 5.0},
        {"layer": "fc2", "predicted": 1.0, "heldout": 1.1},
    ]
    fig = figures.layer_errors(rows)
    assert [a.text for a in fig.layout.annotations] == ["×5.0"]
    assert list(fig.data[1].y) == [5.0, 1.1]


def test_sharing_bars_stack_shared_and_own():
    rows = [
        {"layer": "fc1", "shared": 10, "a_only": 5, "b_only": 2},
        {"layer": "fc2", "shared": 0, "a_only": 8, "b_only": 8},
    ]
    fig = figures.sharing_bars(rows)
    assert fig.layout.barmode == "stack"
    assert [t.name for t in fig.data] == ["shared", "A only", "B only"]
    assert list(fig.data[0].y) == [10, 0] and list(fig.data[2].y) == [2, 8]


def test_matching_figure_samples_large_matchings():
    k = 1000
    pairs = np.stack([np.arange(k), np.arange(k)[::-1]], axis=1)
    fig = figures.matching_figure(pairs, np.linspace(0, 1, k), k, k, max_pairs=100)
    assert fig.layout.meta["shown"] == 100 and fig.layout.meta["pairs"] == k
    a_points = next(t for t in fig.data if t.name == "A's neurons")
    assert len(a_points.x) == 100


def test_weight_images_share_one_symmetric_range():
    imgs = [np.full((8, 8), 0.5), -np.ones((8, 8)), np.zeros((2, 8, 8))]
    fig = figures.weight_images(imgs, ["A", "B", "merged"])
    heats = [t for t in fig.data if t.type == "heatmap"]
    assert len(heats) == 3 and {(h.zmin, h.zmax) for h in heats} == {(-1.0, 1.0)}
    assert arr(heats[2].z).shape == (8, 16)  # channels side by side


def test_network_diagram_shows_counts_per_layer():
    rows = [
        {"layer": "fc1", "n_a": 300, "n_b": 300, "shared": 120, "status": "zipped"},
        {"layer": "fc2", "n_a": 100, "n_b": 80, "shared": 0, "status": "next"},
    ]
    fig = figures.network_diagram(rows, heads=("A: digits:0-4", "B: digits:5-9"))
    labels = [t.text[0] for t in fig.data if t.mode == "text"]
    assert ["in", "180", "120", "180", "100", "80", "head A", "head B"] == labels
    assert len(fig.layout.shapes) == len(labels)


def test_loss_curves_one_smoothed_line_per_task():
    rows = [(i, 2.0 / (i + 1), 1.0 / (i + 1)) for i in range(100)]
    fig = figures.loss_curves(rows)
    named = [t.name for t in fig.data if t.name]
    assert named == ["task A loss", "task B loss"]
    assert len(figures.loss_curves([]).data) == 0


def test_tradeoff_figure_series_and_front():
    df = pd.DataFrame(
        {
            "series": ["original", "mtz", "mtz", "random"],
            "method": ["original", "mtz", "mtz", "random"],
            "label": ["o", "m1", "m2", "r"],
            "saved_fraction": [0.0, 0.1, 0.3, 0.3],
            "acc_a": [0.99, 0.98, 0.9, 0.5],
            "acc_b": [0.97, 0.96, 0.92, 0.6],
        }
    ).assign(mean_acc=lambda d: (d.acc_a + d.acc_b) / 2)
    front = df.iloc[[0, 1, 2]]
    fig = figures.tradeoff_figure(df, y="acc_b", front=front)
    names = [t.name for t in fig.data]
    assert names == ["original", "mtz", "random", "Pareto front"]
    assert list(arr(fig.data[1].y)) == [0.96, 0.92]
    assert fig.data[1].mode == "lines+markers" and fig.data[2].marker.symbol == "x"
    assert fig.data[0].marker.symbol == "star"
    assert list(arr(fig.data[-1].x)) == [0.0, 0.1, 0.3]
    with pytest.raises(ValueError):
        figures.tradeoff_figure(df, y="loss")
    assert len(figures.tradeoff_figure(df.iloc[:0]).data) == 0


def test_decision_boundaries_grid_of_stages_and_tasks():
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    probs = [[np.full((4, 5), 0.2), np.full((4, 5), 0.8)] for _ in range(3)]
    pts = [(np.zeros((3, 2)), np.array([0, 1, 1]))] * 2
    fig = figures.decision_boundaries(xs, ys, probs, ["original", "l1", "l2"], ["A", "B"], pts)
    assert len([t for t in fig.data if t.type == "contour"]) == 12
    assert len([t for t in fig.data if t.type == "scatter"]) == 6
    assert fig.layout.annotations[0].text == "original — A"


def test_heatmap_and_histogram_reuse_their_cache():
    cost = np.random.default_rng(2).random((600, 300))
    cache: dict = {}
    first = figures.cost_heatmap(cost, pool="max", cache=cache)
    hist = figures.cost_histogram(cost, cache=cache)
    cost[:] = 0.0  # the cached pooling and counts are what the redraw uses
    again = figures.cost_heatmap(cost, pool="max", cache=cache)
    np.testing.assert_array_equal(arr(first.data[0].z), arr(again.data[0].z))
    np.testing.assert_array_equal(
        arr(hist.data[0].y), arr(figures.cost_histogram(cost, cache=cache).data[0].y)
    )
    pairs = np.array([[0, 1], [2, 3]])
    figures.cost_heatmap(cost, pairs=pairs, order="matched", cache=cache)
    figures.cost_heatmap(cost, pairs=pairs[:1], order="matched", cache=cache)
    assert len([k for k in cache if k[0] == "matched"]) == 1


def test_loss_curves_skip_missing_losses():
    # training a pair reports model A's loss, then model B's: the other task's is NaN
    rows = [(1, 0.5, np.nan), (2, 0.4, np.nan), (3, np.nan, 0.3), (4, np.nan, 0.2)]
    fig = figures.loss_curves(rows)
    smooth = {t.name: arr(t.y) for t in fig.data if t.name}
    assert list(smooth) == ["task A loss", "task B loss"]
    assert all(np.isfinite(v).all() and v.size == 2 for v in smooth.values())


# ------------------------------------------------------------------- issue 11, item 6: figures


def test_cost_heatmap_axes_carry_neuron_numbers():
    """The heatmap's axes had no numbers: which neuron is row 150? Now up to 11 ticks per axis
    with the neuron's number (the first of a block when pooled)."""
    fig = figures.cost_heatmap(np.random.default_rng(0).random((200, 100)))
    x, y = fig.layout.xaxis, fig.layout.yaxis
    assert x.showticklabels and y.showticklabels
    assert list(y.ticktext)[0] == "0" and list(y.ticktext)[-1] == "199" and len(y.ticktext) <= 11
    assert list(x.ticktext)[-1] == "99" and all(t.isdigit() for t in x.ticktext)
    assert list(x.tickvals) == [f"B {t}" for t in x.ticktext]  # the cells' own categories
    pooled = figures.cost_heatmap(np.random.default_rng(0).random((1000, 40)))
    assert pooled.layout.meta["block"] == [4, 1]
    assert [int(t) % 4 for t in pooled.layout.yaxis.ticktext] == [0] * len(
        pooled.layout.yaxis.ticktext
    ), "a pooled row is named by its first neuron"


def test_chosen_pair_markers_have_a_light_outline_for_dark_cells():
    """Red squares alone vanished on the dark (costly) cells: a white ring goes around each."""
    cost = np.random.default_rng(0).random((20, 20))
    pairs = np.array([[0, 1], [5, 7]])
    fig = figures.cost_heatmap(cost, pairs=pairs)
    marks = next(t for t in fig.data if t.name == "chosen pairs (2)")
    ring = next(t for t in fig.data if t.name == "chosen pairs (outline)")
    assert ring.marker.color == "white" and ring.marker.size > marks.marker.size
    assert list(ring.x) == list(marks.x) and list(ring.y) == list(marks.y)
    assert ring.showlegend is False


@pytest.mark.parametrize("lo, hi", [(0.05, 0.09), (0.055, 0.085), (1e-4, 1.0), (1e-9, 30.0)])
def test_log_axis_ticks_never_run_together(lo, hi):
    """A short log axis had every digit labelled in full: "0.060.070.08". Ticks now stay at
    least an eighth of the axis apart, at most 8 of them, written in full."""
    import math

    cost = np.geomspace(lo, hi, 500)
    fig = figures.cost_histogram(cost, scale="log")
    axis = fig.layout.xaxis
    vals = list(axis.tickvals)
    assert 2 <= len(vals) <= 8 and vals == sorted(vals)
    span = math.log10(hi / lo)
    assert all(math.log10(b / a) >= span / 8 - 1e-9 for a, b in zip(vals, vals[1:]))
    assert list(axis.ticktext) == [f"{v:.2g}" for v in vals]


def test_layer_errors_log_axis_uses_the_same_ticks():
    rows = [
        {"layer": "fc1", "predicted": 1e-4, "heldout": 2e-4},
        {"layer": "fc2", "predicted": 0.3},
    ]
    fig = figures.layer_errors(rows)
    assert fig.layout.yaxis.type == "log" and len(fig.layout.yaxis.tickvals) <= 8


def test_matching_figure_stays_readable_at_hundreds_of_pairs():
    """At 200+ pairs one line per pair was a mesh: lines for the 60 cheapest only, every
    pair's neurons still marked, neuron numbers beside the columns."""
    k = 240
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.permutation(300)[:k], rng.permutation(300)[:k]], axis=1)
    costs = rng.random(k)
    fig = figures.matching_figure(pairs, costs, 300, 300)
    assert fig.layout.meta["lines"] == 60 and fig.layout.meta["shown"] == k
    lines = [t for t in fig.data if t.mode == "lines"]
    assert sum(sum(v is None for v in t.x) for t in lines) == 60  # one break per line
    cheapest = set(np.argsort(costs)[:60])
    drawn = {
        int(np.flatnonzero(pairs[:, 0] == round(y * 299))[0])
        for t in lines
        for x, y in zip(t.x, t.y)
        if x == 0
    }
    assert drawn == cheapest, "the lines are the cheapest pairs"
    a_points = next(t for t in fig.data if t.name == "A's neurons")
    assert len(a_points.x) == k
    numbers = next(t for t in fig.data if t.name == "A neuron numbers")
    assert list(numbers.text)[0] == "0" and list(numbers.text)[-1] == "299"
    assert "lines for the 60 cheapest" in fig.layout.title.text
    small = figures.matching_figure(pairs[:20], costs[:20], 300, 300)
    assert small.layout.meta["lines"] == 20 and "cheapest" not in small.layout.title.text


def test_tradeoff_own_points_have_distinct_markers_above_the_front():
    """ "tuned plan" and "step-through" looked alike; the Pareto front's rings hid the mtz
    points they marked. Each own series has its marker, and the points are drawn above."""
    df = pd.DataFrame(
        {
            "series": ["original", "mtz", "mtz", "yours (step-through)", "tuned plan"],
            "method": ["original", "mtz", "mtz", "mtz", "mtz"],
            "label": ["o", "m1", "m2", "s", "t"],
            "saved_fraction": [0.0, 0.1, 0.3, 0.2, 0.25],
            "acc_a": [0.99, 0.98, 0.9, 0.95, 0.96],
            "acc_b": [0.97, 0.96, 0.92, 0.94, 0.95],
        }
    ).assign(mean_acc=lambda d: (d.acc_a + d.acc_b) / 2)
    fig = figures.tradeoff_figure(df, front=df.iloc[[0, 1, 2]])
    by = {t.name: t for t in fig.data}
    symbols = [by[n].marker.symbol for n in ("original", "mtz", "yours (step-through)")]
    symbols.append(by["tuned plan"].marker.symbol)
    assert len(set(symbols)) == 4, symbols
    front = by["Pareto front"]
    assert all(by[n].zorder > front.zorder for n in by if n != "Pareto front")
