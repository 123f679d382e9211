"""OptiMetal data: pymatgen ``ComputedStructureEntry`` JSON, exactly the format of the paper's data set.

Each entry's ``data.eps_inter_re`` / ``data.eps_inter_im`` are ``[K, 4]`` arrays (ω in eV, then xx, yy, zz)
and ``data.drude_freq`` the three Drude components (eV). Targets, as in the paper:

    eps   = (mean over xx, yy, zz of Re ε_inter,  mean of Im ε_inter)   on the stored ω grid
    drude = sqrt(mean(ω_D,xx², ω_D,yy², ω_D,zz²))                      (RMS of the components, eV)

Sources: one JSON file per material, a folder of them, a JSON list, or JSON-lines (optionally ``.gz``).
With ``points=K`` the spectra are resampled linearly onto K equally spaced points of the stored range.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import numpy as np

from gnn.errors import InputError
from gnn.ingest import check_grid
from gnn.readers.targets import select_targets
from gnn.store import SPECTRUM, Entry


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _records(src: Path) -> Iterator[tuple[Path, int, dict]]:
    files = sorted(p for p in src.iterdir() if p.name.endswith((".json", ".json.gz", ".jsonl", ".jsonl.gz"))) \
        if src.is_dir() else [src]
    if not files:
        raise InputError("no .json, .json.gz or .jsonl files in the folder", file=src)
    for path in files:
        with _open_text(path) as f:
            text = f.read()
        try:
            obj = json.loads(text)
            items = obj if isinstance(obj, list) else [obj]
        except json.JSONDecodeError:
            items = []  # JSON-lines
            for line_no, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        items.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise InputError(f"invalid JSON ({exc.msg})", file=path, entry=f"line {line_no}") from None
        for i, item in enumerate(items):
            yield path, i, item


def _array(value, *, file, entry, field) -> np.ndarray:
    if isinstance(value, dict) and value.get("@class") == "array":
        value = value.get("data")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("not a numeric array", file=file, entry=entry, field=field) from None
    return arr


def _entry(path: Path, i: int, item: dict) -> tuple[Entry, np.ndarray]:
    """The entry with ε on its own stored grid, and that grid."""
    from pymatgen.core import Structure

    if not isinstance(item, dict):
        raise InputError("expected a ComputedStructureEntry object", file=path, entry=i)
    data = item.get("data") or {}
    entry_id = str(data.get("mat_id") or (item.get("parameters") or {}).get("id") or item.get("entry_id")
                   or (path.name.split(".")[0] if i == 0 else f"{path.name}:{i}"))
    where = dict(file=path, entry=entry_id)
    if "structure" not in item:
        raise InputError("missing", field="structure", **where)
    try:
        structure = Structure.from_dict(item["structure"])
    except Exception as exc:  # pymatgen raises many types on malformed dicts
        raise InputError(f"unparsable structure ({type(exc).__name__}: {exc})", field="structure", **where) from None
    parts = []
    for part in ("re", "im"):
        name = f"data.eps_inter_{part}"
        if f"eps_inter_{part}" not in data:
            raise InputError("missing", field=name, **where)
        arr = _array(data[f"eps_inter_{part}"], field=name, **where)
        if arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] < 2:
            raise InputError(f"expected a [K, 4] array (ω, xx, yy, zz), got shape {arr.shape}", field=name, **where)
        parts.append(arr)
    grid = check_grid(parts[0][:, 0], file=path, entry=entry_id)
    if parts[1].shape != parts[0].shape or not np.allclose(parts[1][:, 0], grid):
        raise InputError("Im ε is not on the same ω grid as Re ε", field="data.eps_inter_im", **where)
    eps = np.stack([parts[0][:, 1:].mean(axis=1), parts[1][:, 1:].mean(axis=1)])
    if "drude_freq" not in data:
        raise InputError("missing", field="data.drude_freq", **where)
    drude = _array(data["drude_freq"], field="data.drude_freq", **where)
    if drude.shape != (3,):
        raise InputError(f"expected 3 components, got shape {drude.shape}", field="data.drude_freq", **where)
    return Entry(entry_id, structure, {SPECTRUM: eps, "drude": float(np.sqrt(np.mean(drude**2)))}, str(path)), grid


def read(src: Path, targets: list[str] | None = None, points: int | None = None):
    """Entries with targets ``eps`` and ``drude`` (or the subset in ``targets``) and the ω grid (eV)."""
    if points is not None and points < 2:
        raise InputError(f"--points must be ≥ 2, got {points}", field="points")
    records = _records(Path(src))
    try:
        first_rec = next(records)
    except StopIteration:
        raise InputError("no entries found", file=src) from None
    first_grid = _entry(*first_rec)[1]
    grid = first_grid if points is None else np.linspace(first_grid[0], first_grid[-1], points)

    def entries():
        for path, i, item in chain([first_rec], records):
            e, own = _entry(path, i, item)
            if points is None and (own.shape != grid.shape or not np.allclose(own, grid)):
                raise InputError(f"ω grid differs from the first entry's ({grid.size} points on "
                                 f"[{grid[0]:g}, {grid[-1]:g}] eV)", file=path, entry=e.id, field="data.eps_inter_re")
            if points is not None:
                if own[0] > grid[0] + 1e-9 or own[-1] < grid[-1] - 1e-9:
                    raise InputError("ω grid does not cover the first entry's range", file=path, entry=e.id,
                                     field="data.eps_inter_re")
                eps = e.targets[SPECTRUM]
                e.targets[SPECTRUM] = np.stack([np.interp(grid, own, eps[0]), np.interp(grid, own, eps[1])])
            e.targets = select_targets(e.targets, targets, file=path, entry=e.id)
            yield e

    keep_grid = targets is None or SPECTRUM in targets
    return entries(), (grid if keep_grid else None)
