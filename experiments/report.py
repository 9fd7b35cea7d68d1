"""Markdown for docs/results.md: tables, the originals, and the targets met or missed."""

from __future__ import annotations

import json
import platform
import time
from typing import Any

import torch

from mtz_core.training import RETRAIN_CLIP, RETRAIN_LR

from . import originals as orig


class Report:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.parts: list[str] = []
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
            "python -m experiments.paper"
            + (" --quick" if self.quick else "")
            + f" --data-root {args.data_root}"
        )
        self.note(
            f"Made by `{cmd}` in {seconds / 60:.1f} minutes on {torch.get_num_threads()} CPU "
            f"threads ({platform.processor() or platform.machine()}), torch {torch.__version__}; "
            f"seeds: {setup.seeds}, Hessian samples per task: {setup.calib}, retraining: batch "
            f"32 per task, plain SGD lr {RETRAIN_LR:g} (no momentum), gradient norm clipped at "
            f"{RETRAIN_CLIP:g}."
        )

    def text(self) -> str:
        head = (
            "# Results: the MTZ paper's experiments, reproduced\n\n"
            "Accuracies are % on each task's held-out test split (mean ± std over seeds). "
            '`saved_fraction` = (a + b − zipped) / (a + b). "A zipped": every listed layer '
            'zipped with no retraining; "retrained": zipped layer by layer with joint '
            'retraining after each layer (the method). "none (retrain only)" retrains the '
            "unzipped pair for the same iterations: what retraining alone adds.\n"
        )
        return head + "\n" + "\n".join(self.parts)
