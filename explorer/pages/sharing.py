"""Sharing: which neurons are shared in every layer, and how A's and B's neurons were matched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from explorer import figures, state, ui
from explorer.state import K
from mtz_core.architecture import trace_model

ws = state.workspace()
st.title("Sharing")
st.caption(
    "Each shared neuron replaces one neuron of A and one of B: its weights from the shared "
    "inputs are stored once. Unpaired neurons stay with their own task."
)
ui.show_flashes("sharing", ws)
z = ui.require_zip(ws, "sharing")
pair = ws.pair

rows = z.sharing_rows()
ui.plot(figures.sharing_bars(rows), key="sharing.bars")
columns = ["layer", "status", "n_a", "n_b", "shared", "a_only", "b_only"]
if pair.residual:
    st.caption(
        "One row per zippable group: the layers writing one residual stream share its units "
        "(members), so they share the same neurons."
    )
    columns = ["layer", "members", *columns[1:]]
st.dataframe(pd.DataFrame(rows)[columns], hide_index=True)

records = z.records
if not records:
    st.info("No layer is zipped yet: zip one on **Step through** to see its matching here.")
    st.page_link("explorer/pages/step.py", label="Step through", icon=":material/stairs:")
    st.stop()

st.subheader(f"Matching of a {pair.unit_name}")
index = st.selectbox(
    f"Zipped {pair.unit_name}",
    list(range(len(records))),
    format_func=lambda i: f"{records[i].name} ({records[i].k} pairs)",
    key=K.SHARING_LAYER,
)
rec = records[index]
if len(rec.members) > 1:
    st.caption(
        f"{rec.name}: one matching for its {len(rec.members)} layers ({', '.join(rec.members)}); "
        "a pair's cost and merge error are summed over them."
    )
c1, c2 = st.columns([3, 2])
with c1:
    ui.plot(
        figures.matching_figure(rec.pairs, rec.pair_costs, rec.n_a, rec.n_b),
        key="sharing.matching",
    )
with c2:
    table = pd.DataFrame(
        {
            "pick": np.arange(1, rec.k + 1),
            "A neuron": rec.pairs[:, 0],
            "B neuron": rec.pairs[:, 1],
            "cost d[i,j]": rec.pair_costs,
            "merge error": rec.pair_errors,
        }
    )
    st.caption(f"{rec.k} pairs in the order they were chosen ({rec.method}, {rec.matching}).")
    st.dataframe(table, hide_index=True, height=420)

# -- first layer of image models: the incoming weights as pictures ---------------------------
first_layer = z.session.groups[0].members[0] == 0  # group 0 writes layer 0's units
if index == 0 and pair.is_image and rec.k and first_layer:
    st.subheader("Incoming weights of a pair")
    st.caption(
        "What the first layer's neurons look at: A's neuron, B's neuron (from the original "
        "models) and the merged shared neuron (its weights now, after any retraining)."
    )
    key = ("first_weights", id(pair))
    if key not in ws.cache:
        shape = tuple(pair.task_a.input_shape)
        wa = trace_model(pair.model_a, shape, label="model A")[1][0][0]
        wb = trace_model(pair.model_b, shape, label="model B")[1][0][0]
        ws.cache[key] = (wa.detach().cpu().numpy(), wb.detach().cpu().numpy())
    wa, wb = ws.cache[key]
    p = st.slider("Pair (in the order chosen: cheapest first)", 1, rec.k, 1, key=K.SHARING_PAIR)
    i, j = (int(v) for v in rec.pairs[p - 1])
    layer0 = z.session.model.layers[0]
    merged = layer0.shared_weight[p - 1].detach().cpu().numpy()
    spec = layer0.spec
    if spec.kind == "linear":
        shape = tuple(pair.task_a.input_shape)
        imgs = [wa[i].reshape(shape), wb[j].reshape(shape), merged.reshape(shape)]
    else:
        imgs = [wa[i], wb[j], merged]
    ui.plot(
        figures.weight_images(
            imgs,
            [f"A neuron {i}", f"B neuron {j}", "merged (shared)"],
            title=f"{rec.name}: pair {p} of {rec.k}, cost {rec.pair_costs[p - 1]:.4g}",
        ),
        key="sharing.weights",
    )
