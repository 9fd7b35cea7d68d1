"""Run every benchmark and print its markdown table: ``python -m benchmarks.run_all [--smoke]``.

``--smoke`` uses tiny sizes (the whole run takes well under two minutes on 2 CPU cores; CI runs
it on every submission). A section that raises is reported with its traceback and the others
still run; the exit status is 1 if any section failed, 0 otherwise. No timing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from . import app_latency, cost_matching, kept_norm, many, resnet, vgg, zip_layer
from ._common import machine_line

SECTIONS = (
    ("cost_matching", cost_matching),
    ("zip_layer", zip_layer),
    ("kept_norm", kept_norm),
    ("many", many),  # three models: shared by all, or by subsets (issue 9)
    ("vgg", vgg),
    ("resnet", resnet),
    # the app's waits, and its retraining against the library's (issue 11): AppTest in --smoke
    ("app_latency", app_latency),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument(
        "--only", nargs="+", choices=[n for n, _ in SECTIONS], help="run only these sections"
    )
    args = p.parse_args(argv)
    start = time.perf_counter()
    failed = []
    print(f"# mtz_core benchmarks{' (smoke)' if args.smoke else ''}\n")
    print(f"Machine: {machine_line()}\n")
    for name, module in SECTIONS:
        if args.only and name not in args.only:
            continue
        argv_ = list(module.SMOKE_ARGV) if args.smoke else []
        cmd = "python -m benchmarks." + name + ("" if not argv_ else " " + " ".join(argv_))
        print(f"<!-- {cmd} -->")
        t0 = time.perf_counter()
        try:
            table = module.run(module.build_parser().parse_args(argv_))
        except Exception:  # report and go on: one broken section must not hide the others
            failed.append(name)
            print(f"### {name}: FAILED\n\n```\n{traceback.format_exc()}```\n", flush=True)
            continue
        print(table)
        print(f"\n({name}: {time.perf_counter() - t0:.1f} s)\n", flush=True)
    print(f"Total: {time.perf_counter() - start:.1f} s" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
