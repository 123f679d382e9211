"""Periodic crystal graphs, built once per (store content, cutoff) and shared memory-mapped.

A graph holds, for every ordered pair (i → j) of atoms closer than the cutoff, including periodic
images and an atom's own images, the source and target atom and the integer image offset
``shift ∈ Z^3``. Edge vectors are rebuilt inside the model (so they stay differentiable and exact):

    r_ij = pos[j] - pos[i] + shift_ij @ cell

One graph file per cutoff, ``DIR/graphs/cutoff<rc>-<hash>.pt``, collates all structures:

    edge_index  int16 [2, E]   (source, target) atom index local to its structure
    edge_shift  int8  [E, 3]   periodic image of the target atom
    edge_ptr    int64 [n + 1]  structure k owns edges edge_ptr[k]:edge_ptr[k+1]

It is built in parallel across cores with pymatgen's neighbour search, written to a temporary file
and renamed, under a file lock, so concurrent trials on one node never build it twice.
"""

from __future__ import annotations

import fcntl
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from gnn.errors import InputError
from gnn.store import damage, load_tensors, read_meta

DEFAULT_CUTOFF = 5.5  #: Å
REBUILD_GRAPHS = "delete it (or the store's graphs/ folder): the next `matscale train` or sweep rebuilds it"


