"""The evidence for retraining's default optimizer settings: one same-task LeNet-300-100 pair
(MNIST) zipped fully without retraining, then retrained jointly for 3 × 200 iterations (batch 32
per task) at several learning rates and momenta; test accuracy after each 200.

    python -m experiments.retraining_probe --data-root ../shared/data/mnist

`experiments.paper` makes the same table into docs/results.md.
"""

from __future__ import annotations

import argparse

from . import originals as orig
from .paper import Pair, Setup, optimizer_table
from .report import Report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data/mnist")
    args = parser.parse_args()
    task = orig.task_for("lenet300", "mnist", args.data_root)
    a, b = (orig.get_original("lenet300", task, s)[0] for s in (0, 1))
    optimizer_table(Report(quick=False), Pair(a, b, task, task, Setup(), seed=0))


if __name__ == "__main__":
    main()
