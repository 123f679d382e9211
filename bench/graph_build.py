"""Graph-building benchmark: structures/s on one core and on all cores, bytes per structure on disk.

    python bench/graph_build.py [--n 4000] [--points 2001] [--cutoff 5.5] [--out data/bench-graphs]

Structures are the built-in synthetic metals (≤12 atoms per cell). Bytes per structure count the store's
``data.pt`` (structure + ε on ``--points`` frequencies + ω_D) and the graph file; the projection to the
paper's 200k materials assumes the same atoms per cell. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gnn.defaults import DEFAULT_CUTOFF  # noqa: E402
from gnn.graphs import build_graphs  # noqa: E402
from gnn.store import Store, graph_path  # noqa: E402
from gnn.synth import synth_store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--points", type=int, default=2001)
    ap.add_argument("--cutoff", type=float, default=DEFAULT_CUTOFF)
    ap.add_argument("--out", default="data/bench-graphs")
    args = ap.parse_args()

    out = Path(args.out)
    if not (out / "meta.json").exists():
        synth_store(args.n, out, points=args.points, cutoff=args.cutoff, progress=False)
    store = Store(out)
    n = len(store)
    cores = len(os.sched_getaffinity(0))
    rows = []
    for workers in sorted({1, cores}):
        path = graph_path(out, args.cutoff)
        path.unlink(missing_ok=True)
        t = time.perf_counter()
        build_graphs(out, args.cutoff, workers=workers, progress=False)
        dt = time.perf_counter() - t
        rows.append({"workers": workers, "seconds": dt, "structures_per_s": n / dt,
                     "structures_per_s_per_core": n / dt / workers})
    graph_bytes = graph_path(out, args.cutoff).stat().st_size
    data_bytes = (out / "data.pt").stat().st_size
    per_structure = (graph_bytes + data_bytes) / n
    atoms = store.info()["atoms_per_cell"]["mean"]
    print(f"{n} structures, {atoms:.1f} atoms per cell on average, cutoff {args.cutoff:g} Å, "
          f"{args.points} frequency points")
    print(f"{'workers':>8} {'seconds':>8} {'struct/s':>10} {'struct/s/core':>14}")
    for r in rows:
        print(f"{r['workers']:>8} {r['seconds']:>8.2f} {r['structures_per_s']:>10.0f} "
              f"{r['structures_per_s_per_core']:>14.0f}")
    print(f"bytes/structure: graph {graph_bytes / n:.0f} + data {data_bytes / n:.0f} = {per_structure:.0f}; "
          f"200k-material store ≈ {per_structure * 2e5 / 1e9:.2f} GB")
    print(json.dumps({"bench": "graph_build", "n": n, "cutoff": args.cutoff, "points": args.points,
                      "atoms_per_cell": atoms, "cores": cores, "rows": rows,
                      "graph_bytes_per_structure": graph_bytes / n, "data_bytes_per_structure": data_bytes / n,
                      "store_200k_gb": per_structure * 2e5 / 1e9}))


if __name__ == "__main__":
    main()
