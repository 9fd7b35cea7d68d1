"""Learn: the method explained on the loaded models' own numbers (the formulas on the first
two; how three or more are zipped after them), and a 2-D worked example."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer import figures, guide, resources, state, ui
from explorer.learn import boundary_stages, pair_numbers
from explorer.state import K
from explorer.workspace import joined

ws = state.workspace()
st.title("How Multi-Task Zipping works")
ui.show_flashes("learn", ws)
pair = ui.require_models(ws)
if not pair.zippable:
    # numbers of models that cannot be zipped would be made up (their layers do not pair up)
    st.warning(
        f"Your models cannot be zipped ({pair.reason}), so this page explains the method on "
        "the built-in teaching pair **moons-circles** (two 2 → 16 → 16 → 2 MLPs) instead of "
        "on yours. Load a zippable pair on **Load models** to see its own numbers here."
    )
    pair = resources.demo_pair("moons-circles")
n_tasks = pair.n_tasks

z = None
view = None
if pair is ws.loaded:
    z = ui.require_zip(ws, "learn")
    index = 0 if z.records else z.next_index
    if index is not None:
        try:
            view = z.cost_view(index, ws.estimates, compute=not ws.busy)
        except Exception as exc:  # noqa: BLE001
            st.warning(f"The costs could not be computed: {ui.message(exc)}")
nums = pair_numbers(pair, z, view)
first = nums.layers[0]

if not pair.many:
    st.markdown(
        f"""
