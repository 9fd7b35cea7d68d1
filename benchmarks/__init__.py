"""Timing benchmarks for mtz_core; each module prints a markdown table.

Run everything with ``python -m benchmarks.run_all [--smoke]`` or one script alone, e.g.
``python -m benchmarks.cost_matching --sizes 512 1024``. Nothing here asserts on a time: the
tables report measured seconds and ratios measured in the same process.

`mtz_core` is imported here, before any module imports torch, so that its process defaults
(``OMP_WAIT_POLICY=PASSIVE`` unless the environment says otherwise) apply to every benchmark
exactly as they apply to a program that imports `mtz_core` first.
"""

import mtz_core  # noqa: F401  (first: its OpenMP default must be set before torch loads)
