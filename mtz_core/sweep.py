"""Sweeps: zip T >= 2 models at many shares, methods and retraining budgets, as one table.

One zip answers "what does sharing half the neurons cost?"; the question people ask is the
trade-off curve (how much accuracy each extra percent of saved parameters costs, and whether
MTZ beats the baselines at equal shares). `sweep_many` runs the grid over T models (`sweep` is
its two-model case), one row per configuration plus the original models as the reference;
`pareto_front` marks the rows nothing beats on both axes; `sweep_figure` draws the curves;
`save_sweep` writes CSV, HTML and, if it can, PNG.

Data roles follow `mtz_core.data`: Hessians and retraining use each task's `calib` split, every
accuracy the `test` split; the per-layer held-out error reads validation inputs (`val`), which
the Hessians never see.
pandas and plotly are imported inside the functions: `import mtz_core` never needs them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from .config import ZipConfig
from .data import Task
from .data.task import SplitData
from .evaluation import EVAL_BATCH_SIZE, evaluate
from .extras import require
from .pipeline import zip_many
from .progress import CancelToken, ProgressCallback, ZipCancelled
from .training import RETRAIN_LR, TASK_LETTERS

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "COLUMNS",
    "sweep_columns",
    "sweep_tasks",
    "sweep",
    "sweep_many",
    "pareto_front",
    "sweep_figure",
    "save_sweep",
    "image_engine_problem",
]

log = logging.getLogger(__name__)


def sweep_columns(n_tasks: int) -> tuple[str, ...]:
    """The columns of a sweep over `n_tasks` models, in order: one row per configuration.

    acc_<x> / params_<x> for every task letter x (a, b, c, ...); mean_acc: the mean over all
    tasks; retrain_iterations: per layer; retrain_samples: all layers and tasks;
    predicted_error / heldout_error: Σ over layers of the increase of every task's layer error
    (E_A + E_B + ...) the applied weights cause on the Hessian samples / on validation inputs
    (undamped, whatever the damping); saved_fraction = saved / (params_a + params_b + ...).
    """
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int):
        raise TypeError(f"n_tasks must be an int, got {type(n_tasks).__name__}")
    if not 2 <= n_tasks <= len(TASK_LETTERS):
        raise ValueError(f"a sweep has 2 to {len(TASK_LETTERS)} tasks, got {n_tasks}")
    letters = TASK_LETTERS[:n_tasks]
    return (
        *("method", "share", "retrain_iterations", "retrain_samples"),
        *(f"acc_{x}" for x in letters),
        "mean_acc",
        *(f"params_{x}" for x in letters),
        *("params_zipped", "saved", "saved_fraction"),
        *("predicted_error", "heldout_error", "seconds"),
    )


#: The columns of a two-model sweep (`sweep`); `sweep_columns(T)` for T models.
COLUMNS = sweep_columns(2)

SweepProgress = Callable[[int, int, str], None]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _check_grid(
    shares: Sequence[Any], methods: Sequence[str], retrain_iterations: Sequence[Any]
) -> tuple[list[float], list[str], list[int]]:
    """Validate the whole grid before any work, so a typo never costs a half-finished sweep."""
    named = {"shares": shares, "methods": methods, "retrain_iterations": retrain_iterations}
    for name, values in named.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{name} must be a non-empty list, got {values!r}")
    fractions = []
    for s in shares:
        # Shares are fractions of the smaller layer; an int 0 or 1 reads as 0 % or 100 %
        # here (unlike zip_models, where an int is a pair count), since a sweep compares
        # layers of different widths and a fixed count would mean different things in each.
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s <= 1.0:
            raise ValueError(f"share {s!r} is out of range; shares are fractions in [0, 1]")
        fractions.append(float(s))
    for it in retrain_iterations:
        if isinstance(it, bool) or not isinstance(it, int) or it < 0:
            raise ValueError(f"retrain_iterations entry {it!r} must be an int >= 0")
    return fractions, list(methods), list(retrain_iterations)


def _series_label(method: str, its: int) -> str:
    return f"{method}, retrain {its}/layer" if its else f"{method}, no retraining"


def sweep_tasks(df: pd.DataFrame) -> str:
    """The task letters of a sweep table ("ab", "abc", ...): those with an acc_<x> column."""
    n = 0
    while n < len(TASK_LETTERS) and f"acc_{TASK_LETTERS[n]}" in df.columns:
        n += 1
    return TASK_LETTERS[:n]


def _row(columns, method, share, its, samples, accs, params, errors, t0) -> dict[str, Any]:
    """One table row from a `ZipResult.params`-like dict ({letter: count, zipped: count}):
    saved = every original's parameters − zipped, as `ZipResult.saved` counts them."""
    letters = TASK_LETTERS[: len(accs)]
    originals = sum(params[x] for x in letters)
    saved = originals - params["zipped"]
    values = (method, share, its, samples, *accs, sum(accs) / len(accs))
    values += (*(params[x] for x in letters), params["zipped"], saved, saved / originals)
    values += (*errors, time.perf_counter() - t0)
    return dict(zip(columns, values))


