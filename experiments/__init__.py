"""Experiments that reproduce the MTZ paper's results with this project (see docs/results.md).

`mtz_core` is imported here, before any experiment imports torch, so that its process default
``OMP_WAIT_POLICY=PASSIVE`` applies: with torch's busy-waiting OpenMP threads, an experiment
sharing the 2 cores with another process ran a VGG retraining step 8× slower (1.36 s against
0.16 s).
"""

import mtz_core  # noqa: F401  (first: its OpenMP default must be set before torch loads)
