"""Trade-off: accuracy of every task (and their mean) against parameters saved, from every
configuration tried (sweeps through `mtz_core.sweep.sweep_many`, for two models or more)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer import figures, state, tuning, ui
from explorer.recipe import points_csv
from explorer.state import K
from explorer.sweeping import pareto_mask
from explorer.tables import readable
from explorer.tuning import DEFAULT_GRID, GRID_CHOICES, SERIES, TuneRequest, grid_of
from explorer.workspace import joined
from explorer.zipper import acc_columns, plan_savings
from mtz_core import METHODS
from mtz_core.config import MANY_METHODS
from mtz_core.training import RETRAIN_LR

ws = state.workspace()
st.title("Trade-off: accuracy vs parameters saved")
st.caption(
    "Every configuration you evaluate lands here: each step and retraining of **Step through**, "
    "every evaluated plan, the best plans found within x points, and sweeps over shares × "
    "methods. The baselines (mtz-avg, euclidean, random) are their own series; the dashed line "
    "is the Pareto front."
)
ui.show_flashes("tradeoff", ws)
pair = ui.require_models(ws)
if not pair.zippable:
    st.error(f"These models cannot be zipped: {pair.reason}")
    st.stop()
busy = ui.busy_note(ws)
labels = pair.labels
accs = acc_columns(pair.n_tasks)

# ------------------------------------------------------------------------------- the figure
df = ws.points_frame()
shown = {"mean_acc": f"mean of {joined(labels)}"}
shown.update({col: f"task {x} ({t.name})" for col, x, t in zip(accs, labels, pair.tasks)})
if state.widget(K.TRADE_Y) not in shown:  # another set of models was loaded
    st.session_state.pop(K.TRADE_Y, None)
y = st.segmented_control(
    "Accuracy shown",
    list(shown),
    default="mean_acc",
    key=K.TRADE_Y,
    required=True,
    format_func=lambda v: shown[v],
)
front = df[pareto_mask(df, y)] if len(df) else None
fig = figures.tradeoff_figure(df, y=y, front=front)
ui.plot(fig, key="trade.figure")
if len(df):
    c1, c2, _ = st.columns([2, 2, 4])
    c1.download_button(
        "Download the points (CSV)",
        data=lambda: points_csv(ws.points_frame()),
        file_name="mtz_tradeoff.csv",
        mime="text/csv",
        on_click="ignore",
        key="trade.csv",
    )
    c2.download_button(
        "Download the figure (HTML)",
        data=lambda: fig.to_html(include_plotlyjs=True, full_html=True),
        file_name="mtz_tradeoff.html",
        mime="text/html",
        on_click="ignore",
        key="trade.html",
    )
    st.caption(
        "The CSV has the columns of `mtz sweep --out`'s CSV (then the app's own): read it with "
        "`pandas.read_csv` and draw it with `mtz_core.sweep.sweep_figure` or mark its front with "
        "`mtz_core.sweep.pareto_front`."
    )
    with st.expander(f"All {len(df)} points"):
        cols = [
            c
            for c in (
                "series",
                "label",
                "saved_fraction",
                *accs,
                "mean_acc",
                "retrain_iterations",
            )
            if c in df.columns
        ]
        st.dataframe(readable(df[cols]), hide_index=True)
else:
    st.info(
        "No configuration evaluated yet: zip a layer, evaluate or find a plan, or run a sweep "
        "below."
    )

# ------------------------------------------------------------------------------ ratio tuning
st.subheader("Ratio tuning")
st.caption(
    f"One slider per {pair.unit_name}. The parameters saved are counted from the sizes alone — "
    "k·(s·K + 1) per weight layer"
    + ("" if pair.n_tasks == 2 else f" and per model beyond the first ({pair.n_tasks} − 1 copies)")
    + ", k the shared units it writes, s the shared units it reads (every input for the "
    "first), K the weights per input unit — and the predicted error from the cached cost "
    "matrices."
)
z = ws.zip
groups = pair.groups
ks = []
cols = st.columns(min(len(groups), 4))
for i, g in enumerate(groups):
    name = g["group"]
    k_max = min(pair.widths(g))
    key = state.tune_key(name)
    # the plan is the truth (a tuned plan or another page may have changed it): the slider
    # shows it, and moving the slider changes it
    st.session_state[key] = int(min(ws.plan.get(name, k_max // 2), k_max))
    with cols[i % len(cols)]:
        k = st.slider(
            f"{name} (of {k_max})",
            0,
            k_max,
            key=key,
            on_change=lambda name=name, key=key: ws.set_plan(name, st.session_state[key]),
            help=None if len(g["members"]) == 1 else "members: " + ", ".join(g["members"]),
        )
    ks.append(k)
saved = plan_savings(pair.layers, groups, ks)
total = sum(pair.params)
rows = []
missing = False
for i, (g, k, sv) in enumerate(zip(groups, ks, saved)):
    if z is not None:
        view = z.cost_view(i, ws.estimates, compute=False)
    else:
        view = ws.estimates.get(i)
    if view is None:
        missing = True
    rows.append(
        {
            pair.unit_name: g["group"],
            "shared": k,
            "of": min(pair.widths(g)),
            "parameters saved": sv,
            "predicted error": None if view is None else view.predicted(k),
            "costs from": "–" if view is None else view.source,
        }
    )
m1, m2, m3 = st.columns(3)
copies = "" if pair.n_tasks == 2 else f"({pair.n_tasks} − 1)·"
m1.metric(
    "Parameters saved",
    f"{sum(saved):,}",
    help=f"Σ {copies}k·(s·K + 1) over the weight layers",
)
m2.metric(
    "Fraction of parameters saved",
    f"{sum(saved) / total:.2%}",
    help=f"saved / ({' + '.join(f'params {x}' for x in labels)})",
)
known = [r["predicted error"] for r in rows if r["predicted error"] is not None]
m3.metric(f"Predicted error (Σ {pair.unit_name}s)", f"{sum(known):.4g}" if known else "–")
st.dataframe(readable(rows), hide_index=True)
if missing:
    st.caption(
        f"{pair.unit_name.capitalize()}s without costs yet: evaluate the plan once (or zip on "
        f"Step through); later {pair.unit_name}s' costs are estimates from the last evaluated "
        "plan."
    )
if any(r["predicted error"] is None and r["costs from"] != "–" for r in rows):
    st.caption(
        "A residual stream of several layers has a cost matrix but no predicted error per "
        "share before it is zipped (the engine previews single-layer groups only)."
    )


def evaluate_plan() -> None:
    ws.start_evaluate_plan(
        retrain_iterations=int(st.session_state.get(K.TUNE_ITS, 0)),
        lr=RETRAIN_LR,
    )


c1, c2 = st.columns([2, 3])
c1.number_input("Retraining iterations after each layer", 0, 100_000, 0, step=50, key=K.TUNE_ITS)
c2.write("")
c2.button(
    "Evaluate this plan",
    type="primary",
    on_click=ui.callback("tradeoff", evaluate_plan),
    disabled=busy,
    key="tune.evaluate",
)

# ---------------------------------------------------------------- best plan within x points
st.subheader("Best plan within x points")
st.caption(
    f"The most parameters saved such that no task loses more than x points of accuracy on its "
    f"**validation** split (`mtz_core.tune_shares`; the test split is never read to choose). "
    f"Each {pair.unit_name}'s share grows one grid step at a time, cheapest predicted error per "
    "parameter saved first; every plan tried is zipped in full with the zip settings of **Step "
    "through** and scored on validation data. Cancel stops once the plan being tried is scored "
    "and keeps the best plan found so far."
)


def start_tune() -> None:
    ws.start_tune(
        TuneRequest(
            max_drop_points=float(st.session_state.get(K.BEST_DROP, 1.0)),
            retrain_iterations=int(st.session_state.get(K.BEST_ITS, 0)),
            grid=grid_of(st.session_state.get(K.BEST_GRID, DEFAULT_GRID)),
            calib_samples=int(st.session_state.get(K.BEST_CALIB, 512)),
        )
    )


# a multiselect gets half the page: in a quarter column its chosen values were cut off
c1, c2 = st.columns(2)
c3, c4 = st.columns(2)
c1.number_input(tuning.DROP_LABEL, 0.0, 100.0, 1.0, step=0.5, key=K.BEST_DROP)
c2.multiselect(tuning.GRID_LABEL, list(GRID_CHOICES), default=list(DEFAULT_GRID), key=K.BEST_GRID)
c3.number_input(tuning.ITS_LABEL, 0, 100_000, 0, step=50, key=K.BEST_ITS)
c4.number_input(tuning.CALIB_LABEL, 10, 100_000, 512, step=128, key=K.BEST_CALIB)
st.button(
    tuning.RUN_LABEL,
    type="primary",
    on_click=ui.callback("tradeoff", start_tune),
    disabled=busy,
    key="best.run",
)
tuned = ws.current_tuned  # None when the models or settings changed since
if tuned is not None:
    p = tuned.plan
    if not tuned.found:
        (st.warning if tuned.cancelled else st.error)(tuned.problem())
    else:
        if tuned.cancelled:
            st.warning(
                f"Cancelled after {len(p.trials)} plan(s) tried: this is the best plan found "
                "so far."
            )
        st.markdown(f"**Tuned plan** ({tuned.request.describe()}, method {tuned.settings.method})")
        cols = st.columns(min(pair.n_tasks, 4) + 3)
        cols[0].metric("Saved (tuned plan)", f"{p.saved_fraction:.2%}", help="saved_fraction")
        cols[1].metric("Plans tried", f"{len(p.trials)}")
        cols[2].metric("Seconds", f"{p.seconds:.1f}")
        for t, (x, acc, loss) in enumerate(zip(labels, p.val_accuracy, p.losses_points)):
            cols[3 + t % (len(cols) - 3)].metric(
                f"Validation {x} (tuned plan)",
                f"{acc:.1%}",
                delta=f"{-loss:+.1f} pts vs {p.original_val[t]:.1%}",
                delta_color="normal" if loss > 0 else "off",
            )
        st.dataframe(tuned.plan_table(), hide_index=True, key="best.plan")
        st.dataframe(tuned.tasks_table(), hide_index=True, key="best.tasks")
        st.caption(
            f"Its shares are now in the sliders of **Ratio tuning** above: **Evaluate this plan** "
            f"zips it with the app's own settings and measures it. On the chart it is the "
            f"**{SERIES}** marker, at its test accuracy like every point (the table: validation)."
        )
    with st.expander(f"Every plan tried ({len(p.trials)})"):
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        **t.shares,
                        "kept": t.accepted,
                        "parameters saved": t.saved_fraction,
                        "predicted error": t.predicted_error,
                        **{
                            f"points lost {x}": 100 * (o - v)
                            for x, o, v in zip(labels, p.original_val, t.val_accuracy)
                        },
                    }
                    for t in p.trials
                ]
            ),
            hide_index=True,
            key="best.trials",
        )

# ------------------------------------------------------------------------------------ sweep
st.subheader("Sweep")
st.caption(
    "Zip the models at several shares (the same fraction of every layer's narrowest width) "
    "with each method, optionally retraining after each layer; every configuration becomes a "
    "point with every task's accuracy."
)


def start_sweep() -> None:
    ws.start_sweep(
        shares=sorted(st.session_state.get(K.SWEEP_SHARES, [0.25, 0.5, 0.75, 1.0])),
        methods=list(st.session_state.get(K.SWEEP_METHODS, ["mtz"])),
        retrain_iterations=int(st.session_state.get(K.SWEEP_ITS, 0)),
        calib_samples=int(st.session_state.get(K.SWEEP_CALIB, 512)),
    )


c1, c2 = st.columns(2)  # half the page each: narrower columns cut the chosen values off
c3, c4 = st.columns(2)
c1.multiselect(
    "Shares", [0.1, 0.25, 0.5, 0.75, 0.9, 1.0], default=[0.25, 0.5, 0.75, 1.0], key=K.SWEEP_SHARES
)
# zipit is offered but not swept by default: it zips chains of two models only
c2.multiselect("Methods", list(METHODS), default=list(MANY_METHODS), key=K.SWEEP_METHODS)
c3.number_input("Retraining per layer", 0, 100_000, 0, step=50, key=K.SWEEP_ITS)
c4.number_input("Calibration samples", 10, 100_000, 512, step=128, key=K.SWEEP_CALIB)
st.button(
    "Run the sweep",
    type="primary",
    on_click=ui.callback("tradeoff", start_sweep),
    disabled=busy,
    key="sweep.run",
)
if ws.sweep is not None and len(ws.sweep):
    with st.expander("The sweep alone, per task (mtz_core.sweep.sweep_figure)"):
        from mtz_core.sweep import sweep_figure

        ui.plot(sweep_figure(ws.sweep), key="trade.sweep_figure")
