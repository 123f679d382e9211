"""Readers that turn users' materials data into :class:`gnn.store.Entry` streams.

Each reader is ``read(src, targets=None, **options) -> (entries, omega_ev)`` where ``entries`` is an iterator
(read lazily, so large data sets never sit in memory twice) and ``omega_ev`` the frequency grid of a spectrum
target (or ``None``). Every entry is validated when the store is written (:func:`gnn.store.write_store`).
"""

from __future__ import annotations

from pathlib import Path

from gnn.errors import InputError
from gnn.readers import cif_folder, extxyz, optimetal, petousis
from gnn.store import write_store

READERS = {
    "optimetal": optimetal.read,
    "petousis": petousis.read,
    "cif-folder": cif_folder.read,
    "extxyz": extxyz.read,
}


def import_store(kind: str, src: str | Path, out: str | Path, *, targets: list[str] | None = None,
                 points: int | None = None, cutoff: float = 5.5, overwrite: bool = False,
                 workers: int | None = None, progress: bool = True, min_distance_a: float | None = None) -> Path:
    """Read ``src`` with the reader ``kind`` and write a validated store (with graphs) to ``out``; atoms closer
    than ``min_distance_a`` Å are an error (default: :data:`gnn.store.DEFAULT_MIN_DISTANCE_A`)."""
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


def select_targets(available: dict, wanted: list[str] | None, *, file, entry) -> dict:
    """Keep the ``wanted`` targets (all when ``None``); a missing one is an error naming the entry."""
    if wanted is None:
        return available
    missing = [t for t in wanted if t not in available]
    if missing:
        raise InputError(f"target not found (available: {', '.join(sorted(available)) or 'none'})",
                         file=file, entry=entry, field=missing[0])
    return {t: available[t] for t in wanted}
