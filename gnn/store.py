"""Dataset store: crystal structures and their targets, collated in one folder.

Layout of a store ``DIR``::

    DIR/meta.json   format, kind, source, targets, omega_ev grid, ids, reduced formulas, sources, hash
    DIR/data.pt     collated tensors, loaded memory-mapped (torch.load(mmap=True)):
        numbers   int16   [N_atoms]     atomic numbers of all structures, concatenated
        pos       float32 [N_atoms, 3]  Cartesian positions (Å)
        cell      float32 [n, 3, 3]     lattice vectors as rows (Å)
        node_ptr  int64   [n + 1]       structure i owns atoms node_ptr[i]:node_ptr[i+1]
        y_eps     float32 [n, 2, K]     Re and Im of ε_inter(ω) on ``omega_ev`` (spectrum target)
        y_<name>  float32 [n]           scalar targets, e.g. y_drude (Drude frequency, eV)
    DIR/graphs/     periodic graphs, one file per cutoff (see :mod:`gnn.graphs`)

Readers produce :class:`Entry` objects; :func:`write_store` validates every entry and writes the
folder atomically (a temporary folder renamed into place), so a failed import leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gnn.errors import InputError

if TYPE_CHECKING:
    from pymatgen.core import Structure

FORMAT = "matscale-store/1"
SPECTRUM = "eps"  #: the one spectrum target: complex interband dielectric function
MAX_ATOMS_PER_CELL = 32767  #: graph files keep atom indices as int16
#: Å; atoms closer than this are rejected as overlapping (a duplicated site, a wrong unit or a broken cell).
#: The shortest real bond is H–H at 0.74 Å; the shortest in the bundled data is O–H at 0.97 Å (Petousis et al.),
#: the OptiMetal samples have none under 2 Å and the synthetic metals none under 1.7 Å, so 0.5 Å only ever
#: catches atoms that cannot both be there. Change it with ``--min-distance`` (0 turns the check off).
DEFAULT_MIN_DISTANCE_A = 0.5
REBUILD = ("delete the store folder (a sweep rebuilds it) or write it again with `matscale data import` or "
           "`matscale data synth` and --overwrite")
META_KEYS = ("kind", "source", "n", "n_atoms", "targets", "content_hash", "ids", "formulas", "sources")


@dataclass
class Entry:
    """One material: a periodic structure and its targets.

    ``targets`` maps a name to a float (scalar) or, for ``"eps"``, a ``[2, K]`` array (Re, Im on the
    store's ``omega_ev`` grid). ``source`` is the file the entry was read from (for error messages).
    """

    id: str
    structure: Structure
    targets: dict[str, object]
    source: str = ""
    extra: dict = field(default_factory=dict)


def _target_spec(name: str) -> dict:
    if name == SPECTRUM:
        return {"kind": "spectrum", "unit": "1", "description": "complex interband dielectric function"}
    if name == "drude":
        return {"kind": "scalar", "unit": "eV", "nonnegative": True, "description": "Drude frequency"}
    return {"kind": "scalar"}


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
    from gnn.graphs import closest_pair

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
        if _target_spec(name).get("nonnegative") and (arr < 0).any():
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
                omega_ev=None, cutoff: float = 5.5, overwrite: bool = False, workers: int | None = None,
                progress: bool = True, extra_meta: dict | None = None, min_distance_a: float | None = None) -> Path:
    """Validate ``entries`` and write a store to ``out``, with its graphs for ``cutoff`` already built.

    The target names are those of the first entry; every entry must have the same ones. Atoms closer than
    ``min_distance_a`` Å (default :data:`DEFAULT_MIN_DISTANCE_A`; 0: no check) are an error. Raises
    :class:`InputError` on the first bad entry, leaving no partial folder.
    """
    from tqdm.auto import tqdm

    from gnn.graphs import build_graphs  # the store and its graph file are written together

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
    for entry in tqdm(entries, desc=f"reading {kind}", unit="entry", disable=not progress):
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


def damage(file: Path, exc: BaseException) -> str:
    """What is wrong with a file that failed to load, in a few words: empty, or corrupt (and the error, short)."""
    if file.is_file() and file.stat().st_size == 0:
        return "empty file"
    text = " ".join(str(exc).split())
    text = text if len(text) <= 80 else text[:80].rsplit(" ", 1)[0] + " …"
    return f"corrupt or truncated file ({type(exc).__name__}{': ' + text if text else ''})"


def read_meta(store_dir: str | Path) -> dict:
    """A store's ``meta.json``, checked: a JSON object of this format with every field readers use."""
    store_dir = Path(store_dir)
    meta_file = store_dir / "meta.json"
    if not meta_file.is_file():
        raise InputError("not a matscale store (no meta.json); create one with `matscale data import` "
                         "or `matscale data synth`", file=store_dir)
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise InputError(f"{damage(meta_file, exc)}; {REBUILD}", file=meta_file) from None
    if not isinstance(meta, dict):
        raise InputError(f"corrupt: expected a JSON object, got {type(meta).__name__}; {REBUILD}", file=meta_file)
    if meta.get("format") != FORMAT:
        raise InputError(f"unsupported store format {meta.get('format')!r}", file=meta_file, field="format")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise InputError(f"corrupt: missing; {REBUILD}", file=meta_file, field=missing[0])
    for key in ("n", "n_atoms"):
        if isinstance(meta[key], bool) or not isinstance(meta[key], int) or meta[key] < 0:
            raise InputError(f"corrupt: expected a count, got {meta[key]!r:.40}; {REBUILD}", file=meta_file, field=key)
    if not isinstance(meta["targets"], dict):
        raise InputError(f"corrupt: expected an object, got {meta['targets']!r:.40}; {REBUILD}", file=meta_file,
                         field="targets")
    n = meta["n"]
    for key in ("ids", "formulas", "sources"):
        if not isinstance(meta[key], list) or len(meta[key]) != n:
            raise InputError(f"corrupt: expected a list of n = {n!r} entries; {REBUILD}", file=meta_file, field=key)
    return meta


def load_tensors(store_dir: Path, meta: dict) -> dict[str, torch.Tensor]:
    """``data.pt``, memory-mapped, with the tensors and shapes ``meta.json`` promises."""
    file = store_dir / "data.pt"
    if not file.is_file():
        raise InputError(f"missing; {REBUILD}", file=file)
    try:
        tensors = torch.load(file, mmap=True, weights_only=True)
    except Exception as exc:  # torch raises many types (RuntimeError, EOFError, UnpicklingError) on damaged files
        raise InputError(f"{damage(file, exc)}; {REBUILD}", file=file) from None
    n, n_atoms = meta["n"], meta["n_atoms"]
    shapes = {"numbers": (n_atoms,), "pos": (n_atoms, 3), "cell": (n, 3, 3), "node_ptr": (n + 1,),
              **{f"y_{t}": (n,) for t in meta["targets"]}}
    for key, shape in shapes.items():
        got = tensors.get(key) if isinstance(tensors, dict) else None
        if not isinstance(got, torch.Tensor) or tuple(got.shape[:len(shape)]) != shape:
            what = "missing" if got is None else f"shape {tuple(getattr(got, 'shape', ()))}"
            raise InputError(f"corrupt: {what}, expected {shape} for the {n} structures of meta.json; {REBUILD}",
                             file=file, field=key)
    if int(tensors["node_ptr"][0]) != 0 or int(tensors["node_ptr"][-1]) != n_atoms:
        raise InputError(f"corrupt: does not span the {n_atoms} atoms of meta.json; {REBUILD}", file=file,
                         field="node_ptr")
    return tensors


class Store:
    """A store opened for reading; tensors are memory-mapped, so opening is cheap and shared.

    A missing, truncated or corrupt ``meta.json`` or ``data.pt`` is an :class:`InputError` naming the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.tensors: dict[str, torch.Tensor] = load_tensors(self.path, self.meta)

    def __len__(self) -> int:
        return int(self.meta["n"])

    @property
    def targets(self) -> dict[str, dict]:
        return self.meta["targets"]

    @property
    def omega_ev(self) -> np.ndarray | None:
        g = self.meta.get("omega_ev")
        return None if g is None else np.asarray(g)

    @property
    def ids(self) -> list[str]:
        return self.meta["ids"]

    @property
    def formulas(self) -> list[str]:
        return self.meta["formulas"]

    def structure(self, i: int):
        """The i-th structure as a pymatgen ``Structure`` (for users; training never needs it)."""
        from pymatgen.core import Lattice, Structure

        a, b = int(self.tensors["node_ptr"][i]), int(self.tensors["node_ptr"][i + 1])
        return Structure(Lattice(self.tensors["cell"][i].double().numpy()),
                         self.tensors["numbers"][a:b].tolist(), self.tensors["pos"][a:b].double().numpy(),
                         coords_are_cartesian=True)

    def info(self) -> dict:
        """Summary for ``matscale data info``: sizes, targets with their ranges, grid, graph files."""
        ptr = self.tensors["node_ptr"]
        sizes = (ptr[1:] - ptr[:-1]).numpy()
        targets = {}
        for name, spec in self.targets.items():
            y = self.tensors[f"y_{name}"].numpy()
            targets[name] = {**spec, "shape": list(y.shape[1:]), "min": float(y.min()),
                             "max": float(y.max()), "mean": float(y.mean())}
        grid = self.omega_ev
        from gnn.graphs import list_graph_files

        return {
            "path": str(self.path), "kind": self.meta["kind"], "source": self.meta["source"],
            "n_structures": len(self), "n_formulas": len(set(self.formulas)),
            "atoms_per_cell": {"min": int(sizes.min()), "mean": float(sizes.mean()), "max": int(sizes.max())},
            "elements": len(np.unique(self.tensors["numbers"].numpy())),
            "targets": targets,
            "omega_ev": None if grid is None else {"points": int(grid.size), "min": float(grid[0]),
                                                   "max": float(grid[-1])},
            "graphs": list_graph_files(self.path, len(self)),
            "content_hash": self.meta["content_hash"],
            "bytes": {"data": (self.path / "data.pt").stat().st_size},
        }
