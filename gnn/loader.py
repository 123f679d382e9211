"""Fast batches of periodic graphs straight from the memory-mapped store and graph file.

Gathering is vectorised over the whole batch (no per-structure Python objects), which keeps data loading
a small fraction of a training step even for small models on a CPU. A batch is a PyG ``Batch`` with

    z [N] int64, pos [N, 3], cell [B, 3, 3], batch [N], ptr [B + 1],
    edge_index [2, E] (global atom indices), edge_shift [E, 3] float, y_<target> [B, ...]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch_geometric.data import Batch

from gnn.graphs import load_graphs
from gnn.store import Store


def _gather_ranges(ptr: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated ``arange(ptr[i], ptr[i+1])`` for i in ``idx``, and the length of each range."""
    start = ptr[idx]
    count = ptr[idx + 1] - start
    offset = torch.repeat_interleave(start - (torch.cumsum(count, 0) - count), count)
    return torch.arange(int(count.sum())) + offset, count


class GraphData:
    """A store and its graphs for one cutoff, ready to batch. ``targets`` selects the label tensors."""

    def __init__(self, store: Store | str, cutoff: float, targets: list[str]):
        self.store = store if isinstance(store, Store) else Store(store)
        g = load_graphs(self.store.path, cutoff, progress=False)
        t = self.store.tensors
        self.numbers, self.pos, self.cell, self.node_ptr = t["numbers"], t["pos"], t["cell"], t["node_ptr"]
        self.edge_index, self.edge_shift, self.edge_ptr = g["edge_index"], g["edge_shift"], g["edge_ptr"]
        self.targets = list(targets)
        self.y = {name: t[f"y_{name}"] for name in self.targets}

    def __len__(self) -> int:
        return len(self.node_ptr) - 1

    def batch(self, idx) -> Batch:
        """Collate the structures ``idx`` into one ``Batch``."""
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        nodes, n_count = _gather_ranges(self.node_ptr, idx)
        edges, e_count = _gather_ranges(self.edge_ptr, idx)
        node_start = torch.cumsum(n_count, 0) - n_count
        edge_index = self.edge_index[:, edges].long() + torch.repeat_interleave(node_start, e_count)
        ptr = torch.zeros(len(idx) + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(n_count, 0)
        fields = {f"y_{k}": v[idx] for k, v in self.y.items()}
        return Batch(z=self.numbers[nodes].long(), pos=self.pos[nodes], cell=self.cell[idx],
                     batch=torch.repeat_interleave(torch.arange(len(idx)), n_count), ptr=ptr,
                     edge_index=edge_index, edge_shift=self.edge_shift[edges].float(), **fields)

    def batches(self, idx: np.ndarray, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Batches over ``idx`` in order, or shuffled with ``generator`` (so an epoch's order is reproducible)."""
        idx = np.asarray(idx)
        if shuffle:
            idx = idx[torch.randperm(len(idx), generator=generator).numpy()]
        for lo in range(0, len(idx), batch_size):
            yield self.batch(idx[lo:lo + batch_size])
