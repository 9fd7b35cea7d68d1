"""Experiments that reproduce the MTZ paper's results with this project (see docs/results.md)."""
