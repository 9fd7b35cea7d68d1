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


def log_ticks(lo: float, hi: float, max_ticks: int = 8) -> dict:
    """Ticks for a log axis from `lo` to `hi` (both > 0) that never run into each other.

    Plotly labels every digit of a short log axis ("0.06", "0.07", "0.08" written in full run
    together as "0.060.070.08"). This picks the densest of 1–9, 1-2-5, 1 per decade, or every
    n-th decade whose ticks are at least 1/`max_ticks` of the axis apart, and writes them in
    full ("0.05", not Plotly's bare "5")."""
    import math

    lo, hi = min(lo, hi), max(lo, hi)
    if not (lo > 0 and math.isfinite(hi)):
        return {}
    a, b = math.log10(lo), math.log10(hi)
    span = max(b - a, 1e-9)
    decades = range(math.floor(a), math.ceil(b) + 1)
    candidates = [(1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 5), (1,)]
    sets = [[m * 10.0**d for d in decades for m in ms] for ms in candidates]
    sets += [[10.0**d for d in decades if d % n == 0] for n in (2, 3, 5, 10)]
    chosen: list[float] = []
    for values in sets:
        inside = [v for v in values if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]
        gaps = [math.log10(q / p) for p, q in zip(inside, inside[1:])]
        if len(inside) <= max_ticks and all(g >= span / max_ticks for g in gaps):
            chosen = inside
            break
    if len(chosen) < 2:  # a range inside one gap: its ends
        chosen = [lo, hi]
    return {"tickvals": chosen, "ticktext": [f"{v:.2g}" for v in chosen]}
