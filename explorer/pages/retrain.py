"""Retrain: joint retraining of the zipped network on every task, in the background."""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from explorer import figures, state, ui
from explorer.state import K
from mtz_core.training import RETRAIN_LR

ws = state.workspace()
st.title("Retrain")
st.caption(
    "After a layer is zipped, a short joint retraining (loss A + loss B + …, one batch of each "
    "task per step, all parameters) recovers most of the accuracy the zip cost. It runs in the "
    "background: the progress and every task's loss curve appear at the top of every page, and "
    "Cancel puts the network back exactly as it was before the retraining."
)
ui.show_flashes("retrain", ws)
z = ui.require_zip(ws, "retrain")
labels = ws.loaded.labels
busy = ui.busy_note(ws)

cuda = torch.cuda.is_available()
devices = ["auto", "cpu", "cuda"]


def start() -> None:
    device = st.session_state.get(K.RT_DEVICE, "auto")
    ws.start_retrain(
        iterations=int(st.session_state.get(K.RT_ITS, 200)),
        lr=float(st.session_state.get(K.RT_LR, RETRAIN_LR)),
        batch_size=int(st.session_state.get(K.RT_BATCH, 32)),
        device=device,
    )


c1, c2, c3, c4 = st.columns(4)
c1.selectbox(
    "Device",
    devices,
    key=K.RT_DEVICE,
    format_func=lambda d: d if d != "cuda" or cuda else "cuda (no GPU here)",
    help="auto: a CUDA GPU when there is one, else the CPU.",
)
c2.number_input("Iterations", 1, 1_000_000, 200, step=50, key=K.RT_ITS)
c3.number_input("Learning rate", 1e-5, 10.0, RETRAIN_LR, format="%.4f", key=K.RT_LR)
c4.number_input("Batch size per task", 1, 4096, 32, key=K.RT_BATCH)

if not z.records:
    st.info("Zip a layer first (Step through): retraining recovers the accuracy a zip costs.")
b1, b2, _ = st.columns([2, 2, 4])
b1.button(
    "Start retraining",
    type="primary",
    on_click=ui.callback("retrain", start),
    disabled=busy or not z.records,
    key="retrain.start",
    width="stretch",
)
b2.button(
    "Cancel",
    on_click=ui.callback("retrain", lambda: ws.job.cancel()),
    disabled=not (ws.busy and ws.job.kind == "retrain"),
    key="retrain.cancel",
    width="stretch",
)

ui.task_metrics(ws, z, "Task {x} accuracy")
st.metric("Parameters saved", f"{z.saved_fraction():.1%}")

retrainings = [e for e in z.events if e["step"].startswith("retrain")]
if retrainings:
    st.subheader("Retraining so far")
    st.caption(
        "One row per retraining, oldest first; accuracy is each task's held-out test accuracy "
        "just before and just after that retraining. Undoing a layer removes its rows."
    )
    st.dataframe(
        pd.DataFrame(
            {
                "after layer": e["layer"],
                "iterations": e["iterations"],
                "learning rate": e["lr"],
                "batch per task": e["batch_size"],
                "device": e["device"],
                "seconds": round(e["seconds"], 1),
                **{
                    f"task {x} before → after": f"{ui.pct(e['before'][t])} → "
                    f"{ui.pct(e[f'acc_{x.lower()}'])}"
                    for t, x in enumerate(labels)
                },
            }
            for e in retrainings
        ),
        hide_index=True,
    )

last = ws.last_losses.get("retrain")
if last and not (ws.busy and ws.job.kind == "retrain"):
    st.subheader("Loss curves of the last retraining")
    ui.plot(figures.loss_curves(last), key="retrain.last_losses")
