"""Sharing: which neurons are shared in every layer, and how the models' neurons were matched
(pairs of A's and B's neurons; for three or more models, one neuron of every model per shared
unit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from explorer import figures, state, ui
from explorer.state import K
from explorer.tables import readable
from mtz_core.architecture import trace_model

ws = state.workspace()
st.title("Sharing")
ui.show_flashes("sharing", ws)
z = ui.require_zip(ws, "sharing")
loaded = ws.loaded
labels, letters = loaded.labels, loaded.letters
every = "one neuron of A and one of B" if not loaded.many else "one neuron of every model"
st.caption(
    f"Each shared neuron replaces {every}: its weights from the shared inputs are stored once. "
    "Unpaired neurons stay with their own task."
)

rows = z.sharing_rows()
ui.plot(figures.sharing_bars(rows), key="sharing.bars")
columns = ["layer", "status", *(f"n_{x}" for x in letters), "shared"]
columns += [f"{x}_only" for x in letters]
if loaded.residual:
    st.caption(
        "One row per zippable group: the layers writing one residual stream share its units "
        "(members), so they share the same neurons."
    )
    columns = ["layer", "members", *columns[1:]]
st.dataframe(readable(pd.DataFrame(rows)[columns]), hide_index=True)

records = z.records
if not records:
    st.info("No layer is zipped yet: zip one on **Step through** to see its matching here.")
    st.page_link("explorer/pages/step.py", label="Step through", icon=":material/stairs:")
    st.stop()

st.subheader(f"Matching of a {loaded.unit_name}")
what = "pairs" if not loaded.many else "shared units"
index = st.selectbox(
    f"Zipped {loaded.unit_name}",
    list(range(len(records))),
    format_func=lambda i: f"{records[i].name} ({records[i].k} {what})",
    key=K.SHARING_LAYER,
)
rec = records[index]
widths = list(z.layers[rec.index][1:])
if len(rec.members) > 1:
    st.caption(
        f"{rec.name}: one matching for its {len(rec.members)} layers ({', '.join(rec.members)}); "
        "a pair's cost and merge error are summed over them."
    )
c1, c2 = st.columns([3, 2])
with c1:
    ui.plot(
        figures.matching_figure(rec.pairs, rec.pair_costs, *widths),
        key="sharing.matching",
    )
with c2:
    table = pd.DataFrame({"pick": np.arange(1, rec.k + 1)})
    for t, x in enumerate(labels):
        table[f"{x} neuron"] = rec.pairs[:, t]
    table["cost d[i,j]" if not loaded.many else "cost (all stages)"] = rec.pair_costs
    table["merge error"] = rec.pair_errors
    if loaded.many:
        st.caption(
            f"{rec.k} shared units in the order they were chosen ({rec.method}, {rec.matching}): "
            "A's and B's neurons paired by cost, then each further model's neuron matched to "
            "the merged unit; the cost sums every stage's."
        )
    else:
        st.caption(f"{rec.k} pairs in the order they were chosen ({rec.method}, {rec.matching}).")
    st.dataframe(table, hide_index=True, height=420)

# -- first layer of image models: the incoming weights as pictures ---------------------------
first_layer = z.session.groups[0].members[0] == 0  # group 0 writes layer 0's units
if index == 0 and loaded.is_image and rec.k and first_layer:
    unit = "pair" if not loaded.many else "shared unit"
    st.subheader(f"Incoming weights of a {unit}")
    st.caption(
        "What the first layer's neurons look at: each model's neuron (from the original "
        "models) and the merged shared neuron (its weights now, after any retraining)."
    )
    key = ("first_weights", id(loaded))
    if key not in ws.cache:
        shape = tuple(loaded.task_a.input_shape)
        ws.cache[key] = [
            trace_model(net, shape, label=f"model {x}")[1][0][0].detach().cpu().numpy()
            for net, x in zip(loaded.nets, labels)
        ]
    originals = ws.cache[key]
    p = st.slider(
        f"{unit.capitalize()} (in the order chosen: cheapest first)",
        1,
        rec.k,
        1,
        key=K.SHARING_PAIR,
    )
    units = [int(v) for v in rec.pairs[p - 1]]
    layer0 = z.session.model.layers[0]
    merged = layer0.shared_weight[p - 1].detach().cpu().numpy()
    imgs = [w[i] for w, i in zip(originals, units)] + [merged]
    if layer0.spec.kind == "linear":
        shape = tuple(loaded.task_a.input_shape)
        imgs = [img.reshape(shape) for img in imgs]
    ui.plot(
        figures.weight_images(
            imgs,
            [f"{x} neuron {i}" for x, i in zip(labels, units)] + ["merged (shared)"],
            title=f"{rec.name}: {unit} {p} of {rec.k}, cost {rec.pair_costs[p - 1]:.4g}",
        ),
        key="sharing.weights",
    )
