"""The one CSV writer of the chain (pandas): metrics, quantization reports, hwsim's
tables and the report's figure data all come out in the same shape."""
from __future__ import annotations

import pandas as pd


def csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows as CSV text: ``columns`` in that order (default: every key, in order of first
    appearance), Python's own number formatting, missing values and None empty."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    return pd.DataFrame(rows, columns=columns, dtype=object).to_csv(index=False, lineterminator="\n")
