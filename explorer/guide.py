"""The newcomer's path through the app (issue 11, item 7): a short "start here" on the first
page, and at the end of every page a link to the next one.

Eight pages in a sidebar do not say where to begin: a student who opened Trade-off first met a
sweep form before knowing what a pair cost is. The path is the order in which the method makes
sense: load a pair, see what sharing a pair of neurons costs (Costs), zip layer by layer (Step
through), recover accuracy (Retrain), weigh accuracy against parameters (Trade-off), keep the
result. Learn explains the method with the loaded models' own numbers, reachable from the start.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

__all__ = ["PAGES", "NEXT", "Step", "next_step", "start_here"]


@dataclass(frozen=True)
class Step:
    """A page of the app: its file (for `st.page_link`), title and icon, as the sidebar has it."""

    file: str
    title: str
    icon: str


PAGES: dict[str, Step] = {
    "load": Step("explorer/pages/load.py", "Load models", ":material/upload_file:"),
    "costs": Step("explorer/pages/costs.py", "Costs", ":material/grid_on:"),
    "sharing": Step("explorer/pages/sharing.py", "Sharing", ":material/join_inner:"),
    "step": Step("explorer/pages/step.py", "Step through", ":material/stairs:"),
    "retrain": Step("explorer/pages/retrain.py", "Retrain", ":material/fitness_center:"),
    "tradeoff": Step("explorer/pages/tradeoff.py", "Trade-off", ":material/show_chart:"),
    "learn": Step("explorer/pages/learn.py", "Learn", ":material/school:"),
    "keep": Step("explorer/pages/keep.py", "Keep the work", ":material/save:"),
}

#: page → (next page, why go there); every page has one, so no page is a dead end
NEXT: dict[str, tuple[str, str]] = {
    "load": ("costs", "what sharing each pair of neurons would cost"),
    "costs": ("step", "zip the network layer by layer with the shares you chose"),
    "sharing": ("step", "zip the network layer by layer"),
    "step": ("retrain", "recover the accuracy the zip cost"),
    "retrain": ("tradeoff", "accuracy against parameters saved, for every share"),
    "tradeoff": ("keep", "download the zipped network and its recipe"),
    "keep": ("learn", "the method behind each step, with your models' numbers"),
    "learn": ("costs", "see the costs on the loaded models"),
}


def next_step(page: str) -> None:
    """The link to the page after `page` on the path (nothing for an unknown page)."""
    if page not in NEXT:
        return
    target, why = NEXT[page]
    step = PAGES[target]
    st.divider()
    st.page_link(step.file, label=f"Next: {step.title} — {why}", icon=":material/arrow_forward:")


def start_here() -> None:
    """What MTZ does and where to go first, in three steps, with Learn beside them."""
    with st.container(border=True):
        st.markdown(
            "**Start here.** Two networks of one architecture, each trained for its own task, "
            "become one network: layer by layer, pairs of neurons (one from each network) are "
            "merged into one shared neuron, chosen where merging changes each network's outputs "
            "least. A demo pair is loaded to begin with: follow the three steps."
        )
        cols = st.columns(4)
        for col, (key, what) in zip(
            cols,
            (
                ("costs", "1. what sharing each pair costs"),
                ("step", "2. zip layer by layer"),
                ("tradeoff", "3. accuracy against parameters saved"),
                ("learn", "the method, explained"),
            ),
        ):
            step = PAGES[key]
            with col:
                st.page_link(step.file, label=step.title, icon=step.icon)
                st.caption(what)


def error_in_accuracy(event: dict, labels: list[str] | tuple[str, ...]) -> str:
    """A zip step's predicted layer error with a scale a student can read: what the step did
    to each task's accuracy (the error alone, "0.0123", means nothing without one)."""
    before = event.get("before") or ()
    after = [event.get(f"acc_{x.lower()}") for x in labels]
    changes = [
        f"task {x} {b:.1%} → {a:.1%} ({(a - b) * 100:+.1f} points)"
        for x, b, a in zip(labels, before, after)
        if a is not None and b is not None
    ]
    text = (
        f"The layer error {event['predicted_error']:.4g} is how far zipping {event['layer']} "
        "moved the layer's outputs from each network's own (squared, summed over the "
        "calibration inputs; 0: not at all)."
    )
    if changes:
        text += " What that did to the tasks: " + ", ".join(changes) + "."
    return text
