"""Keep the work: export/import the zip recipe, download the zipped network and each task's
(two models or more)."""

from __future__ import annotations

import streamlit as st

from explorer import recipe as recipes
from explorer import resources, state, task_export, ui
from explorer.state import K

ws = state.workspace()
st.title("Keep the work")
ui.show_flashes("keep", ws)
pair = ui.require_models(ws)
busy = ui.busy_note(ws)


# ------------------------------------------------------------------------------ callbacks
def import_recipe() -> None:
    up = st.session_state.get(K.RECIPE_FILE)
    if up is None:
        raise ValueError("choose a recipe file (.json) first")
    recipe = recipes.parse_recipe(up.getvalue(), up.name)
    ws.require_idle("rebuild a recipe")
    demo = recipes.recipe_demo(recipe)
    target = ws.loaded
    if demo is not None and (
        target is None
        or {m.get("name") for m in target.models.values()} != {demo}
        or any(m.get("source") != "demo" for m in target.models.values())
    ):
        target = resources.demo_models(demo)
    if target is None:
        raise ValueError(
            f"load the models the recipe names first: {recipes.describe_models(recipe)}"
        )
    if target is not ws.loaded and ((ws.zip is not None and ws.zip.records) or ws.points):
        raise ValueError(
            f"this recipe is for the demo {demo}, but you are working on "
            f"{ws.loaded.title}. Load {demo} on Load models first (that replaces your current "
            "zip), then import the recipe again"
        )
    recipes.check_recipe_fits(recipe, target)
    if target is not ws.loaded:
        ws.set_models(target)
        ws.flash("keep", "info", f"Loaded the demo {demo}, which the recipe names.")
    pair_now = ws.loaded

    def apply(job):
        if ws.loaded is not pair_now:
            return
        rebuilt = job.result
        ws.adopt_rebuilt(rebuilt, recipe)
        ws.points.append(rebuilt.point())
        accs = ", ".join(f"task {x} {a:.1%}" for x, a in zip(pair_now.labels, rebuilt.accuracy))
        job.message = (
            f"Rebuilt {len(recipe['layers'])} layer(s) from {up.name}: saves "
            f"{rebuilt.saved_fraction():.1%}; {accs}"
        )

    ws.start_job(
        "rebuild",
        f"Rebuilding from {up.name}",
        lambda job: recipes.rebuild(job, pair_now, recipe),
        apply,
    )


# ------------------------------------------------------------------------------ the recipe
st.subheader("The zip recipe")
st.caption(
    "A JSON file with the list of models and their tasks, the zip settings and, for every "
    "zipped layer, the share, the exact pairs (one neuron of every model per shared unit), the "
    "damping and method, and the retraining runs. Importing it rebuilds the same network; "
    "recipes saved by earlier versions (two models) still load. In Python, "
    "`ZipSession.many(models, data).step(pairs=layer['pairs'])` for each of its `layers`, with "
    "its `settings`, makes the same network."
)
z = ws.zip
c1, c2 = st.columns(2)
with c1, st.container(border=True):
    st.markdown("**Export**")
    if z is None or not z.records:
        st.info("Nothing is zipped yet: zip at least one layer on **Step through**.")
    else:
        recipe = recipes.build_recipe(pair, z)
        st.download_button(
            "Download the recipe (JSON)",
            data=recipes.recipe_json(recipe),
            file_name="mtz_recipe.json",
            mime="application/json",
            on_click="ignore",
            disabled=busy,
            key="keep.recipe_download",
        )
        st.caption(
            f"{len(recipe['layers'])} zipped layer(s): "
            + ", ".join(f"{layer['name']} {layer['shared']} pairs" for layer in recipe["layers"])
            + f"; saves {recipe['result']['saved_fraction']:.1%}."
        )
with c2, st.container(border=True):
    st.markdown("**Import**")
    st.file_uploader("Recipe (.json)", type=["json"], key=K.RECIPE_FILE)
    st.button(
        "Rebuild from the recipe",
        type="primary",
        on_click=ui.callback("keep", import_recipe),
        disabled=busy,
        key="keep.import",
    )
    st.caption(
        "A recipe made on a demo loads that demo; for your own models, load the same files "
        "first (their number, layer names and widths must match)."
    )

# ----------------------------------------------------------------------------- downloads
st.subheader("The networks")
if z is None:
    st.info("Start a zip on **Step through** to download the zipped network.")
    st.stop()
params = z.params()
originals = sum(params[x] for x in pair.letters)
st.caption(
    f"The zipped network stores {params['zipped']:,} parameters instead of "
    f"{originals:,} (saves {z.saved_fraction():.1%}); "
    f"{len(z.records)} of {len(z.layers)} "
    + ("groups" if pair.residual else "hidden layers")
    + " zipped."
)
meta = recipes.zipped_metadata(pair, z)  # the layout `mtz eval` reads
cols = st.columns(min(pair.n_tasks + 1, 4))
cols[0].download_button(
    "Zipped network (.safetensors)",
    data=lambda: recipes.zipped_bytes(z, meta),
    file_name="mtz_zipped.safetensors",
    mime="application/octet-stream",
    on_click="ignore",
    disabled=busy,
    key="keep.zipped",
    help="ZippedNet.save: load it back with mtz_core.ZippedNet.load(path).",
)
for t, (x, task) in enumerate(zip(pair.letters, pair.tasks)):
    cols[(t + 1) % len(cols)].download_button(
        f"Task {x.upper()} network ({task.name})",
        data=lambda t=t: recipes.task_bytes(z, t),
        file_name=f"mtz_task_{x}.safetensors",
        mime="application/octet-stream",
        on_click="ignore",
        disabled=busy,
        key=f"keep.task_{t}",
        help="export_task: this task's network alone, for deployment.",
    )
st.caption(
    "`mtz_zipped.safetensors`: the whole zipped network with its tasks; `mtz eval "
    "mtz_zipped.safetensors` scores every task, `mtz_core.ZippedNet.load(path)` rebuilds it."
)
for t, x in enumerate(pair.letters):
    st.caption(task_export.task_note(z, t, f"mtz_task_{x}.safetensors"))
