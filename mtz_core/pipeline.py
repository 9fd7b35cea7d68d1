"""`zip_models`: the one-call front door — zip every hidden layer, retraining between layers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from . import resume
from .config import ZipConfig
from .matching import resolve_plan, validate_tuples
from .progress import CancelToken, ProgressCallback, ZipCancelled
from .records import LayerRecord, ZipResult
from .session import ZipSession
from .training import RETRAIN_LR

__all__ = ["zip_models", "resolve_iterations"]


def resolve_iterations(iterations: Any, names: Sequence[str]) -> dict[str, int]:
    """Retraining iterations per layer from an int (every layer), a list (in layer order) or a
    dict by layer name (missing layers: 0)."""

    def check(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"retrain_iterations{where} must be an int >= 0, got {value!r}")
        return int(value)

    if isinstance(iterations, Mapping):
        unknown = sorted(set(iterations) - set(names))
        if unknown:
            raise ValueError(f"retrain_iterations names unknown layers {unknown}; layers: {names}")
        return {n: check(iterations.get(n, 0), f"[{n!r}]") for n in names}
    if isinstance(iterations, (list, tuple)):
        if len(iterations) != len(names):
            raise ValueError(
                f"retrain_iterations has {len(iterations)} entries for {len(names)} hidden "
                f"layers {names}"
            )
        return {n: check(v, f"[{i}]") for i, (n, v) in enumerate(zip(names, iterations))}
    value = check(iterations, "")
    return dict.fromkeys(names, value)


def zip_models(
    model_a: nn.Module,
    model_b: nn.Module,
    data_a: Any,
    data_b: Any,
    *,
    share: Any = None,
    k: Any = None,
    pairs: Mapping[str, Any] | None = None,
    method: str = "mtz",
    matching: str = "greedy",
    hessian: str = "exact",
    flatten_hessian: str = "auto",
    damping: float | str | None = None,
    seed: int = 0,
    batch_norm: str = "fold",
    recalibrate: bool = False,
    within_model: bool = False,
    output_weighted: bool = False,
    zipit_alpha: float = ZipConfig.zipit_alpha,
    zipit_beta: float = ZipConfig.zipit_beta,
    device: Any = None,
    progress: ProgressCallback | None = None,
    retrain_iterations: Any = 0,
    train_a: Any = None,
    train_b: Any = None,
    lr: float = RETRAIN_LR,
    optimizer: str = "sgd",
    heldout_a: Any = None,
    heldout_b: Any = None,
    after_step: Callable[[ZipSession, LayerRecord], None] | None = None,
    cancel: CancelToken | None = None,
    checkpoint_dir: Any = None,
    checkpoint_every: int = 0,
) -> ZipResult:
    """Zip every hidden layer of two models (bottom-up), retraining after each if asked.

    How much to share, one of: `share`, a fraction in [0, 1] of each layer's narrower side
    whatever its Python type (1 and 1.0 both mean all), or a dict by layer name; `k`, a number
    of pairs (an int for every layer, or a dict by layer name); `pairs`, {layer name: k×2
    array}, which rebuilds a given zip exactly. Missing layers in a dict: 0; nothing given:
    share 1.0. `retrain_iterations`: an int for every layer, a list, or a dict by layer name,
    with `train_a`/`train_b` re-iterable (inputs, labels) batches; the next layer's Hessians
    are computed after that retraining. `heldout_a`/`heldout_b`: data the Hessians never see,
    to measure each layer's error (`LayerRecord.heldout_error`). `device`: None keeps the
    models where they are, "auto" picks CUDA, then MPS, then the CPU. `cancel`: a `CancelToken`
    checked between batches and iterations; when set, `ZipCancelled` is raised (also when it
    arrives between a layer's zip and its retraining). `batch_norm`: "fold" folds batch norm
    into the layers; "keep" keeps every task's own norm after every hidden layer (the merge
    then weighs each task's error by its norm's scale, `mtz_core.scaled`), and `recalibrate`
    re-estimates each zipped layer's norm statistics on the calibration data.
    `within_model` (method "mtz") lets a unit merge with a unit of its own model;
    `method="zipit"` is the ZipIt! baseline with its α and β (`mtz_core.clusters`);
    `output_weighted` ranks MTZ's pairs by a loss-weighted cost (a research option, `ZipConfig`).
    """
    if (heldout_a is None) != (heldout_b is None):
        raise ValueError("give both heldout_a and heldout_b, or neither")
    if any(_iterations_given(retrain_iterations)) and (train_a is None or train_b is None):
        raise ValueError(
            "retrain_iterations > 0 needs train_a and train_b ((inputs, labels) batches)"
        )
    return zip_many(
        [model_a, model_b],
        [data_a, data_b],
        share=share,
        k=k,
        pairs=pairs,
        method=method,
        matching=matching,
        hessian=hessian,
        flatten_hessian=flatten_hessian,
        damping=damping,
        seed=seed,
        batch_norm=batch_norm,
        recalibrate=recalibrate,
        within_model=within_model,
        output_weighted=output_weighted,
        zipit_alpha=zipit_alpha,
        zipit_beta=zipit_beta,
        device=device,
        progress=progress,
        retrain_iterations=retrain_iterations,
        trains=None if train_a is None else [train_a, train_b],
        lr=lr,
        optimizer=optimizer,
        heldout=None if heldout_a is None else [heldout_a, heldout_b],
        after_step=after_step,
        cancel=cancel,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
    )


def _iterations_given(retrain_iterations: Any) -> list[bool]:
    """Whether any retraining was asked for (before the layer names are known)."""
    if isinstance(retrain_iterations, Mapping):
        return [bool(v) for v in retrain_iterations.values()]
    if isinstance(retrain_iterations, (list, tuple)):
        return [bool(v) for v in retrain_iterations]
    return [bool(retrain_iterations)]


def zip_many(
    models: Sequence[nn.Module],
    data: Sequence[Any],
    *,
    share: Any = None,
    k: Any = None,
    pairs: Mapping[str, Any] | None = None,
    method: str = "mtz",
    matching: str = "greedy",
    hessian: str = "exact",
    flatten_hessian: str = "auto",
    damping: float | str | None = None,
    seed: int = 0,
    batch_norm: str = "fold",
    recalibrate: bool = False,
    within_model: bool = False,
    output_weighted: bool = False,
    zipit_alpha: float = ZipConfig.zipit_alpha,
    zipit_beta: float = ZipConfig.zipit_beta,
    subsets: bool = False,
    device: Any = None,
    progress: ProgressCallback | None = None,
    retrain_iterations: Any = 0,
    trains: Sequence[Any] | None = None,
    lr: float = RETRAIN_LR,
    optimizer: str = "sgd",
    heldout: Sequence[Any] | None = None,
    after_step: Callable[[ZipSession, LayerRecord], None] | None = None,
    cancel: CancelToken | None = None,
    checkpoint_dir: Any = None,
    checkpoint_every: int = 0,
) -> ZipResult:
    """Zip T ≥ 2 models of one architecture, each trained for its own task, into one network
    (`ZipSession.many`): a shared unit is shared by all T tasks. The arguments mean what they
    mean for `zip_models` (its two-model case), with one entry per model in `data`, `trains`
    and `heldout`; a share is a fraction of the narrowest model's units; `pairs` are k × T.

    `subsets=True` is the paper's scheme: model t's units may join any unit of models 0 … t−1,
    shared or one model's own, so units are shared by subsets of the tasks (`mtz_core.subsets`;
    each stage makes the same number of merges, k or the share of the narrowest model).

    `checkpoint_dir` (a folder, or a `mtz_core.resume.Checkpointer`): the run's state is written
    there after every zipped group and, with `checkpoint_every` = N, every N retraining
    iterations; called again with the same arguments, the run resumes from it and ends as an
    uninterrupted one would (`mtz_core.resume`)."""
    config = ZipConfig(
        method=method,
        matching=matching,
        hessian=hessian,
        flatten_hessian=flatten_hessian,
        damping=ZipConfig.default_damping() if damping is None else damping,
        seed=seed,
        batch_norm=batch_norm,
        recalibrate=recalibrate,
        within_model=within_model,
        output_weighted=output_weighted,
        zipit_alpha=zipit_alpha,
        zipit_beta=zipit_beta,
        subsets=subsets,
    )

    def between_layers(session: ZipSession, record: LayerRecord) -> None:
        its = iterations[record.name]
        if its:
            rep = session.retrain(
                *trains,
                iterations=its,
                lr=lr,
                optimizer=optimizer,
                seed=seed + record.index,
            )
            if rep.cancelled:
                raise ZipCancelled(
                    f"cancelled while retraining after layer {record.name!r}; the network keeps "
                    f"the weights of the last completed iteration ({rep.iterations})"
                )
        if after_step is not None:
            after_step(session, record)

    session = ZipSession.many(
        models,
        data,
        config=config,
        device=device,
        progress=progress,
        heldout=heldout,
        cancel=cancel,
    )
    layers = session.hidden_layers
    names = [name for name, *_ in layers]
    iterations = resolve_iterations(retrain_iterations, names)
    if any(iterations.values()) or after_step is not None:
        # only then: a callback makes every step keep a full weight snapshot for undo
        session.after_step = between_layers
    if any(iterations.values()) and (trains is None or len(trains) != len(models)):
        raise ValueError(
            f"retrain_iterations > 0 needs trains: one (inputs, labels) source per model "
            f"({len(models)})"
        )
    ck = None
    if checkpoint_dir is not None:  # restores a saved state of this run into the session
        settings = dict(config=config, share=share, k=k, pairs=pairs, iterations=iterations)
        settings.update(lr=lr, optimizer=optimizer, models=len(models))
        sources = [*data, *(trains or ()), *(heldout or ())]
        ck = resume.begin(
            checkpoint_dir, checkpoint_every, session, settings, models, data, sources
        )
    with resume.activate(ck):
        if pairs is not None:
            if share is not None or k is not None:
                raise ValueError("pass pairs= alone, without share= or k=")
            if not isinstance(pairs, Mapping):
                raise TypeError(
                    f"pairs must be a dict {{layer name: k×2 array}}, got {type(pairs).__name__}"
                )
            unknown = sorted(set(pairs) - set(names))
            if unknown:
                raise ValueError(f"pairs names unknown layers {unknown}; the layers are {names}")
            t = len(models)
            checked = {
                name: validate_tuples(pairs.get(name, np.zeros((0, t), np.int64)), widths, name)
                for name, *widths in layers
            }
            for name in names[len(session.records) :]:  # all, unless resumed
                session.step(pairs=checked[name])
            return session.result()
        # a share is a fraction of the narrowest model's units
        plan = layers if len(models) == 2 else [(n, min(w), min(w)) for n, *w in layers]
        return session.run(resolve_plan(share, k, plan))
