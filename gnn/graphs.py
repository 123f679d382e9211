"""Periodic crystal graphs, built once per (store content, cutoff) and shared memory-mapped.

A graph holds, for every ordered pair (i → j) of atoms closer than the cutoff, including periodic
images and an atom's own images, the source and target atom and the integer image offset
``shift ∈ Z^3``. Edge vectors are rebuilt inside the model (so they stay differentiable and exact):

    r_ij = pos[j] - pos[i] + shift_ij @ cell

One graph file per cutoff, ``DIR/graphs/cutoff<rc>-<hash>.pt``, collates all structures:

    edge_index  int16 [2, E]   (source, target) atom index local to its structure
    edge_shift  int8  [E, 3]   periodic image of the target atom
    edge_ptr    int64 [n + 1]  structure k owns edges edge_ptr[k]:edge_ptr[k+1]

It is built in parallel across cores with pymatgen's neighbour search (:mod:`gnn.geometry`), written to a
temporary file and renamed, under a file lock, so concurrent trials on one node never build it twice. Where the
file lives and how it is read back are part of the store format (:func:`gnn.store.graph_path`,
:func:`gnn.store.read_graph_file`); those names, and :func:`~gnn.geometry.neighbor_list` and
:func:`~gnn.geometry.closest_pair`, can be imported from here too.
"""

from __future__ import annotations

import fcntl
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from gnn.defaults import DEFAULT_CUTOFF  # Å; also known as gnn.graphs.DEFAULT_CUTOFF
from gnn.errors import InputError
from gnn.geometry import closest_pair, neighbor_list  # noqa: F401  (closest_pair: re-exported)
from gnn.store import (REBUILD_GRAPHS, graph_path, list_graph_files, load_tensors,  # noqa: F401  (re-exported)
                       read_graph_file, read_meta)


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
        bar = tqdm(total=n, desc=f"graphs (cutoff {cutoff:g} Å)", unit="structure", disable=None if progress else True)
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
