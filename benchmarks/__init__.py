"""Timing benchmarks for mtz_core; each module prints a markdown table.

Run everything with ``python -m benchmarks.run_all [--smoke]`` or one script alone, e.g.
``python -m benchmarks.cost_matching --sizes 512 1024``. Nothing here asserts on a time: the
tables report measured seconds and ratios measured in the same process.
"""
