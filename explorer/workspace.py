"""One user's work: the loaded pair, the zip in progress, the background job, the points.

`Workspace` is plain Python (no Streamlit), so its logic is tested directly; `explorer.state`
keeps one per browser session in `st.session_state`, which is what keeps the users of one
server (a classroom) apart. Demo pairs come from a shared read-only cache and are never
modified: the engine copies weights into each `ZipSession`.

Background jobs run in a worker thread and only touch the objects they were given; their
results are applied to the workspace on the page's own thread (`collect`), the next time the
page runs after the job ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mtz_core.training import RETRAIN_LR

from .jobs import Job, SubJob
from .pair import LoadedPair
from .zipper import CostView, ZipSettings, ZipState, check_retrain_options, default_plan, point_row

__all__ = ["Workspace", "Flash", "BusyError"]


class BusyError(RuntimeError):
    """Another job is running; the action would disturb it."""


@dataclass
class Flash:
    area: str
    level: str  # "error" | "warning" | "info" | "success"
    text: str


@dataclass
class Workspace:
    pair: LoadedPair | None = None
    settings: ZipSettings = field(default_factory=ZipSettings)
    zip: ZipState | None = None
    plan: dict[str, int] = field(default_factory=dict)
    estimates: dict[int, CostView] = field(default_factory=dict)
    job: Job | None = None
    points: list[dict[str, Any]] = field(default_factory=list)
    sweep: pd.DataFrame | None = None
    flashes: list[Flash] = field(default_factory=list)
    learn: dict[Any, Any] = field(default_factory=dict)  # the Learn page's computed examples
    cache: dict[Any, Any] = field(default_factory=dict)  # per-pair derived data (pages)
    history: list[str] = field(default_factory=list)  # finished jobs, newest last
    last_losses: dict[str, list[tuple[float, ...]]] = field(default_factory=dict)  # by job kind

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
        self.history.append(job.message)
        if job.losses:
            self.last_losses[job.kind] = job.loss_rows()
        return job

    # -- the pair ------------------------------------------------------------------------
    def set_pair(self, pair: LoadedPair) -> None:
        """Work on another pair (the zip, plan, points and sweep of the old one are dropped)."""
        self.require_idle("load other models")
        self.pair = pair
        self.zip = None
        self.estimates = {}
        self.points = []
        self.sweep = None
        self.cache = {}
        self.plan = (
            default_plan([(g["group"], g["width A"], g["width B"]) for g in pair.groups])
            if pair.zippable
            else {}
        )

    def require_pair(self) -> LoadedPair:
        if self.pair is None:
            raise ValueError("load a pair of models first (page Load models)")
        return self.pair

    # -- the zip -------------------------------------------------------------------------
    def ensure_zip(self) -> ZipState:
        """The zip in progress, started (with the original accuracy measured) if needed."""
        if self.zip is None:
            pair = self.require_pair()
            if not pair.zippable:
                raise ValueError(f"this pair cannot be zipped: {pair.reason}")
            self.zip = ZipState(pair, self.settings)
        return self.zip

    def change_settings(self, settings: ZipSettings) -> None:
        """New zip settings start a new zip (the old one is dropped)."""
        self.require_idle("change the zip settings")
        from mtz_core import ZipConfig

        ZipConfig(**settings.config())  # validates before anything is dropped
        self.settings = settings
        self.zip = None

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

    def plan_list(self) -> list[int]:
        pair = self.require_pair()
        return [int(self.plan.get(g["group"], 0)) for g in pair.groups]

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
                a, b = job.result["acc_a"], job.result["acc_b"]
                job.message = (
                    f"Retrained {iterations} iterations in {job.elapsed:.1f} s: "
                    f"task A {a:.1%}, task B {b:.1%}"
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
        """Zip a copy of the pair with the planned shares (retraining after each layer if
        asked), measure it, and keep its cost matrices as estimates for the layers ahead."""
        self.require_idle("evaluate a plan")
        pair = self.require_pair()
        if not pair.zippable:
            raise ValueError(f"this pair cannot be zipped: {pair.reason}")
        if retrain_iterations:
            check_retrain_options(retrain_iterations, lr, 32, "cpu")
        settings = self.settings
        plan = dict(self.plan)

        def work(job: Job) -> tuple[ZipState, dict[int, CostView]]:
            state = ZipState(pair, settings)
            names = [n for n, _, _ in state.layers]
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
                    f" with earlier {pair.unit_name}s at {earlier}" if earlier else ""
                )
                views[rec.index] = view
            return state, views

        def apply(job: Job) -> None:
            state, views = job.result
            if self.pair is not pair:
                return
            self.estimates.update(views)
            its = retrain_iterations * len(state.layers)
            self.points.append(
                point_row(
                    "yours (tuned plan)",
                    settings.method,
                    state.label() if not its else f"{state.label()} · retrain {its} its",
                    state.accuracy,
                    state.saved_fraction(),
                    its,
                    shares=state.shares(),
                )
            )
            a, b = state.accuracy
            job.message = (
                f"Plan evaluated: saves {state.saved_fraction():.1%} of the parameters; "
                f"task A {a:.1%}, task B {b:.1%}"
            )

        return self.start_job("plan", "Evaluating the plan", work, apply)

    def start_sweep(self, **kwargs: Any) -> Job:
        self.require_idle("run a sweep")
        pair = self.require_pair()
        if not pair.zippable:
            raise ValueError(f"this pair cannot be zipped: {pair.reason}")
        from .sweeping import check_sweep, run_sweep

        check_sweep(
            pair,
            kwargs.get("shares", ()),
            kwargs.get("methods", ()),
            kwargs.get("retrain_iterations", 0),
            kwargs.get("lr", RETRAIN_LR),
        )

        def work(job: Job):
            return run_sweep(job, pair, self.settings, **kwargs)

        def apply(job: Job) -> None:
            if self.pair is not pair:
                return
            df = job.result
            self.sweep = (
                df if self.sweep is None else pd.concat([self.sweep, df], ignore_index=True)
            )
            if job.status == "done":
                job.message = f"Sweep done: {len(df)} configurations in {job.elapsed:.1f} s"

        return self.start_job("sweep", "Sweep", work, apply, keep_partial=True)

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
                frames.append(
                    pd.DataFrame(
                        [point_row("original", "original", "A and B unzipped", base, 0.0, 0)]
                    )
                )
        if self.points:
            frames.append(pd.DataFrame(self.points))
        if not frames:
            return pd.DataFrame(
                columns=[
                    "series",
                    "method",
                    "label",
                    "acc_a",
                    "acc_b",
                    "mean_acc",
                    "saved_fraction",
                ]
            )
        df = pd.concat(frames, ignore_index=True)
        if "shares" in df.columns:
            df["shares"] = df["shares"].map(lambda v: v if isinstance(v, str) else str(v))
        return df
