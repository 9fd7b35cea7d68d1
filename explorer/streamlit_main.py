"""The script `mtz-explorer` hands to Streamlit when the project is installed (the same router
as `streamlit_app.py` in a checkout)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see streamlit_app.py

from explorer.app import main  # noqa: E402

main()
