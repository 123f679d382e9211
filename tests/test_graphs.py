import itertools

import numpy as np
import pytest
import torch

from gnn.geometry import neighbor_list


def brute_force(pos, cell, cutoff):
    """Every (i, j, shift) with 0 < |pos_j + shift·cell − pos_i| < cutoff, by enumerating enough images."""
    recip = np.linalg.inv(cell).T  # rows: reciprocal vectors / 2π
    reach = [int(np.ceil(cutoff * np.linalg.norm(recip[k]))) + 1 for k in range(3)]
    found = set()
    for shift in itertools.product(*(range(-r, r + 1) for r in reach)):
        t = np.array(shift) @ cell
        for i in range(len(pos)):
            for j in range(len(pos)):
                d = np.linalg.norm(pos[j] + t - pos[i])
                if 1e-8 < d < cutoff:
                    found.add((i, j, *shift))
    return found


def cells():
    rng = np.random.default_rng(0)
    yield "one atom, small cubic cell (sees its own images)", np.eye(3) * 2.1, np.zeros((1, 3))
    yield "triclinic two atoms", np.array([[3.1, 0.0, 0.0], [0.9, 2.8, 0.0], [0.7, -0.6, 3.3]]), \
        np.array([[0.0, 0.0, 0.0], [1.4, 1.1, 1.2]])
    hexagonal = np.array([[2.5, 0.0, 0.0], [-1.25, 2.165, 0.0], [0.0, 0.0, 4.1]])
    yield "hexagonal", hexagonal, np.array([[0.0, 0.0, 0.0], [0.0, 1.443, 2.05]])
    a = np.array([[4.0, 0.3, -0.2], [0.5, 5.0, 0.4], [-0.3, 0.8, 3.6]])
    yield "random triclinic, five atoms", a, rng.random((5, 3)) @ a
    yield "needle cell (1.5 Å axis)", np.diag([1.5, 6.0, 6.5]), np.array([[0.0, 0.0, 0.0], [0.7, 3.0, 3.2]])


@pytest.mark.parametrize("cutoff", [3.0, 5.5])
@pytest.mark.parametrize("name,cell,pos", list(cells()), ids=[c[0] for c in cells()])
def test_edges_match_brute_force(name, cell, pos, cutoff):
    src, dst, shift = neighbor_list(pos, cell, cutoff)
    got = {(int(i), int(j), *map(int, s)) for i, j, s in zip(src, dst, shift)}
    assert len(got) == len(src), "duplicate edges"
    assert got == brute_force(pos, cell, cutoff)


def test_edge_vectors_in_model_match_distances(synth_dir):
    from gnn.layers import edge_vectors
    from gnn.loader import GraphData

    data = GraphData(synth_dir, 5.5, ["drude"])
    batch = data.batch([3, 7, 11])
    d = edge_vectors(batch).norm(dim=-1)
    assert d.min() > 0.5 and d.max() < 5.5 + 1e-4
    for k, idx in enumerate([3, 7, 11]):  # per-structure check against a fresh neighbour list
        s = data.store.structure(idx)
        src, dst, shift = neighbor_list(s.cart_coords, s.lattice.matrix, 5.5)
        ref = np.linalg.norm(s.cart_coords[dst] + shift @ s.lattice.matrix - s.cart_coords[src], axis=1)
        mine = d[batch.batch[batch.edge_index[0]] == k].numpy()
        np.testing.assert_allclose(np.sort(mine), np.sort(ref), atol=1e-4)


def test_graph_file_is_built_once_and_memory_mapped(synth_dir):
    from gnn.graphs import build_graphs, graph_path, load_graphs

    path = graph_path(synth_dir, 5.5)
    mtime = path.stat().st_mtime_ns
    assert build_graphs(synth_dir, 5.5, progress=False) == path
    assert path.stat().st_mtime_ns == mtime  # not rebuilt
    g = load_graphs(synth_dir, 5.5)
    assert g["edge_index"].dtype == torch.int16 and g["edge_shift"].dtype == torch.int8
    assert int(g["edge_ptr"][-1]) == g["edge_index"].shape[1]
    other = build_graphs(synth_dir, 5.0, progress=False, workers=1)
    assert other != path and other.exists()
    assert load_graphs(synth_dir, 5.0)["edge_index"].shape[1] < g["edge_index"].shape[1]


def test_neighbour_search_and_graph_file_names_stay_importable_from_graphs():
    """gnn.geometry (neighbour search) and gnn.store (where graph files live, how they are read) own these names;
    gnn.graphs, which builds the files, still exports them."""
    import gnn.geometry
    import gnn.graphs
    import gnn.store

    for name in ("neighbor_list", "closest_pair"):
        assert getattr(gnn.graphs, name) is getattr(gnn.geometry, name)
    for name in ("graph_path", "list_graph_files", "read_graph_file", "REBUILD_GRAPHS"):
        assert getattr(gnn.graphs, name) is getattr(gnn.store, name)
