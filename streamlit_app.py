"""MTZ Explorer: merge two trained networks by sharing neurons layer by layer (Multi-Task
Zipping, NeurIPS 2018), and see how it works. Run: `streamlit run streamlit_app.py` (or, once
installed, `mtz-explorer`).

This file only starts the router (`explorer/app.py`): the pages live in `explorer/pages/`, the
user's state in `explorer/state.py`, the figures in `explorer/figures/`; the mathematics is
`mtz_core`'s.
"""

import os

# Torch's OpenMP threads busy-wait by default; under Streamlit's threads on a 2-core machine
# that starved background jobs (a 10-iteration retrain: 0.03 s alone, up to 21 s in the app).
# Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from explorer.app import main  # noqa: E402

main()
