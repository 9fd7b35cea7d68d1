"""Optional dependencies, asked for where they are needed, with the extra that installs them.

The engine needs torch, numpy, scipy, safetensors, tqdm and scikit-learn; sweeps (`mtz sweep`,
`mtz_core.sweep`) also need pandas and plotly (the `sweep` extra), and the app the `app` extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependency", "require"]


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str, who: str) -> ModuleType:
    """Import `module`, or raise `MissingDependency` saying that `who` needs it and which extra
    of the project installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(
            f"{who} needs {module}, which is not installed: pip install 'mtz-explorer[{extra}]'"
        ) from None
