"""The evidence for retraining's default optimizer settings: one same-task LeNet-300-100 pair
(MNIST, seeds 0 and 1) zipped fully without retraining, then retrained jointly for 3 × 200
iterations (batch 32 per task) at several learning rates and momenta; test accuracy after each
200.

    python -m experiments.retraining_probe --data-root ../shared/data/mnist
"""

from __future__ import annotations

import argparse

from mtz_core import evaluate_zipped, retrain, zip_models

from . import originals as orig
from .paper import Pair, Setup

SETTINGS = ((0.01, 0.9), (0.01, 0.0), (0.003, 0.9), (0.001, 0.9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data/mnist")
    args = parser.parse_args()
    task = orig.task_for("lenet300", "mnist", args.data_root)
    a, b = (orig.get_original("lenet300", task, s)[0] for s in (0, 1))
    pair = Pair(a, b, task, task, Setup(), seed=0)
    zipped = zip_models(a, b, *pair.calib(), share=1.0).model
    test = pair.test()

    def accuracy(net) -> str:
        sa, sb = evaluate_zipped(net, *test)
        return f"{100 * sa.accuracy:.2f} / {100 * sb.accuracy:.2f}"

    print("| lr | momentum | after 200 | after 400 | after 600 | final training loss A / B |")
    print("|---|---|---|---|---|---|")
    print(f"| — | — | zipped, not retrained: {accuracy(zipped)} | | | |")
    for lr, momentum in SETTINGS:
        net, (train_a, train_b), cells = zipped.clone(), pair.train(0), []
        for k in range(3):
            report = retrain(
                net, train_a, train_b, iterations=200, lr=lr, momentum=momentum, seed=k
            )
            cells.append(accuracy(net))
        loss = " / ".join(f"{x:.3f}" for x in report.final_losses())
        print(f"| {lr:g} | {momentum:g} | " + " | ".join(cells) + f" | {loss} |", flush=True)


if __name__ == "__main__":
    main()
