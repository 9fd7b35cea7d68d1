"""Experiments that reproduce the MTZ paper's results with this project (see docs/results.md).

`mtz_core` is imported here, before any experiment imports torch, so that its process default
``OMP_WAIT_POLICY=PASSIVE`` applies: with torch's busy-waiting OpenMP threads, an experiment
that shares the cores with another process runs several times slower (see mtz_core/__init__.py).
"""

import mtz_core  # noqa: F401  (first: its OpenMP default must be set before torch loads)
