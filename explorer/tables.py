"""Tables as a reader sees them: column names in words, and no "None" cells.

The app's rows keep the engine's and the recipes' field names (`predicted_error`, `n_a`,
`a_only`, `acc_b`, …: figures, CSV downloads and tests read them); only what a page draws goes
through `readable`, so a student reads "neurons A" and "held-out error", and a value that does
not apply to a row (the predicted error of a retraining) shows as "–" instead of "None".
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["readable", "column_name", "NONE"]

NONE = "–"
#: field names that are not words, and what a page calls them
NAMES = {
    "predicted_error": "predicted error",
    "heldout_error": "held-out error",
    "predicted": "predicted error",
    "heldout": "held-out error",
    "pseudo_inverse": "pseudo-inverse",
    "saved_fraction": "parameters saved",
    "mean_acc": "mean accuracy",
    "retrain_iterations": "retraining iterations",
    "per_unit": "weights per input",
    "s": "seconds",
    "of": "of (narrower side)",
}


def column_name(name: str) -> str:
    """A column's name on screen: `n_a` → "neurons A", `b_only` → "only B", `acc_c` →
    "accuracy C", the names in `NAMES`, anything else as it is."""
    if name in NAMES:
        return NAMES[name]
    for pattern, words in (
        (r"n_([a-z])", "neurons {}"),
        (r"([a-z])_only", "only {}"),
        (r"acc_([a-z])", "accuracy {}"),
    ):
        m = re.fullmatch(pattern, name)
        if m:
            return words.format(m.group(1).upper())
    return name


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(value: Any) -> Any:
    if _missing(value):
        return NONE
    if isinstance(value, (bool, np.bool_)):  # beside "–", a bool made the column unsendable
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


def readable(rows: pd.DataFrame | list[dict[str, Any]]) -> pd.DataFrame:
    """`rows` with readable column names; a column with missing values becomes text, its
    numbers to 4 significant digits and its gaps "–" (columns without gaps keep their type,
    so they still sort and format as numbers)."""
    df = pd.DataFrame(rows).copy()
    for col in df.columns:
        if df[col].map(_missing).any():
            df[col] = df[col].map(_cell).astype(object)
    return df.rename(columns={c: column_name(str(c)) for c in df.columns})
