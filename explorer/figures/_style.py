"""The figures' shared look: one colour per role (shared neurons purple, task A's own
neurons blue, task B's orange), one per method, the heatmap size limit and the margins."""

COLORS = {
    "shared": "#7b3fa0",
    "a": "#1f77b4",
    "b": "#ff7f0e",
    "neutral": "#8c8c8c",
    "front": "#d62728",
}
METHOD_COLORS = {
    "mtz": "#7b3fa0",
    "mtz-avg": "#2ca02c",
    "euclidean": "#17becf",
    "random": "#8c8c8c",
    "original": "#000000",
    "yours": "#d62728",
}
#: the most cells a heatmap side may have; larger matrices are pooled in blocks
MAX_CELLS = 256
MARGIN = {"l": 10, "r": 10, "t": 50, "b": 10}
