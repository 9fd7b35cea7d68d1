"""Keep the work: export/import the zip recipe, download the zipped network and each task's."""

from __future__ import annotations

import streamlit as st

from explorer import recipe as recipes
from explorer import resources, state, ui
from explorer.state import K

ws = state.workspace()
st.title("Keep the work")
ui.show_flashes("keep", ws)
pair = ui.require_pair(ws)
busy = ui.busy_note(ws)


# ------------------------------------------------------------------------------ callbacks
def import_recipe() -> None:
    up = st.session_state.get(K.RECIPE_FILE)
    if up is None:
        raise ValueError("choose a recipe file (.json) first")
    recipe = recipes.parse_recipe(up.getvalue(), up.name)
    ws.require_idle("rebuild a recipe")
    demo = recipes.recipe_demo(recipe)
    target = ws.pair
    if demo is not None and (
        target is None or {m.get("name") for m in target.models.values()} != {demo}
    ):
        target = resources.demo_pair(demo)
    if target is None:
        raise ValueError(
            f"load the models the recipe names first: {recipes.describe_models(recipe)}"
        )
    if target is not ws.pair and ((ws.zip is not None and ws.zip.records) or ws.points):
        raise ValueError(
            f"this recipe is for the demo pair {demo}, but you are working on "
            f"{ws.pair.title}. Load {demo} on Load models first (that replaces your current "
            "zip), then import the recipe again"
        )
    recipes.check_recipe_fits(recipe, target)
    if target is not ws.pair:
        ws.set_pair(target)
        ws.flash("keep", "info", f"Loaded the demo pair {demo}, which the recipe names.")
    pair_now = ws.pair

    def apply(job):
        if ws.pair is not pair_now:
            return
        rebuilt = job.result
        ws.settings = rebuilt.settings
        ws.zip = rebuilt
        for layer in recipe["layers"]:
            ws.set_plan(layer["name"], len(layer["pairs"]))
        ws.points.append(rebuilt.point())
        job.message = (
            f"Rebuilt {len(recipe['layers'])} layer(s) from {up.name}: saves "
            f"{rebuilt.saved_fraction():.1%}; task A {rebuilt.accuracy[0]:.1%}, "
            f"task B {rebuilt.accuracy[1]:.1%}"
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
    "A JSON file with the models and tasks, the zip settings and, for every zipped layer, the "
    "share, the exact pairs, the damping and method, and the retraining runs. Importing it "
    "rebuilds the same network."
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
        "A recipe made on a demo pair loads that pair; for your own models, load the same files "
        "first (layer names and widths must match)."
    )

# ----------------------------------------------------------------------------- downloads
st.subheader("The networks")
if z is None:
    st.info("Start a zip on **Step through** to download the zipped network.")
    st.stop()
params = z.params()
st.caption(
    f"The zipped network stores {params['zipped']:,} parameters instead of "
    f"{params['a'] + params['b']:,} (saves {z.saved_fraction():.1%}); "
    f"{len(z.records)} of {len(z.layers)} "
    + ("groups" if pair.residual else "hidden layers")
    + " zipped."
)
meta = {"title": pair.title, "tasks": pair.tasks, "shares": z.shares()}
c1, c2, c3 = st.columns(3)
c1.download_button(
    "Zipped network (.safetensors)",
    data=lambda: recipes.zipped_bytes(z, meta),
    file_name="mtz_zipped.safetensors",
    mime="application/octet-stream",
    on_click="ignore",
    disabled=busy,
    key="keep.zipped",
    help="ZippedNet.save: load it back with mtz_core.ZippedNet.load(path).",
)
for col, t, task in ((c2, 0, pair.task_a), (c3, 1, pair.task_b)):
    col.download_button(
        f"Task {'AB'[t]} network ({task.name})",
        data=lambda t=t: recipes.task_bytes(z, t),
        file_name=f"mtz_task_{'ab'[t]}.safetensors",
        mime="application/octet-stream",
        on_click="ignore",
        disabled=busy,
        key=f"keep.task_{t}",
        help="export_task: a plain nn.Sequential state dict for this task alone.",
    )
