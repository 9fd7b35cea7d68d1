"""Costs: the N_A × N_B neuron-pair cost matrix of a hidden layer, and what the choice costs.

With three or more models a picker chooses the matrix: any two models (task i vs task j), or a
model against the zipped network (the stage-wise matching's costs: its units against the units
merged from the models before it)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from explorer import figures, guide, state, ui
from explorer.state import K
from explorer.tables import readable
from explorer.tuple_costs import comparisons
from explorer.workspace import joined

#: held-out / predicted layer error above which a merge is said to overfit its Hessian samples.
#: Both are the undamped increase of E_A + E_B (on validation images / on the Hessian samples).
#: docs/results.md (MNIST 0–4 vs 5–9 LeNet-300-100, full zip): well-posed merges stay at
#: 1.0–1.6× (4,096 samples, any damping; 256 samples at damping ≥ 1), overfitting ones reach
#: 2.4× (1,024 samples, 1e-4; merged weights 6.6× the originals) up to 410× (256, 1e-4).
OVERFIT_RATIO = 2.0

ws = state.workspace()
st.title("Neuron-pair costs")
st.caption(
    "d[i, j] is the increase of the two networks' layer error if neuron i of A and neuron j of "
    "B become one shared neuron (with Hessian-weighted merged weights). MTZ shares the cheapest "
    "pairs first (greedy)."
)
ui.show_flashes("costs", ws)
z = ui.require_zip(ws, "costs")
loaded = ws.loaded
labels = loaded.labels
if loaded.many:
    st.caption(
        f"{loaded.n_tasks} models: a step pairs A's and B's units by this cost, then matches "
        "each further model's units to the units merged so far (their Hessian is the sum of "
        "the merged tasks' Hessians); a shared unit replaces one unit of every model. Pick "
        "which two sides the heatmap compares."
    )

names = [name for name, *_ in z.layers]


def describe(i: int) -> str:
    name, *widths = z.layers[i]
    status = {"zipped": "zipped", "next": "next to zip", "pending": "not zipped yet"}[z.status(i)]
    return f"{name} ({' × '.join(map(str, widths))}) — {status}"


def side(t: int) -> str:
    return f"{labels[t]} ({loaded.tasks[t].name})"


def describe_comparison(which: tuple[str, int, int]) -> str:
    kind, i, j = which
    if kind == "pair":
        return f"task {side(i)} vs task {side(j)}"
    return f"model {side(i)} vs the zipped network ({joined(labels[:i])} merged)"


default = z.next_index if z.next_index is not None else len(names) - 1
c1, c2, c3, c4 = st.columns([3, 2, 3, 3])
index = c1.selectbox(
    "Layer", list(range(len(names))), index=default, format_func=describe, key=K.COSTS_LAYER
)
scale = c2.segmented_control(
    "Colour", ["linear", "log"], default="log", key=K.COSTS_SCALE, required=True
)
order = c3.segmented_control(
    "Rows and columns",
    ["original", "matched"],
    default="original",
    key=K.COSTS_ORDER,
    required=True,
    format_func=lambda o: {"original": "original", "matched": "pairs on diagonal"}[o],
)
pool = c4.segmented_control(
    "Aggregate blocks by",
    ["mean", "min", "max"],
    default="min",
    key=K.COSTS_POOL,
    required=True,
    help="Only for layers wider than 256 neurons: the heatmap shows at most 256 × 256 cells.",
)
name, *widths = z.layers[index]
status = z.status(index)
members = z.members(index)
if len(members) > 1:
    st.caption(
        f"**{name}** is a residual stream of {len(members)} layers zipped with one matching: "
        f"{', '.join(members)}. A pair's cost is the sum of its costs in every member."
    )


def estimate() -> None:
    ws.start_evaluate_plan()


view = None
if ws.busy:
    view = z.cost_view(index, ws.estimates, compute=False)
else:
    try:
        with st.spinner(f"Computing the Hessians and costs of {name}…"):
            view = z.cost_view(index, ws.estimates)
    except Exception as exc:  # noqa: BLE001
        st.error(f"The costs of {name} could not be computed: {ui.message(exc)}")
        st.stop()

if view is None and status == "next":
    st.info(
        f"{ws.job.title} is running: the Hessians and costs of {name} are computed when it ends "
        "(they depend on the network it is changing). Zipped layers can be viewed meanwhile."
    )
    st.stop()
if view is None:
    earlier = ", ".join(names[len(z.records) : index])
    st.info(
        f"The costs of {name} depend on how the layers before it ({earlier}) are zipped: its "
        "Hessian is taken over the shared inputs, through the zipped network. Zip those first on "
        "**Step through**, or estimate them now by zipping a copy of the pair with the planned "
        "shares (the tuning sliders on **Trade-off**)."
    )
    st.button(
        "Estimate with the planned shares",
        on_click=ui.callback("costs", estimate),
        disabled=ws.busy,
        key="costs.estimate",
    )
    st.stop()

if view.source == "estimate":
    st.warning(f"Estimate: {view.note}. Zip the layers before it for the exact costs.")
if view.no_curve and status != "zipped" and view.tuples is not None:
    st.info(
        f"No preview of every share for {name}: {view.no_curve}. The costs below are the "
        "engine's, and the predicted error is that of the tuples a step would take at the "
        "share you set."
    )
elif view.no_curve and status != "zipped":
    st.info(
        f"No preview of every share for {name}: {view.no_curve}. The pair costs below are "
        "the engine's; zip it on **Step through** to see its pairs and predicted error."
    )

# the share: fixed for a zipped layer, the plan otherwise (shared with Step through and tuning)
if status == "zipped":
    rec = z.records[index]
    k = rec.k
    st.caption(f"{name} is zipped with {k} shared neurons ({rec.method}); undo it to change that.")
else:
    key = state.plan_key("costs", name)
    k = st.slider(
        f"Shared neurons in {name} (of {view.max_k})",
        0,
        view.max_k,
        int(min(ws.plan.get(name, view.max_k // 2), view.max_k)),
        key=key,
        on_change=lambda: ws.set_plan(name, st.session_state[key]),
        help="The planned share of this layer: the next zip uses it (Step through).",
    )

# which matrix: A vs B for two models; any pair, or a model vs the zipped network, for more
which = ("pair", 0, 1)
if view.tuples is not None:
    options = comparisons(labels)
    which = st.selectbox("Compare", options, format_func=describe_comparison, key=K.COSTS_COMPARE)
    which = tuple(which)
if view.tuples is None:
    cost, pairs = view.cost, view.pairs_for(k)
else:
    try:
        cost, pairs = view.tuples.matrix(which, k)
    except ValueError as exc:  # e.g. kept batch norm: no one stage matrix (the reason)
        st.info(f"{describe_comparison(which)}: {ui.message(exc)}.")
        st.stop()
kind, i_side, j_side = which
if kind == "pair":
    row_name, col_name = labels[i_side], labels[j_side]
    row_title, col_title = f"neuron of {side(i_side)}", f"neuron of {side(j_side)}"
    title = f"{name}: pair costs" + ("" if view.tuples is None else f" {row_name} vs {col_name}")
else:
    merged = joined(labels[:i_side])
    row_name, col_name = "merged", labels[i_side]
    row_title = f"unit merged from {merged} (in pick order)"
    col_title = f"neuron of {side(i_side)}"
    title = f"{name}: costs of {col_name} vs the zipped network ({merged})"
    st.caption(
        f"Rows: the {len(cost)} units merged from {merged} at this share (their Hessian is the "
        f"sum of those tasks'); columns: model {col_name}'s units. The stage-wise matching "
        f"gives each merged unit one unit of {col_name}, cheapest first; the squares mark them."
    )
figure_cache = view.figure_cache.setdefault(which, {})
if cost.size == 0:
    st.info(
        f"No unit is shared at this share, so there is nothing merged for {col_name} to be "
        "matched to: raise the share."
    )
    st.stop()
fig = figures.cost_heatmap(
    cost,
    pairs=pairs,
    order=order,
    scale=scale,
    pool=pool,
    title=title,
    cache=figure_cache,
    row_name=row_name,
    col_name=col_name,
    row_title=row_title,
    col_title=col_title,
)
meta = fig.layout.meta
m1, m2, m3, m4 = st.columns(4)
m1.metric("Shared neurons", f"{k} / {view.max_k}")
shown = view.applied_error if status == "zipped" else view.predicted(k)
share = guide.energy_percent(shown, z.output_energy(index))
scale = None if share is None else f"{share} of output energy"  # short: a metric's delta
m2.metric(
    "Predicted layer error",
    "–" if shown is None else f"{shown:.4g}",
    delta=scale,
    delta_color="off",
    delta_arrow="off",
    help="The increase of E_A + E_B (+ E_C … for more models) on the Hessian samples that the "
    "merged weights of the chosen units cause (the number Step through records, for every "
    "method). Damping steers which units and weights are chosen; it never enters this number. "
    "Below it: that error over the layer's output energy (the original outputs' own mean "
    "square on the same samples).",
)
if view.tuples is None:
    cheapest, median = view.cheapest, view.median
else:
    finite = cost[np.isfinite(cost)]
    cheapest = float(finite.min()) if finite.size else 0.0
    median = float(np.median(finite)) if finite.size else 0.0
m3.metric("Cheapest pair", f"{cheapest:.3g}")
m4.metric("Median pair", f"{median:.3g}")

ui.plot(fig, key="costs.heatmap")
n_rows, n_cols = cost.shape
if meta["block"] != [1, 1]:
    st.caption(
        f"{n_rows} × {n_cols} = {n_rows * n_cols:,} pairs are too many to draw: each cell shows "
        f"the **{pool}** of a {meta['block'][0]} × {meta['block'][1]} block "
        f"({meta['cells'][0]} × {meta['cells'][1]} cells); chosen pairs mark their block."
    )
else:
    st.caption(
        f"Hover a cell for i ({row_name}'s {'unit' if kind == 'stage' else 'neuron'}), j "
        f"({col_name}'s neuron) and the cost; squares "
        "mark the chosen pairs"
        + (" — reordered so they lie on the diagonal." if order == "matched" else ".")
    )

c1, c2 = st.columns(2)
with c1:
    ui.plot(figures.cost_histogram(cost, scale=scale, cache=figure_cache), key="costs.hist")
with c2:
    if view.curve is None and view.no_curve:
        known = (
            f" Only the applied pairs' predicted error ({view.applied_error:.4g}) is known."
            if view.applied_error is not None
            else ""
        )
        st.caption(f"No curve of the predicted error against the share: {view.no_curve}.{known}")
    elif view.curve is None:
        st.caption(
            f"{name} was zipped without a preview of every share on this network, so only the "
            f"applied pairs' predicted error ({view.applied_error:.4g}) is known; undo to see "
            "the curve."
        )
    else:
        ui.plot(
            figures.cost_curve(
                view.curve,
                k,
                applied=view.applied_error if status == "zipped" else None,
                title=f"{name}: predicted error vs shared neurons",
            ),
            key="costs.curve",
        )

st.subheader("Predicted against measured")
rows = z.error_rows()
if not rows:
    st.caption(
        "After a layer is zipped, its predicted error (on the Hessian samples) is compared here "
        "with the error measured on validation inputs the Hessians never saw."
    )
else:
    ui.plot(figures.layer_errors(rows, overfit_ratio=OVERFIT_RATIO), key="costs.errors")
    for r in rows:
        pred, held = r["predicted"], r["heldout"]
        if held is not None and held > OVERFIT_RATIO * max(pred, 1e-12):
            st.warning(
                f"{r['layer']}: the error measured on validation inputs ({held:.4g}) is "
                f"{held / max(pred, 1e-12):.1f}× the predicted one ({pred:.4g}) — the merge is "
                "overfitting its Hessian samples. Stronger damping or more calibration samples "
                "help (zip settings on Step through)."
            )
    st.dataframe(readable(rows), hide_index=True)
