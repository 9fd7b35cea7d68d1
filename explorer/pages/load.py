"""Load the models: a demo (a pair, or a set of three or more), two or more uploaded
checkpoints (each with its task), or a pair trained here."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer import loaded as loading
from explorer import resources, state, ui
from explorer.state import K, upload_key
from explorer.tasks import load_npz_task
from mtz_core.demo import DEMOS
from mtz_core.training import TASK_LETTERS

ws = state.workspace()
CARD = "(from the file's card)"
#: the upload form's default task text per model (others start empty)
DEFAULT_TASKS = {"a": "digits:0-4", "b": "digits:5-9"}
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def number(n: int) -> str:
    return NUMBERS.get(n, str(n))


n_loaded = ws.loaded.n_tasks if ws.loaded is not None else 2
st.title(f"Load {number(n_loaded)} models")
st.caption(
    "MTZ merges networks of one architecture, each trained for its own task, into one network "
    "by sharing neurons layer by layer: two models, or three and more (a shared unit is then "
    "shared by all of them). Pick the networks here."
)
ui.show_flashes("load", ws)


# ----------------------------------------------------------------------------- callbacks
def load_demo() -> None:
    name = state.widget(K.DEMO, state.DEFAULT_DEMO)
    models = resources.demo_models(name)
    ws.set_models(models)
    what = "pair" if models.n_tasks == 2 else f"set ({models.n_tasks} models)"
    ws.flash("load", "success", f"Loaded the demo {what} {name}.")


def upload_count() -> int:
    return int(state.widget(K.UPLOADS, 2))


def add_model() -> None:
    n = upload_count()
    if n >= loading.MAX_MODELS:
        raise ValueError(f"the engine zips at most {loading.MAX_MODELS} models")
    st.session_state[K.UPLOADS] = n + 1


def remove_model() -> None:
    st.session_state[K.UPLOADS] = max(2, upload_count() - 1)


def _task(which: str):
    src = state.widget(upload_key("tasksrc", which), "built-in task")
    if src == "built-in task":
        text = state.widget(upload_key("task", which), DEFAULT_TASKS.get(which, ""))
        if not (text or "").strip():
            raise ValueError(
                f"give task {which.upper()}'s text (e.g. digits:7-9) or upload its .npz"
            )
        return resources.builtin_task((text or "").strip())
    up = state.widget(upload_key("npz", which))
    if up is None:
        raise ValueError(f"upload a .npz data set for task {which.upper()} (arrays x and y)")
    return load_npz_task(up.name, up.getvalue())


def load_upload() -> None:
    ws.require_idle("load other models")
    letters = TASK_LETTERS[: upload_count()]
    nets, entries, tasks = [], {}, []
    for which in letters:
        up = state.widget(upload_key("file", which))
        if up is None:
            raise ValueError(
                f"upload a checkpoint for model {which.upper()} (.pt, .pth or .safetensors)"
            )
        try:
            task = _task(which)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"task {which.upper()}: {ui.message(exc)}") from None
        arch = state.widget(upload_key("arch", which), CARD)
        opts_text = state.widget(upload_key("opts", which), "")
        try:
            options = loading.parse_options(opts_text)
            model, entry = loading.load_uploaded_model(
                up.name, up.getvalue(), None if arch == CARD else arch, options, task
            )
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"model {which.upper()} ({up.name}): {ui.message(exc)}") from None
        nets.append(model)
        entries[which] = entry
        tasks.append(task)
    title = " + ".join(entries[x]["name"] for x in letters)
    models = loading.summarize_models(title, entries, nets, tasks)
    ws.set_models(models)
    for which in letters:
        if entries[which].get("recognized"):
            ws.flash(
                "load",
                "info",
                f"Model {which.upper()} ({entries[which]['name']}) has no card: "
                f"{loading.describe_model(entries[which])}.",
            )
    n = number(len(letters))
    if models.zippable:
        ws.flash("load", "success", f"Loaded your {n} models; they can be zipped.")
    else:
        ws.flash("load", "warning", f"Loaded your {n} models, but they cannot be zipped (below).")


def start_training() -> None:
    ws.require_idle("train a pair")
    model = state.widget(K.TRAIN_MODEL, "mlp")
    options = loading.parse_options(state.widget(K.TRAIN_OPTS, ""))
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
    loading.create_model(model, tuple(task_a.input_shape), task_a.num_classes, **options)  # checks

    def work(job):
        def progress(done, total, text, losses):
            job.progress(done, total, text)
            if losses is not None:
                t, loss = losses
                job.add_losses(done, (loss, float("nan")) if t == 0 else (float("nan"), loss))

        return loading.train_pair(
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
        ws.set_models(job.result)
        a, b = job.result.accuracy
        job.message = f"Trained the pair: task A {ui.pct(a)}, task B {ui.pct(b)} test accuracy"

    ws.start_job("train", f"Training two {model} models", work, apply)


# ---------------------------------------------------------------------------------- input
source = st.segmented_control(
    "Where do the models come from?",
    ["Demo", "Upload checkpoints", "Train in the app"],
    default="Demo",
    key=K.SOURCE,
    required=True,
)
busy = ws.busy


def demo_label(name: str) -> str:
    spec = DEMOS[name]
    n = len(spec.tasks)
    return f"{name} — {spec.title}" + (f" ({n} models)" if n > 2 else "")


if source == "Demo":
    c1, c2 = st.columns([3, 2])
    with c1:
        st.selectbox("Demo", list(DEMOS), format_func=demo_label, key=K.DEMO)
        chosen = state.widget(K.DEMO, state.DEFAULT_DEMO)
        st.caption(DEMOS[chosen].description + " Trained offline, shipped with the app.")
    with c2:
        st.write("")
        st.button(
            "Load this demo",
            type="primary",
            on_click=ui.callback("load", load_demo),
            disabled=busy,
            key="load.demo_button",
        )

elif source == "Upload checkpoints":
    count = upload_count()
    st.caption(
        f"Two or more checkpoints of one architecture (up to {loading.MAX_MODELS}; "
        "`.pt`/`.pth` state dicts, or `.safetensors`), each with its task: a built-in task "
        "text or your own labelled `.npz` (arrays `x`, `y`; optional `x_test`, `y_test`; inputs "
        "already normalised as for training). A bare torchvision ResNet (18/34/50) or VGG state "
        "dict needs no architecture: it is recognised by its keys and built for the task's "
        "input shape."
    )
    arch_choices = [CARD, *loading.list_models()]
    per_row = 2 if count == 2 else 3
    letters = TASK_LETTERS[:count]
    for start in range(0, count, per_row):
        cols = st.columns(per_row)
        for col, which in zip(cols, letters[start : start + per_row]):
            up = which.upper()
            with col:
                st.markdown(f"**Model {up}**")
                st.file_uploader(
                    f"Checkpoint {up}",
                    type=["pt", "pth", "safetensors"],
                    key=upload_key("file", which),
                )
                st.selectbox(
                    f"Architecture {up}",
                    arch_choices,
                    key=upload_key("arch", which),
                    help="A registry model, or what the checkpoint's own card says (files "
                    "saved by this project carry one); without a card, a torchvision ResNet or "
                    "VGG is recognised by its keys.",
                )
                st.text_input(
                    f"Options {up} (JSON)",
                    key=upload_key("opts", which),
                    placeholder='{"widths": [300, 100]}',
                )
                src = st.radio(
                    f"Task {up}",
                    ["built-in task", "my .npz"],
                    horizontal=True,
                    key=upload_key("tasksrc", which),
                )
                if src == "built-in task":
                    st.text_input(
                        f"Task text {up}",
                        value=DEFAULT_TASKS.get(which, ""),
                        key=upload_key("task", which),
                        placeholder="e.g. digits:7-9",
                        help="dataset[:classes], e.g. digits:0-4, digits:parity, moons, "
                        "mnist:5-9 (MNIST needs local files)",
                    )
                else:
                    st.file_uploader(
                        f"Data set {up} (.npz)", type=["npz"], key=upload_key("npz", which)
                    )
    c1, c2, c3 = st.columns([3, 2, 2])
    c1.button(
        f"Load these {number(count)} models",
        type="primary",
        on_click=ui.callback("load", load_upload),
        disabled=busy,
        key="load.upload_button",
    )
    c2.button(
        "Add a model",
        icon=":material/add:",
        on_click=ui.callback("load", add_model),
        disabled=count >= loading.MAX_MODELS,
        key="load.add_model",
        help="Zip three or more models: each shared unit is then shared by all of them.",
    )
    c3.button(
        f"Remove model {letters[-1].upper()}",
        icon=":material/remove:",
        on_click=ui.callback("load", remove_model),
        disabled=count <= 2,
        key="load.remove_model",
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
loaded = ws.loaded
if loaded is None:
    st.info("No models are loaded yet.")
    st.stop()

st.subheader(loaded.title)
labels = loaded.labels
per_row = 2 if loaded.n_tasks == 2 else 3
for start in range(0, loaded.n_tasks, per_row):
    cols = st.columns(per_row)
    for col, t in zip(cols, range(start, min(start + per_row, loaded.n_tasks))):
        which, task = labels[t], loaded.tasks[t]
        entry = loaded.models.get(loaded.letters[t], {})
        with col, st.container(border=True):
            st.markdown(
                f"**Model {which}** · task `{task.name}` · {entry.get('source')}: "
                f"`{entry.get('name')}`"
            )
            m1, m2 = st.columns(2)
            m1.metric(f"Test accuracy {which}", ui.pct(loaded.accuracy[t]))
            m2.metric(f"Parameters {which}", f"{loaded.params[t]:,}")
            st.caption(f"What it is: {loading.describe_model(entry)}")
            if loaded.residual:
                shape = (
                    f"{len(loaded.layers)} weight layers in {len(loaded.groups)} zippable groups"
                )
            else:
                widths = " → ".join(str(r[f"width {which}"]) for r in loaded.layers)
                shape = f"{len(loaded.layers)} weight layers, widths {widths}"
            st.caption(
                f"{shape}; {task.num_classes} classes; input {tuple(task.input_shape)}; "
                f"{task.size('calib')} calibration / {task.size('test')} test samples"
            )

if loaded.residual and loaded.groups:
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
                    **{f"width {x}": g[f"width {x}"] for x in labels},
                    "read by": ", ".join(g["readers"]),
                }
                for g in loaded.groups
            ]
        ),
        hide_index=True,
        key="load.groups",
    )
if loaded.layers:
    table = pd.DataFrame(loaded.layers)
    table["role"] = [
        "head (per task)"
        if r["head"]
        else ("hidden (zippable)" if not loaded.residual else f"in group {r['group']}")
        for r in loaded.layers
    ]
    with st.expander("Weight layers", expanded=not loaded.residual):
        columns = ["layer", "kind", "role", "inputs"]
        columns += [f"width {x}" for x in labels] + [f"params {x}" for x in labels]
        st.dataframe(table[columns], hide_index=True, key="load.layers")
for note in loaded.notes:
    st.warning(note)
if loaded.zippable:
    n = len(loaded.groups)
    names = ", ".join(g["group"] for g in loaded.groups)
    shared_by = (
        f" Every shared unit is shared by all {loaded.n_tasks} models." if loaded.many else ""
    )
    if loaded.residual:
        what = (
            f"{n} zippable group{'s' * (n != 1)} ({names}); each step zips one group, all its "
            "member layers with one matching. The heads stay per task."
        )
    else:
        what = f"{n} hidden layer{'s' * (n != 1)} ({names}); the heads stay per task."
    st.success(f"These {number(loaded.n_tasks)} can be zipped: {what}{shared_by}")
else:
    st.error(f"These models cannot be zipped: {loaded.reason}")
