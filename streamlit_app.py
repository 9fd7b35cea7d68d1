"""MTZ Explorer: entry point (the full app arrives with the explorer issue)."""

import streamlit as st

st.set_page_config(page_title="MTZ Explorer", layout="wide")
st.title("MTZ Explorer")
st.write(
    "Multi-Task Zipping merges two trained networks into one by sharing neurons layer by layer. "
    "The zipping engine lives in `mtz_core`; the interactive explorer is being built."
)
