"""A folder of CIF/POSCAR files plus ``id_prop.csv`` (the CGCNN/ALIGNN convention).

``id_prop.csv`` rows are ``id, target_1[, target_2, ...]``. With a header row (any non-numeric value after the
first column) the header names the targets; without one they are ``target`` (one column) or ``target_0``,
``target_1``, .... The structure of ``id`` is the first file found among ``id``, ``id.cif``, ``id.vasp``,
``id.poscar``, ``POSCAR-id``, ``POSCAR_id``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from gnn.errors import InputError
from gnn.readers.targets import select_targets
from gnn.store import Entry

PATTERNS = ("{}", "{}.cif", "{}.vasp", "{}.poscar", "POSCAR-{}", "POSCAR_{}")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read(src: Path, targets: list[str] | None = None):
    """Entries with the scalar targets of ``id_prop.csv`` (or those in ``targets``); no frequency grid."""
    from pymatgen.core import Structure

    src = Path(src)
    table = src / "id_prop.csv"
    if not src.is_dir() or not table.is_file():
        raise InputError("expected a folder with id_prop.csv", file=src)
    with open(table, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise InputError("empty table", file=table)
    if any(not _is_number(c) for c in rows[0][1:]):
        names, rows = [c.strip() for c in rows[0][1:]], rows[1:]
    else:
        width = len(rows[0]) - 1
        names = ["target"] if width == 1 else [f"target_{k}" for k in range(width)]
    if not names:
        raise InputError("needs an id column and at least one target column", file=table)

    def entries():
        for line_no, row in enumerate(rows, 2 if names else 1):
            entry_id = row[0].strip()
            if len(row) - 1 != len(names):
                raise InputError(f"expected {len(names)} target values, got {len(row) - 1}", file=table,
                                 entry=entry_id, field="row")
            values = {}
            for name, text in zip(names, row[1:]):
                if not _is_number(text):
                    raise InputError(f"not a number: {text!r}", file=table, entry=entry_id, field=name)
                values[name] = float(text)
            path = next((src / p.format(entry_id) for p in PATTERNS if (src / p.format(entry_id)).is_file()), None)
            if path is None:
                raise InputError(f"no structure file ({', '.join(p.format(entry_id) for p in PATTERNS[:2])}, ...)",
                                 file=src, entry=entry_id, field="structure")
            try:
                structure = Structure.from_file(path)
            except Exception as exc:  # pymatgen's parsers raise many types
                raise InputError(f"unparsable structure ({type(exc).__name__}: {exc})", file=path,
                                 entry=entry_id, field="structure") from None
            yield Entry(entry_id, structure, select_targets(values, targets, file=table, entry=entry_id), str(path))

    return entries(), None
