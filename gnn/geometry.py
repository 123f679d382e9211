"""Periodic neighbour search on plain arrays (numpy; pymatgen's ``find_points_in_spheres`` loaded on first use).

The lowest rung of the structure code: the graph builder (:mod:`gnn.graphs`), the store writer's overlap check
(:mod:`gnn.ingest`) and the synthetic generator (:mod:`gnn.synth`) all search neighbours here.
"""

from __future__ import annotations

import numpy as np


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
