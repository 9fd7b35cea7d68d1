"""Shared, read-only resources (one copy per server process, for every user).

Only things no page ever modifies live here: the demos (their models and tasks). The zip engine
copies weights into each `ZipSession`, and training in the app builds its own models.
"""

from __future__ import annotations

import streamlit as st

from . import loaded
from .tasks import load_builtin_task

__all__ = ["demo_models", "demo_pair", "builtin_task"]


@st.cache_resource(show_spinner="Loading the demo…", max_entries=8)
def demo_models(name: str) -> loaded.LoadedModels:
    """A demo (a pair, or a set of three or more models) with its summary (test accuracy,
    layers, zippability)."""
    return loaded.demo_models(name)


demo_pair = demo_models  # the two-model name


@st.cache_resource(show_spinner="Loading the task…", max_entries=32)
def builtin_task(text: str):
    """A built-in task by its text (read-only: batches never modify its tensors)."""
    return load_builtin_task(text)
