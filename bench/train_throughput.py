"""Training-throughput benchmark: samples/s, peak memory and data-loading share per architecture and size.

    python bench/train_throughput.py [--sizes 1e5,1e6] [--archs cgc,transformer] [--device auto] [--steps 60]

Each configuration runs in a fresh process (so peak memory is its own) on the built-in synthetic metals
(101 frequency points, batch 32). On CUDA the run uses bf16 autocast. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ONE_RUN = """
import json, sys
sys.path.insert(0, {root!r})
from gnn.train import TrainConfig, train
m = train(TrainConfig(data={data!r}, arch={arch!r}, n_params={n_params}, epochs=1, max_steps={steps},
                      n_train={n_train}, batch_size={batch}, patience=None, device={device!r}, num_threads={threads}))
print(json.dumps(m))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e5,1e6")
    ap.add_argument("--archs", default="cgc,transformer")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--store", default="data/bench-throughput")
    args = ap.parse_args()

    from gnn.synth import synth_store

    store = Path(args.store)
    if not (store / "meta.json").exists():
        synth_store(3000, store, progress=False)
    n_train = args.steps * args.batch
    rows = []
    for arch in args.archs.split(","):
        for size in args.sizes.split(","):
            code = ONE_RUN.format(root=str(ROOT), data=str(store), arch=arch, n_params=float(size), steps=args.steps,
                                  n_train=min(n_train, 2400), batch=args.batch, device=args.device,
                                  threads=args.threads)
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            m = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append({"arch": arch, "n_params": m["n_params"], "device": m["device"],
                         "samples_per_s": m["samples_per_s"], "peak_memory_mb": m["peak_memory_mb"],
                         "data_time_frac": m["data_time_frac"], "steps": m["steps"]})
            r = rows[-1]
            print(f"{arch:<12} {r['n_params']:>10} {r['device']:>6} {r['samples_per_s']:>10.0f} "
                  f"{r['peak_memory_mb']:>10.0f} {100 * r['data_time_frac']:>8.1f}%", flush=True)
    print(f"{'arch':<12} {'params':>10} {'device':>6} {'samples/s':>10} {'peak MiB':>10} {'data':>9}")
    print(json.dumps({"bench": "train_throughput", "batch_size": args.batch, "rows": rows}))


if __name__ == "__main__":
    main()
