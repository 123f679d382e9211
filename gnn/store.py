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
    DIR/graphs/     periodic graphs, one file per cutoff: :func:`graph_path` names it, :func:`read_graph_file`
                    reads it (built by :mod:`gnn.graphs`)

This module reads stores. Readers produce :class:`Entry` objects; :func:`gnn.ingest.write_store` validates every
entry and writes the folder atomically (a temporary folder renamed into place), so a failed import leaves nothing
behind.
"""

from __future__ import annotations

import json
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
#: what is known about named scalar targets (recorded in meta.json); any other name is a plain scalar
SCALAR_SPECS = {"drude": {"unit": "eV", "nonnegative": True, "description": "Drude frequency"}}
#: scalar targets that cannot be negative: checked when a store is written, softplus heads in the models
NONNEGATIVE = frozenset(name for name, spec in SCALAR_SPECS.items() if spec.get("nonnegative"))
MAX_ATOMS_PER_CELL = 32767  #: graph files keep atom indices as int16
REBUILD = ("delete the store folder (a sweep rebuilds it) or write it again with `matscale data import` or "
           "`matscale data synth` and --overwrite")
META_KEYS = ("kind", "source", "n", "n_atoms", "targets", "content_hash", "ids", "formulas", "sources")
REBUILD_GRAPHS = "delete it (or the store's graphs/ folder): the next `matscale train` or sweep rebuilds it"


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


def graph_path(store_dir: str | Path, cutoff: float, meta: dict | None = None) -> Path:
    """Where the graph file of a store (whose ``meta.json`` is read unless given) for ``cutoff`` lives."""
    meta = read_meta(store_dir) if meta is None else meta
    return Path(store_dir) / "graphs" / f"cutoff{cutoff:g}-{meta['content_hash'][:12]}.pt"


def list_graph_files(store_dir: str | Path, n_structures: int) -> list[dict]:
    """The graph files of a store of ``n_structures`` (name, bytes), each checked by :func:`read_graph_file`."""
    folder = Path(store_dir) / "graphs"
    out = []
    for p in sorted(folder.glob("cutoff*.pt")) if folder.is_dir() else []:
        read_graph_file(p, n_structures)
        out.append({"file": p.name, "bytes": p.stat().st_size})
    return out


def read_graph_file(path: Path, n_structures: int) -> dict[str, torch.Tensor]:
    """A graph file, memory-mapped and checked against its store's size; a damaged one is an :class:`InputError`
    naming the file."""
    try:
        g = torch.load(path, mmap=True, weights_only=True)
    except Exception as exc:  # torch raises many types (RuntimeError, EOFError, UnpicklingError) on damaged files
        raise InputError(f"{damage(path, exc)}; {REBUILD_GRAPHS}", file=path) from None
    names = ("edge_index", "edge_shift", "edge_ptr")
    ok = isinstance(g, dict) and all(isinstance(g.get(k), torch.Tensor) for k in names)
    if ok:
        e = g["edge_index"].shape[-1]
        ok = (tuple(g["edge_index"].shape) == (2, e) and tuple(g["edge_shift"].shape) == (e, 3)
              and tuple(g["edge_ptr"].shape) == (n_structures + 1,)
              and int(g["edge_ptr"][0]) == 0 and int(g["edge_ptr"][-1]) == e)
    if not ok:
        raise InputError(f"corrupt graph file (its edges do not fit the {n_structures} structures of the store); "
                         f"{REBUILD_GRAPHS}", file=path)
    return g


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