def sweep(
    model_a: nn.Module, model_b: nn.Module, task_a: Task, task_b: Task, **options: Any
) -> pd.DataFrame:
    """`sweep_many` of two models: the same keyword arguments, rows and `COLUMNS`."""
    return sweep_many([model_a, model_b], [task_a, task_b], **options)


def sweep_many(
    models: Sequence[nn.Module],
    tasks: Sequence[Task],
    *,
    shares: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    methods: Sequence[str] = ("mtz",),
    retrain_iterations: Sequence[int] = (0,),
    calib_samples: int = 512,
    heldout_samples: int | None = 512,
    batch_size: int = 64,
    lr: float = RETRAIN_LR,
    damping: float | str | None = None,
    matching: str = "greedy",
    hessian: str = "exact",
    flatten_hessian: str = "auto",
    seed: int = 0,
    batch_norm: str = "fold",
    recalibrate: bool = False,
    zipit_alpha: float = ZipConfig.zipit_alpha,
    zipit_beta: float = ZipConfig.zipit_beta,
    device: Any = None,
    progress: SweepProgress | None = None,
    zip_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """Zip T >= 2 models (`models[t]` trained for `tasks[t]`) for every method × retraining
    budget × share with `zip_many`; one row each (columns: `sweep_columns(T)`, `COLUMNS` for
    T = 2).

    The first row is the original models (method "original", share 0, nothing saved). Shares
    are fractions in [0, 1] of each layer's narrowest width; `retrain_iterations` values are
    per layer (0: no retraining), retraining draws from every task. `heldout_samples=None`
    skips the held-out layer error (NaN).

    `progress(done, total, description)` is called as each configuration starts (done = the
    configurations finished so far, the originals counting as one) and once at the end with
    done == total. `cancel` is checked between configurations and, through the zip's progress
    events, inside them; on cancel the rows finished so far are returned with
    `df.attrs["cancelled"] = True`. `df.attrs` also holds the settings and the task names:
    `tasks` (all T) and `task_a`, `task_b` (the first two).
    """
    pd = require("pandas", "sweep", "mtz_core.sweep.sweep_many")
    for label, seq in (("models", models), ("tasks", tasks)):
        if isinstance(seq, (nn.Module, SplitData, str)) or not isinstance(seq, Sequence):
            raise TypeError(f"{label} must be a list (one per task), got {type(seq).__name__}")
    if len(models) != len(tasks):
        raise ValueError(
            f"sweep_many got {len(models)} models and {len(tasks)} tasks; give one task per model"
        )
    columns = sweep_columns(len(models))
    letters = TASK_LETTERS[: len(models)]
    share_list, method_list, its_list = _check_grid(shares, methods, retrain_iterations)
    _positive_int(calib_samples, "calib_samples")
    _positive_int(batch_size, "batch_size")
    if heldout_samples is not None:
        _positive_int(heldout_samples, "heldout_samples")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    check = ZipConfig.default_damping() if damping is None else damping
    for m in method_list:  # ZipConfig names a bad method, matching, damping or seed
        ZipConfig(
            m,
            matching,
            hessian,
            flatten_hessian,
            check,
            seed,
            batch_norm=batch_norm,
            recalibrate=recalibrate,
            zipit_alpha=zipit_alpha,
            zipit_beta=zipit_beta,
        )
    for x, t in zip(letters, tasks):
        if not isinstance(t, SplitData):
            raise TypeError(
                f"task_{x} must be a mtz_core.data.Task (or another SplitData with a name), got "
                f"{type(t).__name__}"
            )

    calibs = [t.inputs("calib", batch_size, calib_samples) for t in tasks]
    helds = None
    if heldout_samples is not None:
        helds = [t.inputs("val", batch_size, heldout_samples) for t in tasks]

    def test_batches(task: Task) -> Any:
        return task.batches("test", EVAL_BATCH_SIZE)

    def zip_events(event: Any) -> None:
        # Raising from the progress callback is how a running zip is stopped from outside.
        if cancel is not None and cancel.cancelled:
            raise ZipCancelled("sweep cancelled")
        if zip_progress is not None:
            zip_progress(event)

    options = dict(
        matching=matching,
        hessian=hessian,
        flatten_hessian=flatten_hessian,
        damping=damping,
        seed=seed,
        batch_norm=batch_norm,
        recalibrate=recalibrate,
        zipit_alpha=zipit_alpha,
        zipit_beta=zipit_beta,
        device=device,
        progress=zip_events,
        lr=lr,
        heldout=helds,
    )
    configs = [(m, its, s) for m in method_list for its in its_list for s in share_list]
    total = len(configs) + 1
    rows: list[dict[str, Any]] = []
    cancelled = False

    def report(done: int, text: str) -> None:
        if progress is not None:
            progress(done, total, text)

    report(0, "original models")
    t0 = time.perf_counter()
    accs = tuple(evaluate(m, test_batches(t)).accuracy for m, t in zip(models, tasks))
    params = {x: sum(p.numel() for p in m.parameters()) for x, m in zip(letters, models)}
    params.update(zipped=sum(params.values()))
    rows.append(_row(columns, "original", 0.0, 0, 0, accs, params, (0.0, 0.0), t0))
    for i, (method, its, share) in enumerate(configs, start=1):
        if cancel is not None and cancel.cancelled:
            cancelled = True
            break
        report(i, f"{_series_label(method, its)}, share {share:g}")
        t0 = time.perf_counter()
        try:
            result = zip_many(
                models,
                calibs,
                share=share,
                method=method,
                retrain_iterations=its,
                trains=[t.batches("calib", batch_size, shuffle=True, seed=seed) for t in tasks],
                **options,
            )
        except ZipCancelled:
            if cancel is not None and cancel.cancelled:
                cancelled = True
                break
            raise
        accs = tuple(
            evaluate(result.model, test_batches(t), task=i).accuracy for i, t in enumerate(tasks)
        )
        held = [r.heldout_error for r in result.layers]
        errors = (
            float(sum(r.predicted_error for r in result.layers)),
            math.nan if None in held else float(sum(held)),
        )
        samples = result.retrain_samples
        rows.append(_row(columns, method, share, its, samples, accs, result.params, errors, t0))
    if not cancelled:
        report(total, "done")
    df = pd.DataFrame(rows, columns=list(columns))
    settings = dict(calib_samples=calib_samples, heldout_samples=heldout_samples, lr=lr)
    settings.update(batch_size=batch_size, damping=damping, matching=matching, seed=seed)
    settings.update(batch_norm=batch_norm, recalibrate=recalibrate)
    names = [t.name for t in tasks]
    df.attrs.update(settings, cancelled=cancelled, task_a=names[0], task_b=names[1], tasks=names)
    return df


def pareto_front(df: pd.DataFrame) -> pd.Series:
    """True for rows no other row dominates in (saved_fraction ↑, mean_acc ↑).

    A row is dominated when another saves at least as much and is at least as accurate, and is
    strictly better in one of the two; equal rows do not dominate each other. Rows with a
    missing value are never on the front.
    """
    import numpy as np
    import pandas as pd

    missing = [c for c in ("saved_fraction", "mean_acc") if c not in df.columns]
    if missing:
        raise ValueError(f"pareto_front needs columns {missing}; the table has {list(df.columns)}")
    x = df["saved_fraction"].to_numpy(dtype=float)
    y = df["mean_acc"].to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x_, y_ = np.where(ok, x, -np.inf), np.where(ok, y, -np.inf)
    geq = (x_[None, :] >= x_[:, None]) & (y_[None, :] >= y_[:, None])  # [i, j]: j ≥ i on both
    gt = (x_[None, :] > x_[:, None]) | (y_[None, :] > y_[:, None])
    dominated = (geq & gt).any(axis=1)
    return pd.Series(ok & ~dominated, index=df.index, name="pareto")


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_RETRAIN_DASHES = ("solid", "dot", "dashdot", "longdash")


def _and(words: Sequence[str]) -> str:
    """Join task labels: "A and B", "A, B and C"."""
    return ", ".join(words[:-1]) + f" and {words[-1]}"


def sweep_figure(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Test accuracy against parameters saved: one panel per task (of the T in the table) and
    one for the mean.

    One line per method and retraining budget (colour: method; solid: with retraining, dashed:
    without), the Pareto front ringed on the mean panel, and the original models as a dotted
    reference line and a marker at 0 % saved. Each trace's `meta` names its kind, panel, method
    and budget, so code (and tests) can find a series without parsing its label.
    """
    require("plotly", "sweep", "mtz_core.sweep.sweep_figure")
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    letters = sweep_tasks(df)
    needed = (*COLUMNS[:4], "acc_a", "acc_b", "mean_acc", "saved_fraction")
    missing = [c for c in needed if c not in df]
    if missing:
        raise ValueError(f"sweep_figure needs the columns of `sweep`; missing {missing}")
    upper = [x.upper() for x in letters]
    names = df.attrs.get("tasks") or [df.attrs.get("task_a", "A"), df.attrs.get("task_b", "B")]
    names = [*names, *upper[len(names) :]][: len(upper)]  # no name given: the letter
    accs = [f"acc_{x}" for x in letters]
    panels = [*zip(letters, accs), ("mean", "mean_acc")]
    mean_col, total = len(panels), " + ".join(upper)
    titles = [f"task {u} ({n})" for u, n in zip(upper, names)] + [f"mean of {_and(upper)}"]
    fig = make_subplots(
        1, len(panels), shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=titles
    )
    scores = ", ".join(f"acc {u} %{{customdata[{3 + i}]:.1%}}" for i, u in enumerate(upper))
    hover = (
        "%{customdata[0]}<br>share %{customdata[1]:.0%} of each layer, retrain "
        f"%{{customdata[2]}}/layer<br>saved %{{x:.1%}} of {total} parameters<br>{scores}"
        f", mean %{{customdata[{3 + len(upper)}]:.1%}}<extra></extra>"
    )

    def add(part: pd.DataFrame, column: str, col: int, **style: Any) -> None:
        """One trace: x = saved_fraction, y = `column`, hover from the row's settings."""
        custom = part[["method", "share", "retrain_iterations", *accs, "mean_acc"]]
        prefix = "Pareto front<br>" if style["meta"]["kind"] == "pareto" else ""
        fig.add_trace(
            go.Scatter(
                x=part["saved_fraction"].to_numpy(),
                y=part[column].to_numpy(),
                customdata=custom.to_numpy(),
                hovertemplate=prefix + hover,
                **style,
            ),
            row=1,
            col=col,
        )

    zipped = df[df["method"] != "original"]
    originals = df[df["method"] == "original"]
    methods = list(dict.fromkeys(zipped["method"]))
    budgets = sorted(set(int(v) for v in zipped["retrain_iterations"]))
    nonzero = [b for b in budgets if b]
    for col, (panel, column) in enumerate(panels, start=1):
        for mi, method in enumerate(methods):
            for its in budgets:
                part = zipped[(zipped["method"] == method) & (zipped["retrain_iterations"] == its)]
                if part.empty:
                    continue
                dash = "dash" if its == 0 else _RETRAIN_DASHES[nonzero.index(its) % 4]
                label = _series_label(method, its)
                add(
                    part.sort_values(["saved_fraction", "share"]),
                    column,
                    col,
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    line=dict(color=_COLORS[mi % len(_COLORS)], dash=dash),
                    meta=dict(kind="series", panel=panel, method=method, retrain=its),
                )
        if not originals.empty:
            ref = float(originals[column].iloc[0])
            fig.add_hline(y=ref, line=dict(color="gray", dash="dot", width=1), row=1, col=col)
            add(
                originals,
                column,
                col,
                mode="markers",
                name="original models",
                legendgroup="original",
                showlegend=col == 1,
                marker=dict(color="black", symbol="star", size=11),
                meta=dict(kind="original", panel=panel),
            )
    if len(df):
        add(
            df[pareto_front(df)].sort_values("saved_fraction"),
            "mean_acc",
            mean_col,
            mode="lines+markers",
            name="Pareto front (mean)",
            line=dict(color="rgba(0,0,0,0.35)", width=6, shape="hv"),
            marker=dict(size=14, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
            meta=dict(kind="pareto", panel="mean"),
        )
    for col in range(1, len(panels) + 1):
        fig.update_xaxes(
            title_text=f"parameters saved (% of {total})", tickformat=".0%", row=1, col=col
        )
    fig.update_yaxes(title_text="test accuracy (%)", tickformat=".0%", row=1, col=1)
    if title is None:
        title = f"Accuracy vs parameters saved: {' + '.join(names)}"
        if df.attrs.get("cancelled"):
            title += " (cancelled: partial results)"
    fig.update_layout(
        title=title, template="plotly_white", hovermode="closest", legend_title_text="series"
    )
    return fig


def image_engine_problem() -> str | None:
    """Why `save_sweep` cannot write a PNG here, or None when kaleido is importable."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "kaleido is not installed (pip install kaleido)"
    return None


def save_sweep(df: pd.DataFrame, prefix: str | Path) -> list[Path]:
    """Write `prefix.csv`, `prefix.html` (plotly.js inlined: the page works offline) and, when
    kaleido is importable and works, `prefix.png`; returns the paths actually written.

    A skipped PNG is logged (logger `mtz_core.sweep`), not raised: the table and the
    interactive page are the results, the picture is a convenience.
    """
    base = Path(prefix)
    if base.suffix.lower() in (".csv", ".html", ".png"):
        base = base.with_suffix("")
    if not base.name:
        raise ValueError(f"prefix {str(prefix)!r} names no file; give e.g. 'results/sweep'")
    base.parent.mkdir(parents=True, exist_ok=True)
    csv, html, png = (base.with_name(base.name + ext) for ext in (".csv", ".html", ".png"))
    df.to_csv(csv, index=False)
    fig = sweep_figure(df)
    fig.write_html(html, include_plotlyjs=True, full_html=True)
    written = [csv, html]
    reason = image_engine_problem()
    if reason is None:
        try:
            panels = len(sweep_tasks(df)) + 1  # 1400 px for the three panels of two tasks
            fig.write_image(png, width=max(1400, 460 * panels), height=520, scale=2)
            written.append(png)
        except Exception as exc:  # kaleido may be present without a working browser engine
            reason = f"kaleido could not render it ({type(exc).__name__}: {exc})"
    if reason is not None:
        log.info("PNG not written: %s", reason)
    return written
