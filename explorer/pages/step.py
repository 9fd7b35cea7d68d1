"""Step through the zip: one hidden layer at a time, bottom-up, with undo and reset (two models,
or three and more: a shared unit is then shared by all of them)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from explorer import figures, guide, state, ui
from explorer.learn import shows_boundaries, zip_boundaries
from explorer.state import K
from explorer.tables import column_name, readable
from explorer.zipper import BIG_LAYER_CELLS, ZipSettings, acc_columns, settings_refusal
from mtz_core import METHODS
from mtz_core.config import BATCH_NORMS
from mtz_core.training import RETRAIN_LR

ws = state.workspace()
st.title("Step through the zip")
st.caption(
    "Zip the layers bottom-up: set how many neurons of the next layer to share, zip it, look at "
    "what it cost every task, retrain or not, go on. Undo puts a layer back exactly."
)
ui.show_flashes("step", ws)
z = ui.require_zip(ws, "step")
loaded = ws.loaded
labels = loaded.labels
n_tasks = loaded.n_tasks
busy = ui.busy_note(ws)
unit = loaded.unit_name  # "layer" for a chain, "group" for a residual network
if loaded.many:
    st.caption(
        f"{n_tasks} models are zipped into one network with {n_tasks} heads: each shared unit "
        f"replaces one unit of every model. A step pairs A's and B's units by the MTZ cost, "
        "then matches each further model's units to the merged ones (see **Costs**)."
    )
if loaded.residual:
    st.caption(
        "A residual network is zipped group by group: the layers whose outputs are added into "
        "one residual stream write the same units, so one matching pairs them all; a layer "
        "reading units shared later gets its already-shared rows re-merged then."
    )


# ------------------------------------------------------------------------------ callbacks
def do_step(name: str) -> None:
    key = state.plan_key("step", name)
    k = int(st.session_state.get(key, ws.plan.get(name, 0)))
    event = ws.step(k)
    ws.flash(
        "step",
        "success",
        f"Zipped {event['layer']} with {event['shared']} shared neurons in "
        f"{event['seconds']:.2f} s.",
    )


def do_undo() -> None:
    name = ws.undo()
    ws.flash("step", "info", f"Undid {name}: it is back exactly as before.")


def do_reset() -> None:
    ws.reset()
    n = "two" if n_tasks == 2 else str(n_tasks)
    ws.flash("step", "info", f"Reset: the network is the {n} original models again.")


def do_run_remaining() -> None:
    ws.start_run_remaining()


def do_retrain() -> None:
    ws.start_retrain(
        iterations=int(st.session_state.get("step.rt_its", 100)),
        lr=float(st.session_state.get("step.rt_lr", RETRAIN_LR)),
        batch_size=32,
        device="auto",
    )


def apply_settings() -> None:
    damping = st.session_state.get(K.SET_DAMPING, "1.0")
    new = dataclasses.replace(
        ws.settings,
        method=st.session_state.get(K.SET_METHOD, ws.settings.method),
        damping=damping if damping == "auto" else float(damping),
        calib_samples=int(st.session_state.get(K.SET_CALIB, ws.settings.calib_samples)),
        batch_norm=st.session_state.get(K.SET_BATCH_NORM, ws.settings.batch_norm),
    )
    ws.change_settings(new)
    ws.flash("step", "info", "New zip settings: the zip starts again from the original models.")


# ------------------------------------------------------------------------------- timeline
parts = []
for i, (name, *widths) in enumerate(z.layers):
    st_ = z.status(i)
    if st_ == "zipped":
        parts.append(
            f":green[:material/check_circle:] **{name}** {z.records[i].k}/{min(widths)} shared"
        )
    elif st_ == "next":
        parts.append(f":red[:material/play_circle:] **{name}** next")
    else:
        parts.append(f":gray[:material/pending:] {name}")
parts.append(":gray[:material/flag:] heads (per task)")
st.markdown("Timeline: " + " &nbsp;→&nbsp; ".join(parts))
ui.plot(
    figures.network_diagram(
        z.sharing_rows(),
        input_label=f"input {tuple(loaded.task_a.input_shape)}",
        heads=tuple(f"{x}: {t.name}" for x, t in zip(labels, loaded.tasks)),
    ),
    key="step.diagram",
)

# ---------------------------------------------------------------------------------- status
m = st.columns(3 + n_tasks) if n_tasks <= 3 else st.columns(3)
last = z.events[-1] if z.events else None
m[0].metric(f"{unit.capitalize()}s zipped", f"{len(z.records)} / {len(z.layers)}")
m[1].metric(
    "Parameters saved",
    f"{z.saved_fraction():.1%}",
    help=f"saved_fraction = saved / ({' + '.join(labels)})",
)
if n_tasks <= 3:
    for t, (x, task) in enumerate(zip(labels, loaded.tasks)):
        m[2 + t].metric(
            f"Task {x} ({task.name})",
            ui.pct(z.accuracy[t]),
            delta=ui.delta(z.accuracy[t], z.baseline[t]),
        )
m_err = m[-1]
if last is not None and last.get("predicted_error") is not None:
    held = last.get("heldout_error")
    m_err.metric(
        f"Layer error of {last['layer']}",
        f"{last['predicted_error']:.4g}",
        delta=None if held is None else f"measured {held:.4g}",
        delta_color="off",
        delta_arrow="off",
        help="The increase of E_A + E_B (+ E_C … for more models) that the applied weights "
        "cause on the Hessian samples (undamped, whatever the damping); below it, the same "
        "measured on validation inputs.",
    )
    st.caption(guide.error_in_accuracy(last, labels))  # the error on a scale one can read
    if last.get("remerged"):
        st.caption(
            f"Zipping {last['layer']} re-merged the already-shared rows of "
            + ", ".join(f"{n} (error {e:.4g})" for n, e in last["remerged"].items())
            + " over the inputs it shared; the layer error includes them."
        )
    if last.get("pseudo_inverse"):
        st.info(
            f"Zipping {last['layer']}: H_A + H_B was singular (dead units or constant inputs at "
            "this damping), so the merge used the pseudo-inverse: directions no data excites "
            "got the plain average. A damping above 0 avoids it."
        )
else:
    m_err.metric("Layer error", "–")
if n_tasks > 3:
    ui.task_metrics(ws, z)

# ------------------------------------------------------------------------------- next step
with st.container(border=True):
    if z.done:
        every = "group" if loaded.residual else "hidden layer"
        st.markdown(f"**Every {every} is zipped.** Undo to change one, or reset.")
    else:
        name, *widths = z.layers[z.next_index]
        k_max = min(widths)
        narrow = "narrower side" if n_tasks == 2 else "narrowest model"
        key = state.plan_key("step", name)
        members = z.members(z.next_index)
        if len(members) > 1:
            st.markdown(
                f"Next: the group **{name}**, {len(members)} layers writing one residual "
                f"stream, zipped with one matching: {', '.join(members)}."
            )
        c1, c2 = st.columns([3, 2])
        with c1:
            sizes = ", ".join(f"{w} in {x}" for w, x in zip(widths, labels))
            k = st.slider(
                f"Shared neurons in **{name}** (of {k_max}: {sizes})",
                0,
                k_max,
                int(min(ws.plan.get(name, k_max // 2), k_max)),
                key=key,
                on_change=lambda: ws.set_plan(name, st.session_state[key]),
            )
            # Small layers: predict right away. Wide ones (thousands of neurons) take seconds
            # for their Hessians and costs, so they wait for a click (or the zip itself).
            wanted = widths[0] * widths[1] <= BIG_LAYER_CELLS or st.session_state.get(
                f"step.predict.{name}"
            )
            try:
                view = z.cost_view(z.next_index, compute=bool(wanted) and not busy)
            except Exception as exc:  # noqa: BLE001
                view = None
                st.error(f"The costs of {name} could not be computed: {ui.message(exc)}")
            predicted = None if view is None else view.predicted(k)
            remerges = z.remerges(z.next_index)
            if predicted is not None:
                scale = guide.of_output_energy(predicted, z.output_energy(z.next_index))
                st.caption(
                    f"Predicted layer error at {k}: **{predicted:.4g}** "
                    + (f"({scale}) " if scale else "")
                    + f"with {k / k_max:.0%} of the {narrow} shared."
                    + (
                        f" Zipping it also re-merges the already-shared rows of "
                        f"{', '.join(remerges)}; their error is added when it is zipped."
                        if remerges and k
                        else ""
                    )
                )
            elif view is not None and view.tuples is not None:
                st.caption(
                    f"{k / k_max:.0%} of the narrowest model. No prediction before the zip: "
                    f"the Hessians of {name} are blocked, so the step measures its error in a "
                    "pass over the samples."
                )
            elif view is not None:
                st.caption(
                    f"{k / k_max:.0%} of the narrower side. No prediction before the zip: "
                    f"{view.no_curve}"
                )
            else:
                st.caption(f"{k / k_max:.0%} of the {narrow}.")
                if not wanted:
                    st.button(
                        f"Predict the error ({name} is wide: computing its costs takes a while)",
                        on_click=lambda: st.session_state.update({f"step.predict.{name}": True}),
                        disabled=busy,
                        key="step.predict",
                    )
        with c2:
            st.button(
                f"Zip {name}",
                type="primary",
                on_click=ui.callback("step", do_step),
                args=(name,),
                disabled=busy,
                key="step.zip",
                width="stretch",
            )
            st.button(
                f"Zip all remaining {unit}s (planned shares)",
                on_click=ui.callback("step", do_run_remaining),
                disabled=busy,
                key="step.run_all",
                width="stretch",
            )
    c1, c2, c3 = st.columns(3)
    c1.button(
        f"Undo last {unit}",
        on_click=ui.callback("step", do_undo),
        disabled=busy or not z.records,
        key="step.undo",
        width="stretch",
    )
    c2.button(
        "Reset to the original models",
        on_click=ui.callback("step", do_reset),
        disabled=busy or not z.records,
        key="step.reset",
        width="stretch",
    )

with st.container(border=True):
    every = "both tasks" if n_tasks == 2 else f"all {n_tasks} tasks"
    st.markdown(f"**Retrain now** (jointly on {every}; more options on **Retrain**)")
    c1, c2, c3 = st.columns([2, 2, 2])
    c1.number_input("Iterations", 1, 100_000, 100, step=50, key="step.rt_its")
    c2.number_input("Learning rate", 1e-5, 10.0, RETRAIN_LR, format="%.4f", key="step.rt_lr")
    c3.write("")
    c3.button(
        "Retrain",
        on_click=ui.callback("step", do_retrain),
        disabled=busy or not z.records,
        key="step.retrain",
        width="stretch",
    )

# ------------------------------------------------------------- 2-D pair: decision boundaries
if shows_boundaries(loaded):
    st.subheader("Decision boundaries")
    st.caption(
        "Each network's probability of class 1 on the plane (shading) and its decision boundary "
        "(black line), for the original models and after each layer you zipped: watch what "
        "sharing does to what each task's network computes."
    )
    stages = zip_boundaries(loaded, z, ws.learn.setdefault(("step-boundaries", id(z)), {}))
    ui.plot(
        figures.decision_boundaries(
            stages.xs,
            stages.ys,
            stages.probs,
            stages.titles,
            [f"task {x}: {t.name}" for x, t in zip(labels, loaded.tasks)],
            stages.points,
        ),
        key="step.boundaries",
    )

# -------------------------------------------------------------------------------- history
if z.events:
    st.subheader("What each step did")
    accs = acc_columns(n_tasks)
    events = pd.DataFrame(z.events)
    events["of output energy"] = [  # the predicted error on a scale one can read
        guide.energy_percent(e.get("predicted_error"), e.get("output_energy")) for e in z.events
    ]
    hist = events[
        [
            "step",
            "shared",
            "of",
            "predicted_error",
            "of output energy",
            "heldout_error",
            "pseudo_inverse",
            *accs,
            "saved_fraction",
            "seconds",
        ]
    ]
    st.dataframe(
        readable(hist),  # words for names, "–" where a row has no such value
        hide_index=True,
        column_config={
            **{column_name(col): st.column_config.NumberColumn(format="percent") for col in accs},
            "parameters saved": st.column_config.NumberColumn(format="percent"),
            "of output energy": st.column_config.TextColumn(
                help="The predicted error over the layer's output energy on the same "
                "calibration samples (½ mean ‖W x̄‖² of the original layers, every task)."
            ),
            "seconds": st.column_config.NumberColumn(format="%.2f"),
        },
    )


def refusals(field: str, choices: list) -> dict:
    """{choice: the engine's reason} for the choices of setting `field` it refuses on these
    models (three or more models refuse some), computed once per set of models."""
    key = ("refusals", field, id(loaded))
    if key not in ws.cache:
        found = {}
        for choice in choices:
            value = float(choice) if field == "damping" and choice != "auto" else choice
            reason = settings_refusal(loaded, dataclasses.replace(ZipSettings(), **{field: value}))
            if reason:
                found[choice] = reason
        ws.cache[key] = found
    return ws.cache[key]


def marked(refused: dict):
    """A format_func showing refused choices as unavailable."""
    return lambda v: f"{v} — not for {n_tasks} models" if v in refused else str(v)


with st.expander("Zip settings (changing them starts a new zip)"):
    s = ws.settings
    c1, c2, c3 = st.columns(3)
    c1.selectbox(
        "Method",
        list(METHODS),
        index=list(METHODS).index(s.method),
        key=K.SET_METHOD,
        help="mtz: Hessian costs and merge (the method). Baselines: mtz-avg (MTZ pairs, plain "
        "average), euclidean (closest weights, average), random (random pairs, average), "
        "zipit (ZipIt!: merges by feature correlation, also inside one model; two models, "
        "no residual additions).",
    )
    damp_choices = ["0", "0.001", "0.01", "0.1", "1.0", "auto"]
    current = "auto" if s.damping == "auto" else str(s.damping)
    damp_refused = refusals("damping", damp_choices)
    norm_refused = refusals("batch_norm", list(BATCH_NORMS))
    c2.selectbox(
        "Damping",
        damp_choices,
        index=damp_choices.index(current) if current in damp_choices else 3,
        format_func=marked(damp_refused),
        key=K.SET_DAMPING,
        help="λ = damping · trace(H)/dim added to each Hessian. Weak damping lets the merge "
        "overfit the Hessian samples; auto picks per layer on held-out samples.",
    )
    c3.number_input(
        "Calibration samples per task", 10, 100_000, s.calib_samples, step=256, key=K.SET_CALIB
    )
    c1.selectbox(
        "Batch norm",
        list(BATCH_NORMS),
        index=list(BATCH_NORMS).index(s.batch_norm),
        format_func=marked(norm_refused),
        key=K.SET_BATCH_NORM,
        help="fold: folded into the layers before it (one normalisation for both tasks). keep: "
        "each task keeps its own norm for every unit, shared ones too; the merge weighs each "
        "task's error by its norm's scale. Only matters for models with batch norm.",
    )
    unavailable = {**{f"damping {k}": v for k, v in damp_refused.items()}}
    unavailable.update({f"batch norm {k}": v for k, v in norm_refused.items()})
    if unavailable:
        st.caption(
            f"Not available for {n_tasks} models (the engine's reasons): "
            + "; ".join(f"**{k}**: {v}" for k, v in unavailable.items())
        )
    st.button(
        "Apply (starts a new zip)",
        on_click=ui.callback("step", apply_settings),
        disabled=busy,
        key="step.apply_settings",
    )
    st.caption(
        f"Now: {s.method}, damping {s.damping}, batch norm {s.batch_norm}, "
        f"{s.calib_samples} calibration samples, "
        f"held-out {s.heldout_samples}, quick evaluation on up to {s.eval_samples} test samples."
    )
