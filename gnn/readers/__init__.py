"""Readers that turn users' materials data into :class:`gnn.store.Entry` streams.

Each reader is ``read(src, targets=None, **options) -> (entries, omega_ev)`` where ``entries`` is an iterator
(read lazily, so large data sets never sit in memory twice) and ``omega_ev`` the frequency grid of a spectrum
target (or ``None``). Every entry is validated when the store is written (:func:`gnn.ingest.write_store`).
"""

from __future__ import annotations

from pathlib import Path

from gnn.defaults import DEFAULT_CUTOFF
from gnn.errors import InputError
from gnn.ingest import write_store
from gnn.readers import cif_folder, extxyz, optimetal, petousis
from gnn.readers.targets import select_targets  # noqa: F401  (also importable from here)

READERS = {
    "optimetal": optimetal.read,
    "petousis": petousis.read,
    "cif-folder": cif_folder.read,
    "extxyz": extxyz.read,
}


def import_store(kind: str, src: str | Path, out: str | Path, *, targets: list[str] | None = None,
                 points: int | None = None, cutoff: float = DEFAULT_CUTOFF, overwrite: bool = False,
                 workers: int | None = None, progress: bool = True, min_distance_a: float | None = None) -> Path:
    """Read ``src`` with the reader ``kind`` and write a validated store (with graphs) to ``out``; atoms closer
    than ``min_distance_a`` Å are an error (default: :data:`gnn.ingest.DEFAULT_MIN_DISTANCE_A`)."""
    if kind not in READERS:
        raise InputError(f"unknown data kind {kind!r}; choose one of {', '.join(READERS)}", field="kind")
    src = Path(src)
    if not src.exists():
        raise InputError("no such file or folder", file=src)
    options = {"points": points} if kind == "optimetal" else {}
    if points is not None and kind != "optimetal":
        raise InputError("--points applies to spectra (kind 'optimetal') only", field="points")
    entries, grid = READERS[kind](src, targets=targets, **options)
    return write_store(entries, out, kind=kind, source=str(src), omega_ev=grid, cutoff=cutoff,
                       overwrite=overwrite, workers=workers, progress=progress, min_distance_a=min_distance_a)
