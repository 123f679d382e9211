"""Petousis et al. (2017) DFPT dielectric data: the matminer CSV of 1,056 real structures.

Columns used: ``meta`` (a Python dict literal with ``material_id``, ``poscar``, ``structure`` as CIF),
``band_gap`` (eV), ``n`` (refractive index), ``poly_electronic``, ``poly_total`` (polycrystalline ε),
``e_electronic`` and ``e_total`` (3×3 tensors, stored as the mean of their diagonal: ``eps_electronic``,
``eps_total``). All six are scalar targets; choose a subset with ``targets``.
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np

from gnn.errors import InputError
from gnn.readers.targets import select_targets
from gnn.store import Entry

SCALARS = ("band_gap", "n", "poly_electronic", "poly_total")
TENSORS = {"e_electronic": "eps_electronic", "e_total": "eps_total"}


def _number(text: str, *, file, entry, field) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise InputError(f"not a number: {text!r}", file=file, entry=entry, field=field) from None


def _entry(path: Path, row_no: int, row: dict) -> Entry:
    from pymatgen.core import Structure

    try:
        meta = ast.literal_eval(row["meta"])
    except (ValueError, SyntaxError, TypeError):
        raise InputError("not a Python dict literal", file=path, entry=f"row {row_no}", field="meta") from None
    entry_id = str(meta.get("material_id") or f"row {row_no}")
    where = dict(file=path, entry=entry_id)
    try:
        if meta.get("poscar"):
            structure = Structure.from_str(meta["poscar"], fmt="poscar")
        else:
            structure = Structure.from_str(meta["structure"], fmt="cif")
    except Exception as exc:  # pymatgen's parsers raise many types
        raise InputError(f"unparsable structure ({type(exc).__name__}: {exc})", field="meta.poscar", **where) from None
    targets = {name: _number(row[name], field=name, **where) for name in SCALARS}
    for column, name in TENSORS.items():
        try:
            tensor = np.asarray(ast.literal_eval(row[column]), dtype=float)
        except (ValueError, SyntaxError, TypeError):
            raise InputError("not a 3×3 tensor literal", field=column, **where) from None
        if tensor.shape != (3, 3):
            raise InputError(f"expected a 3×3 tensor, got shape {tensor.shape}", field=column, **where)
        targets[name] = float(np.trace(tensor) / 3.0)
    return Entry(entry_id, structure, targets, str(path))


def read(src: Path, targets: list[str] | None = None):
    """Entries with the scalar targets above (or those in ``targets``); no frequency grid."""
    src = Path(src)
    if src.is_dir():
        raise InputError("expected the Petousis CSV file, got a folder", file=src)

    def entries():
        with open(src, newline="") as f:
            lines = (line for line in f if not line.startswith("#"))
            reader = csv.DictReader(lines)
            need = {"meta", *SCALARS, *TENSORS}
            missing = sorted(need - set(reader.fieldnames or []))
            if missing:
                raise InputError("column missing", file=src, field=missing[0])
            for row_no, row in enumerate(reader, 1):
                e = _entry(src, row_no, row)
                e.targets = select_targets(e.targets, targets, file=src, entry=e.id)
                yield e

    return entries(), None
