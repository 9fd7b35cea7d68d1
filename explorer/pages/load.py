"""Load the models: a demo (a pair, or a set of three or more), two or more uploaded
checkpoints (each with its task), or a pair trained here."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer import autosave, guide, resources, screen_errors, state, ui
from explorer import loaded as loading
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


# Above the title: the offer is there from the first draw, and dismissing it moves nothing
# the user was working on (the upload form stays where it was).
if ws.restorable is not None and not ws.busy:  # this tab's work from before a reload
    with st.container(border=True, key="load.restore_box"):
        note = autosave.files_note(ws.restorable)
        st.info(
            f"Your last session can be restored: {autosave.describe(ws.restorable)}."
            + (f" {note}" if note else "")
        )
        c1, c2 = st.columns(2)
        c1.button(
            "Restore last session",
            type="primary",
            icon=":material/restore:",
            on_click=ui.callback("load", lambda: autosave.restore(ws)),
            key="load.restore",
        )
        c2.button(
            "Start afresh", on_click=lambda: setattr(ws, "restorable", None), key="load.fresh"
        )
n_loaded = ws.loaded.n_tasks if ws.loaded is not None else 2
st.title(f"Load {number(n_loaded)} models")
st.caption(
    "MTZ merges networks of one architecture, each trained for its own task, into one network "
    "by sharing neurons layer by layer: two models, or three and more (a shared unit is then "
    "shared by all of them). Pick the networks here."
)
guide.start_here()  # what MTZ does, then Costs → Step through → Trade-off
#: a load that failed this run: the summary below is of the models still loaded, not the new ones
load_failed = any(f.area == "load" and f.level == "error" for f in ws.flashes)
ui.show_flashes("load", ws)


# ----------------------------------------------------------------------------- callbacks
def load_demo() -> None:
    name = state.widget(K.DEMO, state.DEFAULT_DEMO)
    models = resources.demo_models(name)

    def go() -> None:
        ws.set_models(models)
        what = "pair" if models.n_tasks == 2 else f"set ({models.n_tasks} models)"
        ws.flash("load", "success", f"Loaded the demo {what} {name}.")

    ws.ask_before_discarding(f"load the demo {name}", go)


def kept_upload(key: str):
    """The file in upload widget `key`, or the one chosen there before the page was left:
    Streamlit's uploader forgets its file when its page is not drawn, and its value cannot be
    set back, so the workspace keeps the file (the same object: no copy of its bytes)."""
    up = st.session_state.get(key)
    if up is not None:
        ws.uploads[key] = up
        return up
    return ws.uploads.get(key)


def show_kept(key: str) -> None:
    """Under an empty uploader: the file kept from before, and a way to forget it."""
    up = kept_upload(key)
    if up is not None and st.session_state.get(key) is None:
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.caption(f"Kept from before: `{up.name}` (choose a file to replace it)")
        c2.button("Forget", key=f"{key}.forget", on_click=lambda: ws.uploads.pop(key, None))


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
    up = kept_upload(upload_key("npz", which))
    if up is None:
        raise ValueError(f"upload a .npz data set for task {which.upper()} (arrays x and y)")
    return load_npz_task(up.name, up.getvalue())


def load_upload() -> None:
    ws.require_idle("load other models")
    letters = TASK_LETTERS[: upload_count()]
    nets, entries, tasks, files = [], {}, [], {}
    for which in letters:
        up = kept_upload(upload_key("file", which))
        if up is None:
            raise ValueError(
                f"upload a checkpoint for model {which.upper()} (.pt, .pth or .safetensors)"
            )
        try:
            task = _task(which)
        except Exception as exc:  # noqa: BLE001
            x = which.upper()
            builtin = state.widget(upload_key("tasksrc", which), "built-in task") == "built-in task"
            control = f"**Task text {x}**" if builtin else f"**Data set {x} (.npz)**"
            raise ValueError(f"task {x} ({control}): {ui.message(exc)}") from None
        arch = state.widget(upload_key("arch", which), CARD)
        opts_text = state.widget(upload_key("opts", which), "")
        try:
            options = loading.parse_options(opts_text)
            model, entry = loading.load_uploaded_model(
                up.name, up.getvalue(), None if arch == CARD else arch, options, task
            )
        except Exception as exc:  # noqa: BLE001
            said = screen_errors.for_upload(ui.message(exc), which)
            raise ValueError(f"model {which.upper()} ({up.name}): {said}") from None
        nets.append(model)
        entries[which] = entry
        tasks.append(task)
        npz = None
        if state.widget(upload_key("tasksrc", which), "built-in task") != "built-in task":
            npz = kept_upload(upload_key("npz", which))
        files[which] = {"model": up, "npz": npz}
    title = " + ".join(entries[x]["name"] for x in letters)
    models = loading.summarize_models(title, entries, nets, tasks)
    autosave.keep_files(models, files)  # a reload can restore them (when small enough)

    def go() -> None:
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
            ws.flash(
                "load", "warning", f"Loaded your {n} models, but they cannot be zipped (below)."
            )

    ws.ask_before_discarding(f"load {title}", go)


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

    ws.ask_before_discarding(
        f"train two {model} models",
        lambda: ws.start_job("train", f"Training two {model} models", work, apply),
    )


# ---------------------------------------------------------------------------------- input
source = st.segmented_control(
    "Where do the models come from?",
    ["Demo", "Upload checkpoints", "Train in the app"],
    key=K.SOURCE,  # starts at "Demo" (state.WIDGET_DEFAULTS, kept across pages)
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
                show_kept(upload_key("file", which))
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
                        key=upload_key("task", which),  # A and B start with a digits task
                        placeholder="e.g. digits:7-9",
                        help="dataset[:classes], e.g. digits:0-4, digits:parity, moons, "
                        "mnist:5-9 (MNIST needs local files)",
                    )
                else:
                    st.file_uploader(
                        f"Data set {up} (.npz)", type=["npz"], key=upload_key("npz", which)
                    )
                    show_kept(upload_key("npz", which))
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
    # their first values: state.WIDGET_DEFAULTS (kept across pages)
    c2.text_input("Task A", key=K.TRAIN_TASK_A)
    c2.text_input("Task B", key=K.TRAIN_TASK_B)
    c3.number_input("Iterations per model", 1, 100_000, step=50, key=K.TRAIN_ITS)
    c3.number_input("Learning rate", 1e-5, 10.0, format="%.4f", key=K.TRAIN_LR)
    st.button(
        "Train the pair",
        type="primary",
        on_click=ui.callback("load", start_training),
        disabled=busy,
        key="load.train_button",
    )

# Under the form, beside the button that asked: the form above it does not move.
if ws.pending is not None:  # an action that would discard work waits for a yes
    with st.container(border=True):
        st.warning(
            f"To {ws.pending.what}, {ws.pending.lose} would be discarded (its Trade-off points "
            "are kept, and come back when you load these models again). To rebuild the zip "
            "later, download its recipe on **Keep the work** first."
        )
        c1, c2 = st.columns(2)
        c1.button(
            f"Discard the zip and {ws.pending.what}",
            type="primary",
            on_click=ui.callback("load", ws.confirm_pending),
            key="load.confirm",
        )
        c2.button("Keep my zip", on_click=ws.drop_pending, key="load.keep_work")

# -------------------------------------------------------------------------------- summary
st.divider()
loaded = ws.loaded
if loaded is None:
    st.info("No models are loaded yet.")
    st.stop()

if load_failed:
    st.subheader(f"Still loaded: {loaded.title}")
    st.caption("The load above failed, so these are the models you had before it.")
else:
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
            own = loaded.own_layers.get(which)  # its own trace: never another model's layers
            if own is None:
                shape = "its layers could not be traced (below)"
            elif loaded.residual and loaded.lined_up:
                shape = f"{len(own)} weight layers in {len(loaded.groups)} zippable groups"
            else:
                widths = " → ".join(str(r["width"]) for r in own)
                shape = f"{len(own)} weight layers, widths {widths}"
            st.caption(
                f"{shape}; {task.num_classes} classes; input {tuple(task.input_shape)}; "
                f"{task.size('calib')} calibration / {task.size('test')} test samples"
            )

if loaded.residual and loaded.groups and loaded.lined_up:  # else: per-model tables
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
if not loaded.lined_up:
    # the models differ: one table per model, from its own trace, so no model's layers are
    # listed under another's names or roles
    for which in labels:
        own = loaded.own_layers.get(which)
        if own is not None:
            with st.expander(f"Weight layers of model {which}", expanded=True):
                st.dataframe(
                    pd.DataFrame(own)[["layer", "kind", "role", "inputs", "width", "params"]],
                    hide_index=True,
                    key=f"load.layers_{which.lower()}",
                )
elif loaded.layers:
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
    said = f"These {number(loaded.n_tasks)} can be zipped: {what}{shared_by}"
    if load_failed:  # a green box under the red error reads as if the failed load worked
        st.caption(said)
    else:
        st.success(said)
else:
    st.error(f"These models cannot be zipped: {loaded.reason}")
