"""Load two models: a demo pair, two uploaded checkpoints, or a pair trained here."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer import pair as pairs
from explorer import resources, state, ui
from explorer.state import K
from explorer.tasks import load_npz_task
from mtz_core.demo import DEMOS

ws = state.workspace()
CARD = "(from the file's card)"

st.title("Load two models")
st.caption(
    "MTZ merges two trained networks of one architecture, each trained for its own task, into "
    "one network by sharing neurons layer by layer. Pick the two networks here."
)
ui.show_flashes("load", ws)


# ----------------------------------------------------------------------------- callbacks
def load_demo() -> None:
    name = state.widget(K.DEMO, state.DEFAULT_DEMO)
    ws.set_pair(resources.demo_pair(name))
    ws.flash("load", "success", f"Loaded the demo pair {name}.")


def _task(which: str):
    src = state.widget(K.TASKSRC_A if which == "a" else K.TASKSRC_B, "built-in task")
    if src == "built-in task":
        text = state.widget(K.TASK_A if which == "a" else K.TASK_B, "")
        return resources.builtin_task((text or "").strip())
    up = state.widget(K.NPZ_A if which == "a" else K.NPZ_B)
    if up is None:
        raise ValueError(f"upload a .npz data set for task {which.upper()} (arrays x and y)")
    return load_npz_task(up.name, up.getvalue())


def load_upload() -> None:
    ws.require_idle("load other models")
    loaded, entries, tasks = {}, {}, {}
    for which in ("a", "b"):
        up = state.widget(K.FILE_A if which == "a" else K.FILE_B)
        if up is None:
            raise ValueError(
                f"upload a checkpoint for model {which.upper()} (.pt, .pth or .safetensors)"
            )
        try:
            task = _task(which)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"task {which.upper()}: {ui.message(exc)}") from None
        arch = state.widget(K.ARCH_A if which == "a" else K.ARCH_B, CARD)
        opts_text = state.widget(K.OPTS_A if which == "a" else K.OPTS_B, "")
        try:
            options = pairs.parse_options(opts_text)
            model, entry = pairs.load_uploaded_model(
                up.name, up.getvalue(), None if arch == CARD else arch, options, task
            )
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"model {which.upper()} ({up.name}): {ui.message(exc)}") from None
        loaded[which], entries[which], tasks[which] = model, entry, task
    title = f"{entries['a']['name']} + {entries['b']['name']}"
    pair = pairs.summarize(title, entries, loaded["a"], loaded["b"], tasks["a"], tasks["b"])
    ws.set_pair(pair)
    for which in ("a", "b"):
        if entries[which].get("recognized"):
            ws.flash(
                "load",
                "info",
                f"Model {which.upper()} ({entries[which]['name']}) has no card: "
                f"{pairs.describe_model(entries[which])}.",
            )
    if pair.zippable:
        ws.flash("load", "success", "Loaded your two models; they can be zipped.")
    else:
        ws.flash("load", "warning", "Loaded your two models, but they cannot be zipped (below).")


def start_training() -> None:
    ws.require_idle("train a pair")
    model = state.widget(K.TRAIN_MODEL, "mlp")
    options = pairs.parse_options(state.widget(K.TRAIN_OPTS, ""))
    task_a = resources.builtin_task(state.widget(K.TRAIN_TASK_A, "digits:0-4").strip())
    task_b = resources.builtin_task(state.widget(K.TRAIN_TASK_B, "digits:5-9").strip())
    its = int(state.widget(K.TRAIN_ITS, 300))
    lr = float(state.widget(K.TRAIN_LR, 0.05))
    if its < 1:
        raise ValueError("training needs at least one iteration")
    if tuple(task_a.input_shape) != tuple(task_b.input_shape):
        raise ValueError(
            f"the tasks' inputs differ ({task_a.name}: {tuple(task_a.input_shape)}, "
            f"{task_b.name}: {tuple(task_b.input_shape)}); pick two tasks of one dataset"
        )
    pairs.create_model(model, tuple(task_a.input_shape), task_a.num_classes, **options)  # checks

    def work(job):
        def progress(done, total, text, losses):
            job.progress(done, total, text)
            if losses is not None:
                t, loss = losses
                job.add_losses(done, (loss, float("nan")) if t == 0 else (float("nan"), loss))

        return pairs.train_pair(
            model,
            options,
            task_a,
            task_b,
            iterations=its,
            lr=lr,
            progress=progress,
            cancel=job.token,
        )

    def apply(job):
        ws.set_pair(job.result)
        a, b = job.result.accuracy
        job.message = f"Trained the pair: task A {ui.pct(a)}, task B {ui.pct(b)} test accuracy"

    ws.start_job("train", f"Training two {model} models", work, apply)


# ---------------------------------------------------------------------------------- input
source = st.segmented_control(
    "Where do the models come from?",
    ["Demo pair", "Upload checkpoints", "Train in the app"],
    default="Demo pair",
    key=K.SOURCE,
    required=True,
)
busy = ws.busy

if source == "Demo pair":
    c1, c2 = st.columns([3, 2])
    with c1:
        st.selectbox(
            "Demo pair",
            list(DEMOS),
            format_func=lambda n: f"{n} — {DEMOS[n].title}",
            key=K.DEMO,
        )
        chosen = state.widget(K.DEMO, state.DEFAULT_DEMO)
        st.caption(DEMOS[chosen].description + " Trained offline, shipped with the app.")
    with c2:
        st.write("")
        st.button(
            "Load demo pair",
            type="primary",
            on_click=ui.callback("load", load_demo),
            disabled=busy,
            key="load.demo_button",
        )

elif source == "Upload checkpoints":
    st.caption(
        "Two checkpoints of one architecture (`.pt`/`.pth` state dicts, or `.safetensors`), "
        "each with its task: a built-in task text or your own labelled `.npz` (arrays `x`, `y`; "
        "optional `x_test`, `y_test`; inputs already normalised as for training). A bare "
        "torchvision ResNet (18/34/50) or VGG state dict needs no architecture: it is "
        "recognised by its keys and built for the task's input shape."
    )
    cols = st.columns(2)
    arch_choices = [CARD, *pairs.list_models()]
    for col, which, defaults in zip(cols, ("a", "b"), ("digits:0-4", "digits:5-9")):
        up = which.upper()
        with col:
            st.markdown(f"**Model {up}**")
            st.file_uploader(
                f"Checkpoint {up}",
                type=["pt", "pth", "safetensors"],
                key=K.FILE_A if which == "a" else K.FILE_B,
            )
            st.selectbox(
                f"Architecture {up}",
                arch_choices,
                key=K.ARCH_A if which == "a" else K.ARCH_B,
                help="A registry model, or what the checkpoint's own card says (files saved "
                "by this project carry one); without a card, a torchvision ResNet or VGG is "
                "recognised by its keys.",
            )
            st.text_input(
                f"Options {up} (JSON)",
                key=K.OPTS_A if which == "a" else K.OPTS_B,
                placeholder='{"widths": [300, 100]}',
            )
            src = st.radio(
                f"Task {up}",
                ["built-in task", "my .npz"],
                horizontal=True,
                key=K.TASKSRC_A if which == "a" else K.TASKSRC_B,
            )
            if src == "built-in task":
                st.text_input(
                    f"Task text {up}",
                    value=defaults,
                    key=K.TASK_A if which == "a" else K.TASK_B,
                    help="dataset[:classes], e.g. digits:0-4, digits:parity, moons, "
                    "mnist:5-9 (MNIST needs local files)",
                )
            else:
                st.file_uploader(
                    f"Data set {up} (.npz)", type=["npz"], key=K.NPZ_A if which == "a" else K.NPZ_B
                )
    st.button(
        "Load these two models",
        type="primary",
        on_click=ui.callback("load", load_upload),
        disabled=busy,
        key="load.upload_button",
    )

else:
    st.caption(
        "Train two networks of one architecture, one per task, on a built-in dataset (runs in "
        "the background; the rest of the app stays usable)."
    )
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Architecture", ["mlp", "lenet300", "lenet5"], key=K.TRAIN_MODEL)
    c1.text_input("Options (JSON)", key=K.TRAIN_OPTS, placeholder='{"widths": [64, 32]}')
    c2.text_input("Task A", value="digits:0-4", key=K.TRAIN_TASK_A)
    c2.text_input("Task B", value="digits:5-9", key=K.TRAIN_TASK_B)
    c3.number_input("Iterations per model", 1, 100_000, 300, step=50, key=K.TRAIN_ITS)
    c3.number_input("Learning rate", 1e-5, 10.0, 0.05, format="%.4f", key=K.TRAIN_LR)
    st.button(
        "Train the pair",
        type="primary",
        on_click=ui.callback("load", start_training),
        disabled=busy,
        key="load.train_button",
    )

# -------------------------------------------------------------------------------- summary
st.divider()
pair = ws.pair
if pair is None:
    st.info("No pair is loaded yet.")
    st.stop()

st.subheader(pair.title)
cols = st.columns(2)
for col, which, task, acc, params, entry in (
    (cols[0], "A", pair.task_a, pair.accuracy[0], pair.params[0], pair.models["a"]),
    (cols[1], "B", pair.task_b, pair.accuracy[1], pair.params[1], pair.models["b"]),
):
    with col, st.container(border=True):
        st.markdown(
            f"**Model {which}** · task `{task.name}` · {entry.get('source')}: `{entry.get('name')}`"
        )
        m1, m2 = st.columns(2)
        m1.metric(f"Test accuracy {which}", ui.pct(acc))
        m2.metric(f"Parameters {which}", f"{params:,}")
        st.caption(f"What it is: {pairs.describe_model(entry)}")
        if pair.residual:
            shape = f"{len(pair.layers)} weight layers in {len(pair.groups)} zippable groups"
        else:
            widths = " → ".join(str(r[f"width {which}"]) for r in pair.layers)
            shape = f"{len(pair.layers)} weight layers, widths {widths}"
        st.caption(
            f"{shape}; {task.num_classes} classes; input {tuple(task.input_shape)}; "
            f"{task.size('calib')} calibration / {task.size('test')} test samples"
        )

if pair.residual and pair.groups:
    st.markdown(
        "**Zippable groups**, in the order they are zipped. The layers whose outputs are added "
        "into one residual stream write the same units, so they share one matching: the group "
        "is named after its first layer and how many more it has, e.g. `conv1 (+3)`."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "group": g["group"],
                    "layers": len(g["members"]),
                    "members": ", ".join(g["members"]),
                    "width A": g["width A"],
                    "width B": g["width B"],
                    "read by": ", ".join(g["readers"]),
                }
                for g in pair.groups
            ]
        ),
        hide_index=True,
        key="load.groups",
    )
if pair.layers:
    table = pd.DataFrame(pair.layers)
    table["role"] = [
        "head (per task)"
        if r["head"]
        else ("hidden (zippable)" if not pair.residual else f"in group {r['group']}")
        for r in pair.layers
    ]
    with st.expander("Weight layers", expanded=not pair.residual):
        st.dataframe(
            table[
                ["layer", "kind", "role", "inputs", "width A", "width B", "params A", "params B"]
            ],
            hide_index=True,
            key="load.layers",
        )
for note in pair.notes:
    st.warning(note)
if pair.zippable:
    n = len(pair.groups)
    names = ", ".join(g["group"] for g in pair.groups)
    if pair.residual:
        st.success(
            f"These two can be zipped: {n} zippable group{'s' * (n != 1)} ({names}); each "
            "step zips one group, all its member layers with one matching. The heads stay per "
            "task."
        )
    else:
        st.success(
            f"These two can be zipped: {n} hidden layer{'s' * (n != 1)} ({names}); the heads "
            "stay per task."
        )
else:
    st.error(f"These models cannot be zipped: {pair.reason}")
