"""`mtz-explorer`: start the app from an installed package (no checkout needed).

Arguments after the command go to `streamlit run` (e.g. `mtz-explorer --server.port 8600`).
The app needs the `app` extra: `pip install 'mtz-explorer[app]'`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "streamlit_main.py"
#: what the checkout's .streamlit/config.toml sets (an installed app has no checkout to read it
#: from): uploads up to 1 GiB (a VGG-16 checkpoint is about 530 MB), no usage statistics, no
#: file watcher (not needed to run the app; on a large tree it floods the log)
SETTINGS = [
    "--server.maxUploadSize",
    "1024",
    "--server.headless",
    "true",
    "--server.fileWatcherType",
    "none",
    "--runner.postScriptGC",  # a full GC after each poll held the GIL from the running job
    "false",
    "--browser.gatherUsageStats",
    "false",
    "--theme.base",
    "light",
]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    missing = [m for m in ("streamlit", "plotly", "pandas") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"mtz-explorer: error: the app needs {', '.join(missing)}: "
            "pip install 'mtz-explorer[app]'",
            file=sys.stderr,
        )
        return 1
    command = [sys.executable, "-m", "streamlit", "run", str(SCRIPT), *SETTINGS, *args]
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
