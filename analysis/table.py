"""Tables of results (CSV) → curves: select rows, group replicates, validate columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.fit import Curve, make_curve
from gnn.errors import InputError


def read_table(path: str | Path):
    """A CSV as a pandas DataFrame; a missing or unreadable file is a one-line error."""
    import pandas as pd

    try:
        return pd.read_csv(path, comment="#")
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV ({' '.join(str(exc).split())})", file=path) from None


def select(df, where: list[str], file=None):
    """Keep rows matching every ``COL=VALUE`` (compared as text, so 1 matches 1.0 only as written)."""
    for cond in where:
        if "=" not in cond:
            raise InputError(f"expected COL=VALUE, got {cond!r}", file=file, field="where")
        col, value = cond.split("=", 1)
        need(df, [col], file)
        df = df[df[col].astype(str) == value]
    return df


def need(df, cols: list[str], file=None) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"column missing (columns: {', '.join(map(str, df.columns))})", file=file, field=missing[0])


def curve_from(df, x: str, y: str, x2: str | None = None, file=None) -> Curve:
    need(df, [c for c in (x, y, x2) if c], file)
    if len(df) == 0:
        raise InputError("no rows left to fit", file=file)
    cols = [c for c in (x, x2, y) if c]
    for col in cols:
        values = np.asarray(df[col], dtype=float) if df[col].dtype.kind in "fiu" else None
        if values is None:
            raise InputError("not numeric", file=file, field=col)
        if not np.isfinite(values).all():
            raise InputError("NaN or infinite values", file=file, field=col)
        if (values <= 0).any():
            raise InputError("values must be positive (laws are fitted on log scales)", file=file, field=col)
    return make_curve(df[x].to_numpy(float), df[y].to_numpy(float), None if x2 is None else df[x2].to_numpy(float))
