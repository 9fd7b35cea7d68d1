"""Every figure of the explorer, as pure functions: numbers in, a Plotly figure out.

Nothing here imports Streamlit or touches session state, so each figure is tested on its own
(`tests/test_figures.py`). The colours are the same everywhere: shared neurons purple, each
task's own neurons its task colour (`TASK_COLORS`: A blue, B orange, C green, …).

Large inputs are reduced before they become a figure: a cost matrix is pooled to at most
`MAX_CELLS` × `MAX_CELLS` cells (the figure's `layout.meta` says how), matching lines and
scatter points are sampled, so a layer with thousands of neurons never sends millions of numbers
to the browser.

The modules, by what they draw: `heatmap` (the pair-cost heatmap and its pooling), `costs`
(histogram, sorted-cost curve, predicted vs measured layer error), `sharing` (counts per layer,
the matching, weight images), `network` (the network diagram), `training` (loss curves, the
teaching pair's decision boundaries), `tradeoff` (accuracy vs parameters saved); `_style` holds
the shared colours and sizes. Pages use them as `figures.<name>`.
"""

from ._style import COLORS, MAX_CELLS, METHOD_COLORS, TASK_COLORS, task_color
from .costs import cost_curve, cost_histogram, layer_errors
from .heatmap import PoolInfo, cost_heatmap, matched_order, pool_matrix
from .network import network_diagram
from .sharing import matching_figure, sharing_bars, weight_images
from .tradeoff import tradeoff_figure
from .training import decision_boundaries, loss_curves, training_curve

__all__ = [
    "COLORS",
    "MAX_CELLS",
    "METHOD_COLORS",
    "TASK_COLORS",
    "task_color",
    "PoolInfo",
    "pool_matrix",
    "matched_order",
    "cost_heatmap",
    "cost_histogram",
    "cost_curve",
    "layer_errors",
    "sharing_bars",
    "matching_figure",
    "weight_images",
    "network_diagram",
    "loss_curves",
    "tradeoff_figure",
    "decision_boundaries",
    "training_curve",
]
