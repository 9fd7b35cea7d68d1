"""MTZ Explorer: merge two trained networks by sharing neurons layer by layer (Multi-Task
Zipping, NeurIPS 2018), and see how it works. Run: `streamlit run streamlit_app.py`.

This file is only the router: the pages live in `explorer/pages/`, the user's state in
`explorer/state.py`, the figures in `explorer/figures/`; the mathematics is `mtz_core`'s.
"""

import os

# Torch's OpenMP threads busy-wait by default; under Streamlit's threads on a 2-core machine
# that starved background jobs (a 10-iteration retrain: 0.03 s alone, up to 21 s in the app).
# Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import streamlit as st  # noqa: E402

from explorer import state, ui  # noqa: E402

st.set_page_config(page_title="MTZ Explorer", page_icon=":material/join_inner:", layout="wide")

PAGES = [
    st.Page(
        "explorer/pages/load.py", title="Load models", icon=":material/upload_file:", default=True
    ),
    st.Page("explorer/pages/costs.py", title="Costs", icon=":material/grid_on:"),
    st.Page("explorer/pages/sharing.py", title="Sharing", icon=":material/join_inner:"),
    st.Page("explorer/pages/step.py", title="Step through", icon=":material/stairs:"),
    st.Page("explorer/pages/retrain.py", title="Retrain", icon=":material/fitness_center:"),
    st.Page("explorer/pages/tradeoff.py", title="Trade-off", icon=":material/show_chart:"),
    st.Page("explorer/pages/learn.py", title="Learn", icon=":material/school:"),
    st.Page("explorer/pages/keep.py", title="Keep the work", icon=":material/save:"),
]

page = st.navigation(PAGES)
ws = state.workspace()
ws.collect()  # a background job that ended: apply its results before anything is drawn

with st.sidebar:
    st.markdown("### MTZ Explorer")
    if ws.pair is None:
        st.caption("No models loaded.")
    else:
        st.caption(ws.pair.title)
        if ws.zip is not None:
            z = ws.zip
            st.caption(
                f"Zipped {len(z.records)}/{len(z.layers)} layers · saves "
                f"{z.saved_fraction():.1%} · A {z.accuracy[0]:.1%} · B {z.accuracy[1]:.1%}"
            )
    if ws.busy:
        st.caption(f":material/hourglass_top: {ws.job.title} is running")

ui.job_panel(ws)
page.run()
