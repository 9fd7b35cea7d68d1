"""Make the demo pairs under assets/demos/ (fixed seeds: rerunning reproduces them).

python scripts/make_assets.py            # all demos
python scripts/make_assets.py digits-mlp # one
"""

from __future__ import annotations

import argparse
import time

from mtz_core.demo import DEMOS, build_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", choices=[*DEMOS, []], help="demos to make (default: all)"
    )
    args = parser.parse_args()
    for name in args.names or list(DEMOS):
        t0 = time.perf_counter()
        cards = build_demo(name)
        accs = ", ".join(
            f"{w}: {c['task']} test {c['accuracy']['test']:.3f}" for w, c in cards.items()
        )
        print(f"{name}: {accs} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
