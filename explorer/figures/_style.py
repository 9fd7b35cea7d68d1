"""The figures' shared look: one colour per role (shared neurons purple, each task's own
neurons its task colour: A blue, B orange, C green, …), one per method, the heatmap size limit
and the margins."""

COLORS = {
    "shared": "#7b3fa0",
    "a": "#1f77b4",
    "b": "#ff7f0e",
    "neutral": "#8c8c8c",
    "front": "#d62728",
}
#: each task's own colour, in task order (A, B, C, …); more tasks than colours reuse them
TASK_COLORS = (
    COLORS["a"],
    COLORS["b"],
    "#2ca02c",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#393b79",
)
METHOD_COLORS = {
    "mtz": "#7b3fa0",
    "mtz-avg": "#2ca02c",
    "euclidean": "#17becf",
    "random": "#8c8c8c",
    "original": "#000000",
    "yours": "#d62728",
    "tuned": "#e6ab02",  # the best plans within x points
}
#: the most cells a heatmap side may have; larger matrices are pooled in blocks
MAX_CELLS = 256
MARGIN = {"l": 10, "r": 10, "t": 50, "b": 10}
#: task letters, as the engine names tasks (mtz_core.training.TASK_LETTERS; the figures do not
#: import the engine)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def task_color(t: int) -> str:
    """Task t's own colour (t from 0)."""
    return TASK_COLORS[t % len(TASK_COLORS)]


def task_letters(row: dict, column: str = "n_{}") -> str:
    """The task letters a row has columns for (`n_a`, `n_b`, … ; or with `column="{}_only"`
    `a_only`, …), in order."""
    n = 0
    while n < len(LETTERS) and column.format(LETTERS[n]) in row:
        n += 1
    return LETTERS[:n]
