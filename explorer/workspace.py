"""One user's work: the loaded models, the zip in progress, the background job, the points.

`Workspace` is plain Python (no Streamlit), so its logic is tested directly; `explorer.state`
keeps one per browser session in `st.session_state`, which is what keeps the users of one
server (a classroom) apart. Demos come from a shared read-only cache and are never
modified: the engine copies weights into each `ZipSession`.

Background jobs run in a worker thread and only touch the objects they were given; their
results are applied to the workspace on the page's own thread (`collect`), the next time the
page runs after the job ended.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mtz_core.training import RETRAIN_LR

from .jobs import Job, SubJob
from .loaded import LoadedModels
from .tuning import RUN_BUTTON, TunedPlan, TuneRequest, check_tune, points_text, run_tune
from .zipper import (
    CostView,
    ZipSettings,
    ZipState,
    acc_columns,
    check_retrain_options,
    default_plan,
    point_row,
    settings_refusal,
)

__all__ = ["Workspace", "Flash", "BusyError", "RESULT_PAGES"]

#: the pages (file names) that show the outcome of a job that leaves the zip alone (by kind);
#: the other kinds' outcomes show on every page while their models and zip are unchanged
RESULT_PAGES: dict[str, tuple[str, ...]] = {
    "plan": ("costs", "tradeoff"),
    "sweep": ("tradeoff",),
    "tune": ("tradeoff",),
}


class BusyError(RuntimeError):
    """Another job is running; the action would disturb it."""


@dataclass
class Pending:
    """An action waiting for a yes because it discards work: `what` it does ("load the demo
    digits-conv"), what it would `lose`, and the `action` itself."""

    what: str
    lose: str
    action: Callable[[], None]


def models_key(loaded: LoadedModels) -> tuple[Any, ...]:
    """Names the same models across loads (a demo loaded again, the same files uploaded
    again): their title, and each model's source, name and task."""
    return (
        loaded.title,
        tuple(
            (e.get("source"), e.get("name"), t.name)
            for e, t in zip((loaded.models.get(x, {}) for x in loaded.letters), loaded.tasks)
        ),
    )


@dataclass
class Flash:
    area: str
    level: str  # "error" | "warning" | "info" | "success"
    text: str


@dataclass
class Workspace:
    loaded: LoadedModels | None = None
    settings: ZipSettings = field(default_factory=ZipSettings)
    zip: ZipState | None = None
    plan: dict[str, int] = field(default_factory=dict)
    estimates: dict[int, CostView] = field(default_factory=dict)
    job: Job | None = None
    points: list[dict[str, Any]] = field(default_factory=list)
    sweep: pd.DataFrame | None = None
    tuned: TunedPlan | None = None  # the last "best plan within x points" (see `current_tuned`)
    flashes: list[Flash] = field(default_factory=list)
    learn: dict[Any, Any] = field(default_factory=dict)  # the Learn page's computed examples
    cache: dict[Any, Any] = field(default_factory=dict)  # the models' derived data (pages)
    history: list[str] = field(default_factory=list)  # finished jobs, newest last
    last_losses: dict[str, list[tuple[float, ...]]] = field(default_factory=dict)  # by job kind
    #: the Trade-off points and sweep of models worked on before, by `models_key`: loading
    #: them again brings their points back
    shelf: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    #: an action that would discard work, waiting for the user's yes (`ask_before_discarding`)
    pending: Pending | None = None
    #: uploaded files by widget key, kept when the Load page is left (the widget forgets them)
    uploads: dict[str, Any] = field(default_factory=dict)
    #: what was last written by `explorer.autosave` (the context), and a session to restore
    autosaved: Any = None
    #: the models whose uploaded files `explorer.autosave` last wrote beside the session
    autosaved_files: Any = None
    restorable: dict[str, Any] | None = None

    # -- messages ------------------------------------------------------------------------
    def flash(self, area: str, level: str, text: str) -> None:
        self.flashes.append(Flash(area, level, text))

    def take_flashes(self, area: str) -> list[Flash]:
        mine = [f for f in self.flashes if f.area == area]
        self.flashes = [f for f in self.flashes if f.area != area]
        return mine

    # -- jobs ----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.running

    def require_idle(self, what: str) -> None:
        if self.busy:
            raise BusyError(
                f"{self.job.title} is still running; wait for it or cancel it before you {what}"
            )

    def start_job(
        self,
        kind: str,
        title: str,
        target: Callable[[Job], Any],
        apply: Callable[[Job], None] | None = None,
        *,
        keep_partial: bool = False,
    ) -> Job:
        """Start `target` in a worker thread; `apply(job)` runs on the page's thread after it
        ends well (also after a cancel with `keep_partial`, for partial results)."""
        self.require_idle(f"start {title[0].lower() + title[1:]}")
        job = Job(kind, title, target)
        job.apply = apply  # type: ignore[attr-defined]
        job.applied = False  # type: ignore[attr-defined]
        job.keep_partial = keep_partial  # type: ignore[attr-defined]
        self.job = job
        return job.start()

    def collect(self) -> Job | None:
        """Apply a finished job's results (once, on the page's thread); returns the job then."""
        job = self.job
        if job is None or job.running or getattr(job, "applied", True):
            return None
        job.applied = True  # type: ignore[attr-defined]
        apply = getattr(job, "apply", None)
        partial = job.status == "cancelled" and job.keep_partial and job.result is not None
        if (job.status == "done" or partial) and apply is not None:
            try:
                apply(job)
            except Exception as exc:  # noqa: BLE001 - shown, never a traceback
                job.status, job.error = "failed", str(exc)
        if job.status == "done":
            job.message = job.message or f"{job.title}: done in {job.elapsed:.1f} s"
        elif job.status == "cancelled":
            job.message = job.message or f"{job.title}: cancelled. {job.error or ''}".strip()
        else:
            job.message = f"{job.title} failed: {job.error}"
        job.context = self.context()  # type: ignore[attr-defined]
        self.history.append(job.message)
        if job.losses:
            self.last_losses[job.kind] = job.loss_rows()
        return job

    def context(self) -> tuple[Any, ...]:
        """What a job's outcome is about: the models, and the zip as it stands (its object and
        how often it changed). A zip not yet stepped counts as none, so opening a page that
        starts one keeps a fresh outcome (e.g. "Trained the pair") in view."""
        z = self.zip
        changed = z is not None and (z.epoch > 0 or bool(z.records))
        return (id(self.loaded), (id(z), z.epoch) if changed else None)

    def shows(self, job: Job, page: str) -> bool:
        """Whether `job`'s outcome belongs on `page` now: only while the models and the zip are
        as the job left them (a result of other models or another zip misleads), and for the
        jobs that do not change the zip (an evaluated plan, a sweep, a search) only on the pages
        where they are started and read (next to "No layer is zipped yet", "Plan evaluated:
        saves 34.5%" reads as if the zip saved it)."""
        if getattr(job, "context", None) != self.context():
            return False
        pages = RESULT_PAGES.get(job.kind)
        return pages is None or page in pages

    # -- the models ----------------------------------------------------------------------
    @property
    def pair(self) -> LoadedModels | None:
        """The loaded models (their old name, from when there were always two)."""
        return self.loaded

    def set_models(self, loaded: LoadedModels) -> None:
        """Work on other models: the zip and plan of the old ones are dropped (pages ask first:
        `ask_before_discarding`), their Trade-off points and sweep are shelved and come back
        when those models are loaded again. Settings that the new models cannot use (three or
        more refuse some) go back to the defaults."""
        self.require_idle("load other models")
        if self.loaded is not None and (self.points or self.sweep is not None):
            self.shelf[models_key(self.loaded)] = {"points": self.points, "sweep": self.sweep}
        self.loaded = loaded
        self.pending = None
        if loaded.zippable and settings_refusal(loaded, self.settings):
            self.settings = ZipSettings()
        self.zip = None
        self.estimates = {}
        kept = self.shelf.pop(models_key(loaded), {})  # the points made on them before
        self.points = list(kept.get("points", []))
        self.sweep = kept.get("sweep")
        self.tuned = None
        self.cache = {}
        self.plan = (
            default_plan([(g["group"], *loaded.widths(g)) for g in loaded.groups])
            if loaded.zippable
            else {}
        )

    set_pair = set_models  # the two-model name

    def unsaved_work(self) -> str | None:
        """What loading other models would throw away (the zip in progress: its layers and
        retraining), in words; None when nothing. Trade-off points are not lost: they stay
        on the shelf of their models."""
        z = self.zip
        if z is None or not z.records:
            return None
        n = len(z.records)
        return (
            f"your zip of {self.loaded.title} ({n} {self.loaded.unit_name}{'s' * (n != 1)} "
            f"zipped, saves {z.saved_fraction():.1%})"
        )

    def ask_before_discarding(self, what: str, action: Callable[[], None]) -> bool:
        """Run `action` now if it loses no work; otherwise keep it until the user confirms
        (`confirm_pending`) or drops it (`drop_pending`). Returns whether it ran."""
        lost = self.unsaved_work()
        if lost is None:
            action()
            return True
        self.pending = Pending(what, lost, action)
        return False

    def confirm_pending(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.action()

    def drop_pending(self) -> None:
        self.pending = None

    def require_models(self) -> LoadedModels:
        if self.loaded is None:
            raise ValueError("load the models first (page Load models)")
        return self.loaded

    require_pair = require_models

    # -- the zip -------------------------------------------------------------------------
    def ensure_zip(self) -> ZipState:
        """The zip in progress, started (with the original accuracy measured) if needed."""
        if self.zip is None:
            loaded = self.require_models()
            if not loaded.zippable:
                raise ValueError(f"these models cannot be zipped: {loaded.reason}")
            self.zip = ZipState(loaded, self.settings)
        return self.zip

    def change_settings(self, settings: ZipSettings) -> None:
        """New zip settings start a new zip (the old one is dropped)."""
        self.require_idle("change the zip settings")
        from mtz_core import ZipConfig

        ZipConfig(**settings.config())  # validates before anything is dropped
        if self.loaded is not None and self.loaded.zippable:
            refused = settings_refusal(self.loaded, settings)
            if refused:
                raise ValueError(refused)
        self.settings = settings
        self.zip = None
        self.tuned = None  # computed with the old settings

    def step(self, k: int) -> dict[str, Any]:
        self.require_idle("zip a layer")
        state = self.ensure_zip()
        event = state.step(k)
        self.points.append(state.point())
        return event

    def undo(self) -> str:
        self.require_idle("undo")
        state = self.ensure_zip()
        return state.undo()

    def reset(self) -> None:
        self.require_idle("reset")
        if self.zip is not None:
            self.zip.reset()

    def set_plan(self, name: str, k: int) -> None:
        self.plan[name] = int(k)

    def adopt_rebuilt(self, rebuilt: Any, recipe: dict[str, Any]) -> None:
        """Make a zip rebuilt from `recipe` (Keep's upload, a restored session) the current
        one: its settings, and each layer's planned share at the recipe's pair count."""
        self.settings = rebuilt.settings
        self.zip = rebuilt
        for layer in recipe["layers"]:
            self.set_plan(layer["name"], len(layer["pairs"]))

    def plan_list(self) -> list[int]:
        loaded = self.require_models()
        return [int(self.plan.get(g["group"], 0)) for g in loaded.groups]

    # -- jobs on the zip -----------------------------------------------------------------
    def start_retrain(self, *, iterations: int, lr: float, batch_size: int, device: str) -> Job:
        self.require_idle("retrain")
        state = self.ensure_zip()
        if not state.records:
            raise ValueError("zip a layer first: retraining recovers the accuracy a zip costs")
        check_retrain_options(iterations, lr, batch_size, device)

        def work(job: Job) -> dict[str, Any]:
            return state.retrain(
                job, iterations=iterations, lr=lr, batch_size=batch_size, device=device
            )

        def apply(job: Job) -> None:
            if self.zip is state:
                self.points.append(state.point())
                job.message = (
                    f"Retrained {iterations} iterations in {job.elapsed:.1f} s: "
                    + accuracy_text(state)
                )

        return self.start_job("retrain", f"Retraining ({iterations} iterations)", work, apply)

    def start_run_remaining(self) -> Job:
        self.require_idle("zip the remaining layers")
        state = self.ensure_zip()
        if state.done:
            raise ValueError("every hidden layer is zipped already")
        plan = dict(self.plan)

        def apply(job: Job) -> None:
            if self.zip is state:
                self.points.append(state.point())

        return self.start_job(
            "zip", "Zipping the remaining layers", lambda job: state.run_remaining(job, plan), apply
        )

    def start_evaluate_plan(self, *, retrain_iterations: int = 0, lr: float = RETRAIN_LR) -> Job:
        """Zip a copy of the models with the planned shares (retraining after each layer if
        asked), measure it, and keep its cost matrices as estimates for the layers ahead."""
        self.require_idle("evaluate a plan")
        loaded = self.require_models()
        if not loaded.zippable:
            raise ValueError(f"these models cannot be zipped: {loaded.reason}")
        if retrain_iterations:
            check_retrain_options(retrain_iterations, lr, 32, "cpu")
        settings = self.settings
        plan = dict(self.plan)

        def work(job: Job) -> tuple[ZipState, dict[int, CostView]]:
            state = ZipState(loaded, settings)
            names = [n for n, *_ in state.layers]
            per_layer = 1 + (retrain_iterations or 0)
            total = per_layer * len(names)
            previews = {}
            for i, name in enumerate(names):
                job.check()
                job.progress(i * per_layer, total, f"zipping {name}")
                previews[i] = state.next_view("estimate")  # every share, as this zip sees it
                state.step(int(plan.get(name, 0)))
                if retrain_iterations:
                    state.retrain(
                        SubJob(job, i * per_layer + 1, total, i * retrain_iterations),
                        iterations=retrain_iterations,
                        lr=lr,
                        device="cpu",
                    )
            job.progress(total, total, "measured")
            ks = [plan.get(n, 0) for n in names]
            views = {}
            for rec in state.records:
                earlier = ", ".join(f"{n} {k}" for n, k in zip(names[: rec.index], ks))
                view = previews[rec.index]
                view.note = "estimate from an evaluated plan" + (
                    f" with earlier {loaded.unit_name}s at {earlier}" if earlier else ""
                )
                views[rec.index] = view
            return state, views

        def apply(job: Job) -> None:
            state, views = job.result
            if self.loaded is not loaded:
                return
            self.estimates.update(views)
            its = retrain_iterations * len(state.layers)
            self.points.append(
                point_row(
                    "yours (evaluated plan)",
                    settings.method,
                    state.label() if not its else f"{state.label()} · retrain {its} its",
                    state.accuracy,
                    state.saved_fraction(),
                    its,
                    shares=state.shares(),
                )
            )
            job.message = (
                f"Plan evaluated: saves {state.saved_fraction():.1%} of the parameters; "
                + accuracy_text(state)
            )

        return self.start_job("plan", "Evaluating the plan", work, apply)

    def start_sweep(self, **kwargs: Any) -> Job:
        self.require_idle("run a sweep")
        loaded = self.require_models()
        if not loaded.zippable:
            raise ValueError(f"these models cannot be zipped: {loaded.reason}")
        from .sweeping import check_sweep, run_sweep

        check_sweep(
            loaded,
            kwargs.get("shares", ()),
            kwargs.get("methods", ()),
            kwargs.get("retrain_iterations", 0),
            kwargs.get("lr", RETRAIN_LR),
        )

        def work(job: Job):
            return run_sweep(job, loaded, self.settings, **kwargs)

        def apply(job: Job) -> None:
            if self.loaded is not loaded:
                return
            df = job.result
            self.sweep = (
                df if self.sweep is None else pd.concat([self.sweep, df], ignore_index=True)
            )
            if job.status == "done":
                job.message = f"Sweep done: {len(df)} configurations in {job.elapsed:.1f} s"

        return self.start_job("sweep", "Sweep", work, apply, keep_partial=True)

    @property
    def current_tuned(self) -> TunedPlan | None:
        """The last tuned plan, if it was computed for the models and settings in use."""
        tuned = self.tuned
        if tuned is None or not tuned.belongs_to(self.loaded, self.settings):
            return None
        return tuned

    def start_tune(self, request: TuneRequest) -> Job:
        """Find the best plan within `request.max_drop_points` points (`mtz_core.tune_shares`)
        in the background. When it ends (also when cancelled, with the best plan so far) the
        plan's shares go into the per-layer plan and its point onto the Trade-off chart."""
        self.require_idle("find the best plan")
        loaded = self.require_models()
        if not loaded.zippable:
            raise ValueError(f"these models cannot be zipped: {loaded.reason}")
        check_tune(request)
        settings = self.settings

        def apply(job: Job) -> None:
            tuned: TunedPlan = job.result
            if not tuned.belongs_to(self.loaded, self.settings):
                job.message = (
                    "The best plan was found for models or settings that have changed since: "
                    f"it was dropped. Press {RUN_BUTTON} again."
                )
                return
            self.tuned = tuned
            if tuned.found:
                self.plan.update(tuned.ks)
                self.points.append(tuned.point())
                job.message = tuned.message()
            elif not tuned.cancelled:  # the budget admits no share: an error, not a success
                job.status, job.error = "failed", tuned.problem()
            else:
                job.message = tuned.problem()

        title = f"Finding the best plan within {points_text(request.max_drop_points)}"
        return self.start_job(
            "tune",
            title,
            lambda job: run_tune(job, loaded, settings, request),
            apply,
            keep_partial=True,
        )

    # -- the trade-off table -------------------------------------------------------------
    def points_frame(self) -> pd.DataFrame:
        """Every evaluated configuration: the sweep's rows and the user's own points."""
        frames = []
        if self.sweep is not None and len(self.sweep):
            sw = self.sweep.copy()
            sw["series"] = sw["method"].astype(str)
            if "label" not in sw.columns:
                sw["label"] = [
                    f"{m} share {s}" + (f" · retrain {r}" if r else "")
                    for m, s, r in zip(sw["method"], sw["share"], sw["retrain_iterations"])
                ]
            frames.append(sw)
        sweep_has_original = self.sweep is not None and (self.sweep["method"] == "original").any()
        if not sweep_has_original and self.zip is not None:
            base = self.zip.baseline
            if base is not None:
                names = joined(self.zip.pair.labels)
                frames.append(
                    pd.DataFrame(
                        [point_row("original", "original", f"{names} unzipped", base, 0.0, 0)]
                    )
                )
        if self.points:
            frames.append(pd.DataFrame(self.points))
        if not frames:
            n = self.loaded.n_tasks if self.loaded is not None else 2
            return pd.DataFrame(
                columns=["series", "method", "label", *acc_columns(n), "mean_acc", "saved_fraction"]
            )
        df = pd.concat(frames, ignore_index=True)
        if "shares" in df.columns:
            df["shares"] = df["shares"].map(lambda v: v if isinstance(v, str) else str(v))
        return df


def accuracy_text(state: ZipState) -> str:
    """'task A 97.0%, task B 98.1%, task C 99.0%'."""
    return ", ".join(f"task {x} {a:.1%}" for x, a in zip(state.pair.labels, state.accuracy))


def joined(words: Sequence[str]) -> str:
    """'A and B', 'A, B and C'."""
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