Two networks of one architecture were trained for their own tasks: **A** on
`{pair.task_a.name}` ({nums.params_a:,} parameters) and **B** on `{pair.task_b.name}`
({nums.params_b:,} parameters). MTZ merges them into one network, **one hidden layer at a time,
bottom-up**: some neurons of A are paired with neurons of B, and each pair becomes one *shared
neuron* whose incoming weights are stored once. The heads stay per task.
"""
    )
else:
    each = ", ".join(
        f"**{x}** on `{t.name}` ({p:,} parameters)"
        for x, t, p in zip(pair.labels, pair.tasks, pair.params)
    )
    st.markdown(
        f"{n_tasks} networks of one architecture were trained for their own tasks: {each}. MTZ "
        "merges them into one network, **one hidden layer at a time, bottom-up**: each *shared "
        f"neuron* replaces one neuron of every model ({joined(pair.labels)}) and stores its "
        "incoming weights once. The heads stay per task."
    )
    st.info(
        f"The formulas below are written for two models, A and B (here the first two of "
        f"{n_tasks}); section 6 shows how the others are zipped after them."
    )
st.dataframe(
    pd.DataFrame(nums.layers).rename(
        columns={
            "name": "layer",
            "n_a": "neurons A",
            "n_b": "neurons B",
            "dim": "Hessian size D",
            "per_unit": "weights per input",
        }
    )[["layer", "kind", "neurons A", "neurons B", "inputs", "weights per input", "Hessian size D"]],
    hide_index=True,
)

st.subheader("1 · The layer's Hessian")
st.markdown(
    "A layer computes y = W x + b. Append a constant 1 to the input, x̄ = [x; 1]; the layer error "
    "E = 1/(2n) Σ‖ŷ − y‖² over n samples is exactly quadratic in a change of one neuron's incoming "
    "weights, with the same Hessian for every neuron of the layer, computed on the task's own data:"
)
st.latex(r"H_X = \frac{1}{n}\sum_{\text{samples}} \bar{x}\,\bar{x}^{\top}, \qquad X \in \{A, B\}")
where = (
    f"**{first['first_layer']}** (the first layer of the group {first['name']})"
    if first["members"] > 1
    else f"**{first['name']}**"
)
st.markdown(
    f"For {where} of this pair, x̄ has {first['inputs']}"
    + (f" × {first['per_unit']}" if first["per_unit"] > 1 else "")
    + f" + 1 = **{first['dim']}** entries, so H_A and H_B are {first['dim']} × {first['dim']}, "
    f"averaged over n = {nums.calib_a:,} (A) and {nums.calib_b:,} (B) calibration samples. "
    f"Damping λ = {nums.damping} · trace(H)/D is added to keep them invertible."
)

st.subheader("2 · The cost of sharing two neurons")
st.latex(
    r"d[i,j] = \tfrac{1}{2}\,(\bar w_{A,i} - \bar w_{B,j})^{\top}\,\hat H\,"
    r"(\bar w_{A,i} - \bar w_{B,j}), \qquad \hat H = (H_A^{-1} + H_B^{-1})^{-1}"
)
if nums.cheapest is not None:
    i, j, d = nums.cheapest
    di, dj, dd = nums.dearest
    st.markdown(
        f"In **{nums.example_layer}** of this pair there are {nums.n_pairs:,} candidate pairs. "
        f"The cheapest is neuron **{i}** of A with neuron **{j}** of B: "
        f"**d[{i}, {j}] = {d:.4g}**; the median pair costs {nums.median:.4g} and the dearest "
        f"(A {di}, B {dj}) {dd:.4g}. Greedy matching takes the cheapest pairs first, never "
        "reusing a neuron (see **Costs**)."
    )
st.subheader("3 · The merged weights")
st.latex(r"\tilde w = (H_A + H_B)^{-1}\,(H_A\,\bar w_{A,i} + H_B\,\bar w_{B,j})")
st.markdown(
    "A Hessian-weighted average: in directions task A's data excites strongly, w̃ stays close to "
    "A's neuron, and likewise for B. d[i, j] is exactly how much E_A + E_B grows with w̃ on the "
    "Hessian data; a plain average would cost more. The shared neuron also keeps each task's "
    "weights from its own (unshared) inputs of the layer below."
)
st.subheader("4 · What is saved")
st.latex(r"\text{saved}_l = k_l\,(s_{l-1}\,K + 1)")
k0, s0, K0, sv0 = nums.first_saving
copies = (
    ""
    if not pair.many
    else f" per model beyond the first, so {(n_tasks - 1) * sv0:,} for the {n_tasks} models"
)
st.markdown(
    f"k_l shared neurons each store their weights from the s_(l−1) shared inputs (K weights per "
    f"input: kernel or flatten positions) and their bias once instead of twice. For this pair, "
    f"sharing all {k0} neurons of {where} (s = {s0} inputs, K = {K0}) saves "
    f"{k0} · ({s0} · {K0} + 1) = **{sv0:,}** parameters{copies}"
    + (
        f" ({nums.first_group_saving:,} with the other layers of its group: their biases, and "
        "their weights from inputs once those are shared)"
        if first["members"] > 1
        else ""
    )
    + "; sharing every hidden layer fully saves "
    f"{sum(nums.full_saving):,} of {nums.params_total:,} "
    f"(**{sum(nums.full_saving) / nums.params_total:.1%}**): always less than "
    + ("half" if not pair.many else f"{n_tasks - 1}/{n_tasks}")
    + ", since the heads and the per-task inputs stay."
)
st.subheader("5 · Retraining")
st.markdown(
    "After each layer, a short joint retraining on "
    + ("both tasks (loss A + loss B)" if not pair.many else f"all {n_tasks} tasks (loss A + B + …)")
    + " recovers accuracy; the next layer's Hessians are computed after it. Try it on **Step "
    "through** and **Retrain**."
)
if pair.many:
    st.subheader(f"6 · The other {n_tasks - 2} model{'s' * (n_tasks > 3)}")
    st.markdown(
        "A step first pairs A's and B's neurons as above. Each merged neuron then behaves like "
        "one model whose Hessian is H_A + H_B, exactly, so every further model is matched to "
        "the merged neurons with that sum in place of H_A (greedy, on their cost matrix), and "
        "the merge goes on: a shared neuron ends as the T-way Hessian-weighted average"
    )
    st.latex(r"\tilde w = \Big(\sum_t H_t\Big)^{-1} \sum_t H_t\,\bar w_t")
    st.markdown(
        "**Costs** shows every pair of models' cost matrix and each further model against the "
        "zipped network. The engine's preview of every share covers two models, so with more "
        "the predicted error is computed for the share you set."
    )

# -------------------------------------------------------------------- the 2-D worked example
st.divider()
st.subheader("Worked example: moons and circles")
st.caption(
    "Two small MLPs (2 → 16 → 16 → 2) on 2-D points: one separates two moons, the other two "
    "circles. The shading is each network's probability of class 1, the black line its decision "
    "boundary, before zipping and after zipping each hidden layer."
)
if pair.many or tuple(pair.task_a.input_shape) != (2,):
    st.caption(
        f"This example is the built-in teaching pair, not your {pair.kind}: decision boundaries "
        "can be drawn for two tasks on 2-D points only"
        + (
            f", and your models read inputs of shape {tuple(pair.task_a.input_shape)}."
            if tuple(pair.task_a.input_shape) != (2,)
            else "."
        )
    )
c1, c2 = st.columns(2, gap="large")  # apart: two sliders, not one range slider
# their first values: state.WIDGET_DEFAULTS (kept when the page is left)
share = c1.slider("Share of each layer", 0.0, 1.0, step=0.125, key=K.LEARN_SHARE)
its = c2.select_slider(
    "Retraining after each layer (iterations)", [0, 25, 50, 100, 200], key=K.LEARN_ITS
)
key = ("moons", float(share), int(its))
if key not in ws.learn:
    try:
        with st.spinner("Zipping the teaching pair…"):
            ws.learn[key] = boundary_stages(resources.demo_pair("moons-circles"), share, its)
    except Exception as exc:  # noqa: BLE001
        st.error(f"The worked example could not run: {ui.message(exc)}")
        st.stop()
stages = ws.learn[key]
ui.plot(
    figures.decision_boundaries(
        stages.xs,
        stages.ys,
        stages.probs,
        stages.titles,
        ["task A: moons", "task B: circles"],
        stages.points,
    ),
    key="learn.boundaries",
)
st.dataframe(
    pd.DataFrame(
        {
            "stage": stages.titles,
            "accuracy A (moons)": [ui.pct(a) for a, _ in stages.accuracy],
            "accuracy B (circles)": [ui.pct(b) for _, b in stages.accuracy],
            "predicted layer error": ["–", *(f"{e:.4g}" for e in stages.predicted)],
            "of the layer's output energy": [
                "–",
                *(
                    guide.energy_percent(e, w) or "–"
                    for e, w in zip(stages.predicted, stages.energy or [None] * 99)
                ),
            ],
        }
    ),
    hide_index=True,
)
