"""The evidence for the default damping: full zip of the different-task LeNet-300-100 pairs
(MNIST 0–4 vs 5–9, 3 seed pairs), mean test accuracy before retraining, MTZ against MTZ pairs
with plain averaging (and the damping-free baselines), per damping factor.

    python -m experiments.damping_probe --data-root ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import statistics

from . import originals as orig
from .paper import Pair, Setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data/mnist")
    args = parser.parse_args()
    setup = Setup()
    ta = orig.task_for("lenet300", "mnist:0-4", args.data_root)
    tb = orig.task_for("lenet300", "mnist:5-9", args.data_root)
    pairs = [
        Pair(
            orig.get_original("lenet300", ta, s)[0],
            orig.get_original("lenet300", tb, s)[0],
            ta,
            tb,
            setup,
            s,
        )
        for s in range(setup.seeds)
    ]

    def mean_acc(method: str, damping) -> float:
        accs = []
        for p in pairs:
            _, a, b = p.zip(1.0, method=method, damping=damping)
            accs.append((a + b) / 2)
        return 100 * statistics.mean(accs)

    print("| damping | mtz | mtz-avg | lead (points) |\n|---|---|---|---|")
    for damping in (0.01, 0.1, 1.0, "auto"):
        m, avg = mean_acc("mtz", damping), mean_acc("mtz-avg", damping)
        print(f"| {damping} | {m:.2f} | {avg:.2f} | {m - avg:+.2f} |", flush=True)
    for method in ("euclidean", "random"):
        print(f"| — | {method}: {mean_acc(method, 1.0):.2f} | | |", flush=True)


if __name__ == "__main__":
    main()
