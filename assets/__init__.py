"""The demo checkpoints, installed as the package `mtz_assets` (package data read with
`importlib.resources`, so `pip install .` ships them too); see `mtz_core.demo`."""
