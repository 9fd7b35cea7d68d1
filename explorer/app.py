"""The app's router: page set-up, navigation, the sidebar, then the chosen page.

Streamlit runs a script from the top on every interaction; both scripts that start the app
(`streamlit_app.py` in a checkout, `explorer/streamlit_main.py` once installed) call `main()`.
"""

from __future__ import annotations

import streamlit as st

from explorer import autosave, guide, state, ui


def main() -> None:
    """Draw the app once (one Streamlit run)."""
    st.set_page_config(page_title="MTZ Explorer", page_icon=":material/join_inner:", layout="wide")

    pages = guide.navigation_pages()  # the sidebar, in the newcomer's order

    page = st.navigation(pages)
    state.keep_widgets()  # the pages' controls keep their values when another page is open
    ws = state.workspace()
    ws.collect()  # a background job that ended: apply its results before anything is drawn
    autosave.track(ws, autosave.session_id())  # a reload can restore the zip (Load page)

    with st.sidebar:
        st.markdown("### MTZ Explorer")
        loaded = ws.loaded
        if loaded is None:
            st.caption("No models loaded.")
        else:
            st.caption(loaded.title)
            if ws.zip is not None:
                z = ws.zip
                accs = " · ".join(f"{x} {a:.1%}" for x, a in zip(loaded.labels, z.accuracy))
                st.caption(
                    f"Zipped {len(z.records)}/{len(z.layers)} {loaded.unit_name}s · saves "
                    f"{z.saved_fraction():.1%} · {accs}"
                )
        if ws.busy:
            st.caption(f":material/hourglass_top: {ws.job.title} is running")

    ui.job_panel(ws, page.url_path or "load")  # the default page's path is ""
    page.run()
    guide.next_step(page.url_path or "load")  # a page that stopped early said what to do
