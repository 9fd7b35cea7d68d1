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
from pathlib import Path
from typing import Any

import streamlit as st

__all__ = ["PAGES", "NEXT", "Step", "navigation_pages", "next_step", "start_here"]


@dataclass(frozen=True)
class Step:
    """A page of the app: its file in explorer/pages/, title and icon, as the sidebar has it."""

    file: str
    title: str
    icon: str


#: the app's pages in sidebar order (`navigation_pages` builds the sidebar from it)
PAGES: dict[str, Step] = {
    "load": Step("load.py", "Load models", ":material/upload_file:"),
    "costs": Step("costs.py", "Costs", ":material/grid_on:"),
    "sharing": Step("sharing.py", "Sharing", ":material/join_inner:"),
    "step": Step("step.py", "Step through", ":material/stairs:"),
    "retrain": Step("retrain.py", "Retrain", ":material/fitness_center:"),
    "tradeoff": Step("tradeoff.py", "Trade-off", ":material/show_chart:"),
    "learn": Step("learn.py", "Learn", ":material/school:"),
    "keep": Step("keep.py", "Keep the work", ":material/save:"),
}

#: the page files (package data, so `pip install .` ships them)
PAGES_DIR = Path(__file__).resolve().parent / "pages"
#: this run's `st.Page` objects by key: links name them, not a path (a path is read relative
#: to the script that started the app, which differs between a checkout and an install)
_BUILT: dict[str, Any] = {}


def navigation_pages() -> list[Any]:
    """The sidebar's `st.Page`s, Load the default; kept for this run's links."""
    _BUILT.clear()
    for key, step in PAGES.items():
        _BUILT[key] = st.Page(
            PAGES_DIR / step.file, title=step.title, icon=step.icon, default=key == "load"
        )
    return list(_BUILT.values())


def _link(key: str, label: str, icon: str) -> None:
    st.page_link(_BUILT.get(key) or PAGES_DIR / PAGES[key].file, label=label, icon=icon)


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
    _link(target, f"Next: {step.title} — {why}", ":material/arrow_forward:")


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
                _link(key, step.title, step.icon)
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
    scale = of_output_energy(event["predicted_error"], event.get("output_energy"))
    text = (
        f"The layer error {event['predicted_error']:.4g}"
        + (f" ({scale}: the outputs' own mean square on the same samples)" if scale else "")
        + f" is how far zipping {event['layer']} moved the layer's outputs from each "
        "network's own (squared, averaged over the calibration inputs; 0: not at all)."
    )
    if changes:
        text += " What that did to the tasks: " + ", ".join(changes) + "."
    return text


def of_output_energy(error: float | None, energy: float | None) -> str:
    """'0.42% of the layer's output energy': a predicted layer error on a scale one can read
    (the error over the original layer's output energy on the same calibration samples,
    `ZipState.output_energy`); "" when either is unknown."""
    text = energy_percent(error, energy)
    return "" if text is None else f"{text} of the layer's output energy"


def energy_percent(error: float | None, energy: float | None) -> str | None:
    """error / energy as a percentage ("0.42%"), None when either is unknown."""
    if error is None or energy is None or not energy > 0:
        return None
    share = error / energy
    return f"{share:.2%}" if share >= 0.0001 or share == 0 else "under 0.01%"
