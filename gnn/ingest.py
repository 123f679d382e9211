"""Writing a store: validate a stream of :class:`~gnn.store.Entry` objects and write the store with its graphs.

:func:`write_store` checks every entry (atoms, cell, overlapping atoms, targets, the frequency grid), then
writes ``data.pt`` and ``meta.json`` (the format of :mod:`gnn.store`) and builds the graph file for the store's
cutoff (:func:`gnn.graphs.build_graphs`), all in a temporary folder renamed into place, so a failed import
leaves nothing behind. Readers (:mod:`gnn.readers`) and the synthetic generator (:mod:`gnn.synth`) write
through it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gnn.defaults import DEFAULT_CUTOFF
from gnn.errors import InputError
from gnn.geometry import closest_pair
from gnn.graphs import build_graphs
from gnn.store import FORMAT, MAX_ATOMS_PER_CELL, NONNEGATIVE, SCALAR_SPECS, SPECTRUM, Entry

if TYPE_CHECKING:
    from pymatgen.core import Structure

#: Å; atoms closer than this are rejected as overlapping (a duplicated site, a wrong unit or a broken cell).
#: The shortest real bond is H–H at 0.74 Å; the shortest in the bundled data is O–H at 0.97 Å (Petousis et al.),
#: the OptiMetal samples have none under 2 Å and the synthetic metals none under 1.7 Å, so 0.5 Å only ever
#: catches atoms that cannot both be there. Change it with ``--min-distance`` (0 turns the check off).
DEFAULT_MIN_DISTANCE_A = 0.5


def _target_spec(name: str) -> dict:
    if name == SPECTRUM:
        return {"kind": "spectrum", "unit": "1", "description": "complex interband dielectric function"}
    return {"kind": "scalar", **SCALAR_SPECS.get(name, {})}


def _structure_arrays(entry: Entry, min_distance_a: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = entry.structure
    where = dict(file=entry.source, entry=entry.id, field="structure")
    if len(s) == 0:
        raise InputError("structure has no atoms", **where)
    if len(s) > MAX_ATOMS_PER_CELL:
        raise InputError(f"{len(s)} atoms in the cell; at most {MAX_ATOMS_PER_CELL} are supported", **where)
    if not s.is_ordered:
        raise InputError("disordered structure (partial occupancies) is not supported", **where)
    try:
        numbers = np.array([site.specie.Z for site in s], dtype=np.int16)
    except AttributeError as exc:
        raise InputError(f"non-element species ({exc})", **where) from None
    cell = np.asarray(s.lattice.matrix, dtype=np.float64)
    pos = np.asarray(s.cart_coords, dtype=np.float64)
    if not (np.isfinite(cell).all() and np.isfinite(pos).all()):
        raise InputError("non-finite lattice or coordinates", **where)
    if abs(np.linalg.det(cell)) < 1e-6:
        raise InputError("lattice has zero volume", **where)
    _check_min_distance(s, pos, cell, min_distance_a, where)
    return numbers, pos, cell


def _check_min_distance(s: Structure, pos: np.ndarray, cell: np.ndarray, min_distance_a: float, where: dict) -> None:
    """No two atoms (periodic images included) closer than ``min_distance_a`` Å."""
    pair = closest_pair(pos, cell, min_distance_a) if min_distance_a > 0 else None
    if pair is not None:
        i, j, d = pair
        what = f"atom {i} ({s[i].species_string}) is {d:.3f} Å from its own periodic image" if i == j else \
            f"atoms {i} ({s[i].species_string}) and {j} ({s[j].species_string}) are {d:.3f} Å apart"
        raise InputError(f"{what}, closer than the minimum {min_distance_a:g} Å (overlapping atoms?); fix the "
                         "structure, or lower --min-distance (a spec's dataset.import.min_distance)", **where)


def _check_targets(entry: Entry, names: list[str], n_points: int | None) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        where = dict(file=entry.source, entry=entry.id, field=name)
        if name not in entry.targets:
            raise InputError("target missing", **where)
        value = entry.targets[name]
        if name == SPECTRUM:
            arr = np.asarray(value, dtype=np.float64)
            if arr.shape != (2, n_points):
                raise InputError(f"expected shape (2, {n_points}) for (Re, Im) on the grid, got {arr.shape}",
                                 **where)
        else:
            try:
                arr = np.asarray(float(value), dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"not a number: {value!r}", **where) from None
        if not np.isfinite(arr).all():
            raise InputError("NaN or infinite value", **where)
        if name in NONNEGATIVE and (arr < 0).any():
            raise InputError(f"negative value {float(arr.min()):g} for a non-negative target", **where)
        out[name] = arr
    return out


def check_grid(omega_ev, *, file=None, entry=None) -> np.ndarray:
    """Validate a frequency grid (eV): 1-D, finite, strictly increasing, ≥2 points."""
    grid = np.asarray(omega_ev, dtype=np.float64)
    where = dict(file=file, entry=entry, field="omega_ev")
    if grid.ndim != 1 or grid.size < 2:
        raise InputError(f"frequency grid must be 1-D with ≥2 points, got shape {grid.shape}", **where)
    if not np.isfinite(grid).all():
        raise InputError("frequency grid has NaN or infinite values", **where)
    if not (np.diff(grid) > 0).all():
        raise InputError("frequency grid is not strictly increasing", **where)
    return grid


def write_store(entries: Iterable[Entry], out: str | Path, *, kind: str, source: str,
                omega_ev=None, cutoff: float = DEFAULT_CUTOFF, overwrite: bool = False, workers: int | None = None,
                progress: bool = True, extra_meta: dict | None = None, min_distance_a: float | None = None) -> Path:
    """Validate ``entries`` and write a store to ``out``, with its graphs for ``cutoff`` already built.

    The target names are those of the first entry; every entry must have the same ones. Atoms closer than
    ``min_distance_a`` Å (default :data:`DEFAULT_MIN_DISTANCE_A`; 0: no check) are an error. Raises
    :class:`InputError` on the first bad entry, leaving no partial folder.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError("output already exists (pass --overwrite to replace it)", file=out)
    grid = None if omega_ev is None else check_grid(omega_ev, file=source)
    n_points = None if grid is None else grid.size
    min_distance_a = DEFAULT_MIN_DISTANCE_A if min_distance_a is None else min_distance_a
    if not (np.isfinite(min_distance_a) and min_distance_a >= 0):
        raise InputError(f"must be a distance ≥ 0 Å, got {min_distance_a!r}", field="min_distance")

    names: list[str] | None = None
    numbers, pos, cells, counts, ids, formulas, sources = [], [], [], [], [], [], []
    ys: dict[str, list] = {}
    seen = set()
    for entry in tqdm(entries, desc=f"reading {kind}", unit="entry", disable=None if progress else True):
        if names is None:
            names = sorted(entry.targets)
            if not names:
                raise InputError("no targets", file=entry.source, entry=entry.id)
            if SPECTRUM in names and grid is None:
                raise InputError("a spectrum target needs a frequency grid", file=entry.source,
                                 entry=entry.id, field="omega_ev")
            ys = {n: [] for n in names}
        unknown = sorted(set(entry.targets) - set(names))
        if unknown:
            raise InputError(f"target not present in earlier entries (expected {names})",
                             file=entry.source, entry=entry.id, field=unknown[0])
        if entry.id in seen:
            raise InputError("duplicate id", file=entry.source, entry=entry.id, field="id")
        seen.add(entry.id)
        z, p, c = _structure_arrays(entry, min_distance_a)
        t = _check_targets(entry, names, n_points)
        numbers.append(z), pos.append(p), cells.append(c), counts.append(len(z))
        ids.append(entry.id), formulas.append(entry.structure.composition.reduced_formula)
        sources.append(str(entry.source))
        for n in names:
            ys[n].append(t[n])
    if names is None:
        raise InputError("no entries found", file=source)

    node_ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    node_ptr[1:] = np.cumsum(counts)
    tensors = {
        "numbers": torch.from_numpy(np.concatenate(numbers)),
        "pos": torch.from_numpy(np.concatenate(pos).astype(np.float32)),
        "cell": torch.from_numpy(np.stack(cells).astype(np.float32)),
        "node_ptr": torch.from_numpy(node_ptr),
    }
    for n in names:
        tensors[f"y_{n}"] = torch.from_numpy(np.stack(ys[n]).astype(np.float32))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        torch.save(tensors, tmp / "data.pt")
        meta = {
            "format": FORMAT, "kind": kind, "source": str(source), "n": len(ids),
            "n_atoms": int(node_ptr[-1]),
            "targets": {n: _target_spec(n) for n in names},
            "omega_ev": None if grid is None else grid.tolist(),
            "content_hash": _file_hash(tmp / "data.pt"),
            "default_cutoff": cutoff,
            "ids": ids, "formulas": formulas, "sources": sources,
            **(extra_meta or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        build_graphs(tmp, cutoff, workers=workers, progress=progress)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
