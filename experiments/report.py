"""Markdown for docs/results.md: tables, the originals, and the targets met or missed."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mtz_core.config import ZipConfig
from mtz_core.training import RETRAIN_CLIP, RETRAIN_LR

from . import originals as orig

ROOT = Path(__file__).resolve().parents[1]


def page_arguments(doc: str, page: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments every results page takes: --data-root, --out (default docs/`page`) and
    --quick (CI's reduced run)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--out", default=str(ROOT / "docs" / page))
    parser.add_argument(
        "--quick", action="store_true", help="CI's reduced run (1 seed, small sizes)"
    )
    torch.set_num_threads(torch.get_num_threads())
    return parser.parse_args(argv)


class Report:
    def __init__(
        self,
        quick: bool,
        *,
        module: str = "experiments.paper",
        title: str = "Results: the MTZ paper's experiments, reproduced",
        head: str | None = None,
    ) -> None:
        self.quick, self.module, self.title = quick, module, title
        self.head = head  # the page's opening paragraph (None: the paper page's)
        self.parts: list[str] = []
        self.choices: list[tuple[str, Any, Any, str]] = []
        self._since = time.perf_counter()

    def table(self, title: str, headers: list[str], rows: list[list[Any]]) -> None:
        lines = [f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        now = time.perf_counter()
        lines += ["", f"*(this table: {now - self._since:.0f} s)*"]
        self._since = now
        self.parts.append("\n".join(lines) + "\n")
        print(self.parts[-1], flush=True)

    def note(self, text: str) -> None:
        self.parts.append(text + "\n")

    def choice(
        self,
        what: str,
        default: Any,
        scores: dict[Any, float],
        rule: str,
        *,
        prefer: Callable[[Any], Any],
        why: str,
        margin: float = 1e-3,
    ) -> Any:
        """Choose a default on the validation split. Values within `margin` of the best score
        (0.1 points of accuracy: below what one more seed moves) are ties; among them the code's
        default stands if it is one, else the first by `prefer` (the safer value: `why` says
        which). Said under its table and gathered in `choices_summary`; a choice that differs
        from the code's default is flagged."""
        top = max(scores.values())
        ties = [v for v in scores if top - scores[v] < margin]
        chosen = default if any(_same(default, v) for v in ties) else min(ties, key=prefer)
        self.choices.append((what, default, chosen, rule))
        detail = ", ".join(f"{k}: {100 * v:.2f}" for k, v in scores.items())
        verdict = (
            "the project's default"
            if _same(default, chosen)
            else f"**differs from the default {default}**"
        )
        self.note(
            f"Chosen on the validation split: {what} = **{chosen}** ({rule}; mean validation "
            f"accuracy % — {detail}; within {100 * margin:g} points of the best counts as a "
            f"tie, ties go to the default, else to {why}); {verdict}."
        )
        return chosen

    def choices_summary(self) -> None:
        lines = [
            "### Defaults and the split that chose them",
            "",
            "| default | value in the code | chosen on the validation split | by |",
            "|---|---|---|---|",
        ]
        for what, default, chosen, rule in self.choices:
            mark = "" if _same(default, chosen) else " (differs)"
            lines.append(f"| {what} | {default} | {chosen}{mark} | {rule} |")
        lines += [
            "",
            "The validation split is 10 % of each class of the training data, carved before any "
            "label rule and never trained on (the originals included); the test split only "
            'reports. `damping="auto"` chooses per layer on the fifth of the calibration '
            "samples it holds out of the Hessians.",
        ]
        self.note("\n".join(lines) + "\n")

    def originals(self, setup) -> None:
        if self.quick:
            self.note(
                "*Quick run (CI): originals trained briefly, 1 seed, reduced sizes — the "
                "numbers only show that the pipeline runs.*"
            )
            return
        rows, total = [], 0.0
        for arch, task, seeds in orig.NEEDED:
            infos = []
            for seed in seeds:
                stem = f"{arch}-{task.replace(':', '_')}-seed{seed}"
                path = orig.CACHE / f"{stem}.json"
                if path.exists():
                    infos.append(json.loads(path.read_text()))
            if infos:
                accs = [100 * i["test_accuracy"] for i in infos]
                secs = sum(i["train_seconds"] for i in infos)
                total += secs
                rows.append(
                    [
                        arch,
                        task,
                        len(infos),
                        f"{min(accs):.2f}–{max(accs):.2f}",
                        f"{infos[0]['iterations']:,}",
                        f"{secs:.0f}",
                    ]
                )
        self.table(
            "The originals (trained once, cached in cache/originals/)",
            [
                "arch",
                "task",
                "models",
                "test accuracy %",
                "iterations (batch 128)",
                "training s (all models)",
            ],
            rows,
        )
        self.note(
            f"Training all {sum(len(s) for *_, s in orig.NEEDED)} originals once "
            f"(`python -m experiments.originals`) took {total / 3600:.1f} hours of 2 CPU cores "
            "shared with other work (SGD, momentum 0.9, batch 128, cosine-decayed lr); every "
            "later run reads them from the cache. LeNet-300-100 reaches about 98.3% on MNIST in "
            "the paper."
        )

    def targets(self, same, diff, base, retrain_its: int) -> None:
        full = 1.0
        lines = [
            "### Targets (project defaults, LeNet-300-100, every hidden layer zipped fully)",
            "",
        ]
        if full in same:
            before, after = same[full]["before"], same[full]["retrained"]
            loss = max(100 * (b - a) for b, a in zip(before, after))
            ok = loss <= 0.5
            lines.append(
                f"- same-task pair, accuracy lost per task after {retrain_its} retraining "
                f"iterations per layer: at most {loss:.2f} points (target ≤ 0.5): "
                f"{'met' if ok else 'not met'}"
            )
        for label, table in (("same-task", same), ("different-task", diff)):
            ratio, reached = table.get(full, {}).get("ratio"), table.get(full, {}).get("reached")
            if ratio is not None:
                bound = "" if reached else "at least "
                lines.append(
                    f"- {label} pair, retraining after a full zip vs training a fresh network of "
                    f"the zipped architecture to the same mean accuracy: {bound}{ratio:.1f}× "
                    f"fewer samples (target ≥ 17.8×): {'met' if ratio >= 17.8 else 'not met'}"
                )
        if (full, "mtz") in base:
            mtz_b, mtz_a = base[full, "mtz"]
            others = {m: base[full, m] for m in ("mtz-avg", "euclidean", "random")}
            best_before = max(v[0] for v in others.values())
            best_after = max(v[1] for v in others.values())
            gap_before = 100 * (mtz_b - best_before)
            gap_after = 100 * (mtz_a - best_after)
            lines.append(
                f"- different-task pair before retraining: mtz {100 * mtz_b:.2f}% vs best "
                f"baseline {100 * best_before:.2f}% ({gap_before:+.2f} points; target ≥ +1): "
                f"{'met' if gap_before >= 1 else 'not met'}"
            )
            lines.append(
                f"- different-task pair after retraining: mtz {100 * mtz_a:.2f}% vs best "
                f"baseline {100 * best_after:.2f}% ({gap_after:+.2f} points; target ≥ −0.2): "
                f"{'met' if gap_after >= -0.2 else 'not met'}"
            )
        self.note("\n".join(lines) + "\n")

    def finish(self, seconds: float, args, setup) -> None:
        cmd = (
            f"python -m {self.module}"
            + (" --quick" if self.quick else "")
            + f" --data-root {args.data_root}"
        )
        self.note(
            f"Made by `{cmd}` in {seconds / 60:.1f} minutes on {torch.get_num_threads()} CPU "
            f"threads ({platform.processor() or platform.machine()}), torch {torch.__version__}; "
            f"seeds: {setup.seeds}, Hessian samples per task: {setup.calib}, retraining: batch "
            f"32 per task, plain SGD lr {RETRAIN_LR:g} (no momentum), gradient norm clipped at "
            f"{RETRAIN_CLIP:g}; damping {ZipConfig.default_damping():g}."
        )

    def write(self, args: argparse.Namespace, setup, started: float) -> None:
        """The page's last note (`finish`), written to `args.out` and printed."""
        self.finish(time.perf_counter() - started, args, setup)
        Path(args.out).write_text(self.text())
        print(self.text())

    def text(self) -> str:
        if self.head is not None:
            return f"# {self.title}\n\n{self.head}\n\n" + "\n".join(self.parts)
        head = (
            f"# {self.title}\n\n"
            "Accuracies are % on each task's held-out test split (mean ± std over seeds) unless "
            "a column says val: the validation split, on which every default below was chosen. "
            '`saved_fraction` = (a + b − zipped) / (a + b). "A zipped": every listed layer '
            'zipped with no retraining; "retrained": zipped layer by layer with joint '
            'retraining after each layer (the method). "none (retrain only)" retrains the '
            "unzipped pair for the same iterations: what retraining alone adds.\n"
        )
        return head + "\n" + "\n".join(self.parts)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
    return a == b
