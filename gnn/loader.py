"""Fast batches of periodic graphs straight from the memory-mapped store and graph file.

Gathering is vectorised over the whole batch (no per-structure Python objects), which keeps data loading
a small fraction of a training step even for small models on a CPU. A batch is a PyG ``Batch`` with

    z [N] int64, pos [N, 3], cell [B, 3, 3], batch [N], ptr [B + 1],
    edge_index [2, E] (global atom indices), edge_shift [E, 3] float, y_<target> [B, ...]

On a GPU the store's tensors can live on the device (:meth:`GraphData.to`): a batch is then gathered there from
a few per-structure numbers, without a host sync; otherwise :func:`prefetch` gathers the next batches on the
CPU in a background thread and copies them from pinned memory while the GPU computes.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch_geometric.data import Batch

from gnn.graphs import load_graphs
from gnn.store import Store

#: the store's tensors a batch gathers from (moved by :meth:`GraphData.to`; the pointers stay on the CPU)
GATHERED = ("numbers", "pos", "cell", "edge_index", "edge_shift")


def _gather_ranges(start: torch.Tensor, count: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenated ``arange(start[i], start[i] + count[i])``, of length ``total`` = ``count.sum()`` (given, so
    that a device computes it without a host sync)."""
    offset = torch.repeat_interleave(start - (torch.cumsum(count, 0) - count), count, output_size=total)
    return torch.arange(total, device=start.device) + offset


class GraphData:
    """A store and its graphs for one cutoff, ready to batch. ``targets`` selects the label tensors.

    ``y`` (the labels, for metrics) and the pointers stay on the CPU; :attr:`device` is where batches are made.
    """

    def __init__(self, store: Store | str, cutoff: float, targets: list[str]):
        self.store = store if isinstance(store, Store) else Store(store)
        g = load_graphs(self.store.path, cutoff, progress=False)
        t = self.store.tensors
        self.numbers, self.pos, self.cell, self.node_ptr = t["numbers"], t["pos"], t["cell"], t["node_ptr"]
        self.edge_index, self.edge_shift, self.edge_ptr = g["edge_index"], g["edge_shift"], g["edge_ptr"]
        self.targets = list(targets)
        self.y = {name: t[f"y_{name}"] for name in self.targets}
        self._y_batch = self.y
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.node_ptr) - 1

    @property
    def nbytes(self) -> int:
        """Bytes that :meth:`to` puts on a device."""
        return sum(getattr(self, n).nbytes for n in GATHERED) + sum(v.nbytes for v in self.y.values())

    def to(self, device: torch.device | str) -> "GraphData":
        """This data with the gathered tensors and labels on ``device`` (a copy; ``self`` is unchanged)."""
        other = copy.copy(self)
        other.device = torch.device(device)
        for name in GATHERED:
            setattr(other, name, getattr(self, name).to(device))
        other._y_batch = {k: v.to(device) for k, v in self.y.items()}
        return other

    def batch(self, idx) -> Batch:
        """Collate the structures ``idx`` into one ``Batch`` on :attr:`device`."""
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        n_start, e_start = self.node_ptr[idx], self.edge_ptr[idx]
        n_count, e_count = self.node_ptr[idx + 1] - n_start, self.edge_ptr[idx + 1] - e_start
        n_total, e_total = int(n_count.sum()), int(e_count.sum())  # CPU pointers: no device sync
        dev = self.device
        idx, n_start, e_start, n_count, e_count = (x.to(dev, non_blocking=True)
                                                   for x in (idx, n_start, e_start, n_count, e_count))
        nodes = _gather_ranges(n_start, n_count, n_total)
        edges = _gather_ranges(e_start, e_count, e_total)
        node_start = torch.cumsum(n_count, 0) - n_count
        edge_index = self.edge_index[:, edges].long() + torch.repeat_interleave(node_start, e_count,
                                                                                 output_size=e_total)
        ptr = torch.zeros(len(idx) + 1, dtype=torch.long, device=dev)
        ptr[1:] = torch.cumsum(n_count, 0)
        fields = {f"y_{k}": v[idx] for k, v in self._y_batch.items()}
        batch = torch.repeat_interleave(torch.arange(len(idx), device=dev), n_count, output_size=n_total)
        return Batch(z=self.numbers[nodes].long(), pos=self.pos[nodes], cell=self.cell[idx], batch=batch, ptr=ptr,
                     edge_index=edge_index, edge_shift=self.edge_shift[edges].float(), **fields)

    def batches(self, idx: np.ndarray, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Batches over ``idx`` in order, or shuffled with ``generator`` (so an epoch's order is reproducible)."""
        idx = np.asarray(idx)
        if shuffle:
            idx = idx[torch.randperm(len(idx), generator=generator).numpy()]
        for lo in range(0, len(idx), batch_size):
            yield self.batch(idx[lo:lo + batch_size])


def prefetch(batches: Iterable[Batch], device: torch.device, depth: int = 2) -> Iterator[Batch]:
    """``batches`` moved to ``device``, made ``depth`` ahead in a background thread (pinned, non-blocking copies
    on CUDA). Order is kept; an error in the producer is raised here; leaving the loop early stops the thread."""
    done = object()
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    pin = device.type == "cuda"

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for b in batches:
                b = b.pin_memory() if pin else b
                if not put(b.to(device, non_blocking=True)):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 — re-raised in the consumer
            put(exc)

    thread = threading.Thread(target=produce, name="matscale-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