def neighbor_list(pos: np.ndarray, cell: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j, shift) with 0 < |pos[j] + shift @ cell - pos[i]| < cutoff, periodic in 3-D.

    Args:
        pos: ``[n, 3]`` Cartesian positions (Å). cell: ``[3, 3]`` lattice vectors as rows (Å).
    Returns:
        ``src [E]``, ``dst [E]`` (int64) and ``shift [E, 3]`` (int64), sorted by (src, dst).
    """
    from pymatgen.optimization.neighbors import find_points_in_spheres

    pos = np.ascontiguousarray(pos, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    src, dst, shift, dist = find_points_in_spheres(pos, pos, r=float(cutoff), pbc=np.ones(3, dtype=np.int64),
                                                   lattice=cell, tol=1e-8)
    keep = (dist > 1e-8) & (dist < cutoff)  # no zero-distance self pair; strictly inside the cutoff
    src, dst, shift = src[keep].astype(np.int64), dst[keep].astype(np.int64), np.rint(shift[keep]).astype(np.int64)
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], dst, src))
    return src[order], dst[order], shift[order]


def closest_pair(pos: np.ndarray, cell: np.ndarray, within_a: float) -> tuple[int, int, float] | None:
    """The closest two atoms nearer than ``within_a`` Å, as (i ≤ j, distance in Å), or None if there are none.

    Periodic images count, so an atom near its own image (a tiny cell) is a pair (i, i); two atoms on one
    position are a pair at distance 0.
    """
    from pymatgen.optimization.neighbors import find_points_in_spheres

    pos = np.ascontiguousarray(pos, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    src, dst, shift, dist = find_points_in_spheres(pos, pos, r=float(within_a), pbc=np.ones(3, dtype=np.int64),
                                                   lattice=cell, tol=1e-8)
    near = ((src != dst) | np.rint(shift).any(axis=1)) & (dist < within_a)  # not an atom paired with itself
    if not near.any():
        return None
    k = np.flatnonzero(near)[np.argmin(dist[near])]
    i, j = sorted((int(src[k]), int(dst[k])))
    return i, j, float(dist[k])


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


def _build_chunk(args) -> tuple[list, int | None, int | None]:
    """Worker: neighbour lists for structures [lo, hi). Returns the arrays, or the first lonely atom."""
    pos, cell, ptr, lo, hi, cutoff = args  # ptr is the global node_ptr[lo:hi + 1]
    parts = []
    for j in range(hi - lo):
        a, b = ptr[j] - ptr[0], ptr[j + 1] - ptr[0]
        src, dst, shift = neighbor_list(pos[a:b], cell[j], cutoff)
        lonely = np.setdiff1d(np.arange(b - a), src)
        if lonely.size:
            return parts, lo + j, int(lonely[0])
        parts.append((np.stack([src, dst]).astype(np.int16), shift.astype(np.int8)))
    return parts, None, None


def build_graphs(store_dir: str | Path, cutoff: float = DEFAULT_CUTOFF, *, workers: int | None = None,
                 progress: bool = True, chunk: int = 256) -> Path:
    """Build (or find and check) the graph file of a store for ``cutoff``; returns its path.

    Raises :class:`InputError` naming the entry if an atom has no neighbour within the cutoff, and naming the
    file if the store or an existing graph file is damaged.
    """
    return _graphs(store_dir, cutoff, workers=workers, progress=progress, chunk=chunk)[0]


def _graphs(store_dir: str | Path, cutoff: float, *, workers: int | None = None, progress: bool = True,
            chunk: int = 256) -> tuple[Path, dict[str, torch.Tensor]]:
    """The graph file of a store for ``cutoff`` and its tensors (memory-mapped), built first if missing."""
    from tqdm.auto import tqdm

    store_dir = Path(store_dir)
    if not cutoff > 0:
        raise InputError(f"cutoff must be positive, got {cutoff}", field="cutoff")
    meta = read_meta(store_dir)
    path = graph_path(store_dir, cutoff, meta)
    if path.exists():
        return path, read_graph_file(path, meta["n"])
    path.parent.mkdir(exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per node; the others wait, then load
        if path.exists():
            return path, read_graph_file(path, meta["n"])
        data = load_tensors(store_dir, meta)
        pos, cell, ptr = data["pos"].numpy(), data["cell"].numpy(), data["node_ptr"].numpy()
        n = len(ptr) - 1
        jobs = [(pos[ptr[lo]:ptr[min(lo + chunk, n)]], cell[lo:min(lo + chunk, n)], ptr[lo:min(lo + chunk, n) + 1],
                 lo, min(lo + chunk, n), cutoff) for lo in range(0, n, chunk)]
        workers = workers or min(len(os.sched_getaffinity(0)), max(1, len(jobs)))
        parts = []
        bar = tqdm(total=n, desc=f"graphs (cutoff {cutoff:g} Å)", unit="structure", disable=not progress)
        with bar:
            if workers == 1:
                results = map(_build_chunk, jobs)
            else:
                pool = ProcessPoolExecutor(workers)
                results = pool.map(_build_chunk, jobs)
            try:
                for chunk_parts, bad, atom in results:
                    if bad is not None:
                        z = int(data["numbers"][ptr[bad] + atom])
                        raise InputError(f"atom {atom} (Z={z}) has no neighbour within the cutoff {cutoff:g} Å",
                                         file=meta["sources"][bad] or store_dir, entry=meta["ids"][bad],
                                         field="structure")
                    parts.extend(chunk_parts)
                    bar.update(len(chunk_parts))
            finally:
                if workers != 1:
                    pool.shutdown(cancel_futures=True)
        counts = np.array([p[0].shape[1] for p in parts], dtype=np.int64)
        edge_ptr = np.zeros(n + 1, dtype=np.int64)
        edge_ptr[1:] = np.cumsum(counts)
        tensors = {
            "edge_index": torch.from_numpy(np.concatenate([p[0] for p in parts], axis=1)),
            "edge_shift": torch.from_numpy(np.concatenate([p[1] for p in parts], axis=0)),
            "edge_ptr": torch.from_numpy(edge_ptr),
            "cutoff": torch.tensor(float(cutoff)),
        }
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # written whole, then renamed into place
        try:
            torch.save(tensors, tmp)
            tmp.rename(path)
        finally:
            tmp.unlink(missing_ok=True)
    return path, read_graph_file(path, meta["n"])


def load_graphs(store_dir: str | Path, cutoff: float = DEFAULT_CUTOFF, **build_kwargs) -> dict[str, torch.Tensor]:
    """The graph tensors of a store for ``cutoff``, memory-mapped; built first if missing."""
    return _graphs(store_dir, cutoff, **build_kwargs)[1]
