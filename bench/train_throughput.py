"""Training-throughput benchmark: samples/s, peak memory and data-loading share per architecture and size.

    python bench/train_throughput.py [--sizes 1e5,1e6] [--archs cgc,transformer] [--device auto] [--steps 60]
                                     [--precision auto|fp32|bf16] [--repeat 3] [--compare OTHER_CHECKOUT]

Each configuration runs in a fresh process (so peak memory is its own) on the built-in synthetic metals
(101 frequency points, batch 32), ``--repeat`` times; the table shows the median of samples/s (training steps,
wall clock) and of samples per CPU-second of the whole run (steadier on a loaded machine). ``--compare`` runs the same
configurations with another checkout of matscale (e.g. ``git worktree add /tmp/old HEAD~1``), interleaved with
this one, and adds the ratio this/other. ``OMP_WAIT_POLICY=PASSIVE`` unless set (busy-waiting threads distort
timings on a loaded machine). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ONE_RUN = """
import json, sys, time
sys.path.insert(0, {root!r})
from gnn.train import TrainConfig, train
extra = {{"precision": {precision!r}}} if {precision!r} != "auto" else {{}}  # an older checkout lacks the option
cpu = time.process_time()
m = train(TrainConfig(data={data!r}, arch={arch!r}, n_params={n_params}, epochs=1, max_steps={steps},
                      n_train={n_train}, batch_size={batch}, patience=None, device={device!r}, num_threads={threads},
                      **extra))
m["run_cpu_s"] = time.process_time() - cpu  # the whole run (data, steps, evaluation): comparable across versions
print(json.dumps(m))
"""


def _per_cpu_s(runs: list[dict], batch: int) -> float:
    """Median samples trained per CPU-second of the whole run."""
    return statistics.median(x["steps"] * batch / x["run_cpu_s"] for x in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e5,1e6")
    ap.add_argument("--archs", default="cgc,transformer")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--store", default="data/bench-throughput")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (median shown)")
    ap.add_argument("--compare", help="another matscale checkout to run interleaved with this one")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from gnn.synth import synth_store

    store = Path(args.store)
    if not (store / "meta.json").exists():
        synth_store(3000, store, progress=False)
    n_train = args.steps * args.batch
    roots = {"this": ROOT} if not args.compare else {"this": ROOT, "other": Path(args.compare).resolve()}
    rows = []
    print(f"{'arch':<12} {'params':>10} {'device':>6} {'prec':>5} {'samples/s':>10} {'/cpu-s':>7} {'peak MiB':>9} "
          f"{'data':>6}" + (f" {'other/cpu-s':>11} {'ratio':>6}" if args.compare else ""), flush=True)
    for arch in args.archs.split(","):
        for size in args.sizes.split(","):
            runs: dict[str, list[dict]] = {name: [] for name in roots}
            for _ in range(args.repeat):
                for name, root in roots.items():  # interleaved: both see the same machine load
                    code = ONE_RUN.format(root=str(root), data=str(store), arch=arch, n_params=float(size),
                                          steps=args.steps, n_train=min(n_train, 2400), batch=args.batch,
                                          device=args.device, threads=args.threads, precision=args.precision)
                    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                    runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
            m = runs["this"][0]
            r = {"arch": arch, "n_params": m["n_params"], "device": m["device"],
                 "precision": m.get("precision", "fp32"),
                 "samples_per_s": statistics.median(x["samples_per_s"] for x in runs["this"]),
                 "samples_per_cpu_s": _per_cpu_s(runs["this"], args.batch),
                 "peak_memory_mb": max(x["peak_memory_mb"] for x in runs["this"]),
                 "data_time_frac": statistics.median(x["data_time_frac"] for x in runs["this"]), "steps": m["steps"]}
            line = (f"{arch:<12} {r['n_params']:>10} {r['device']:>6} {r['precision']:>5} {r['samples_per_s']:>10.0f} "
                    f"{r['samples_per_cpu_s']:>7.1f} {r['peak_memory_mb']:>9.0f} {100 * r['data_time_frac']:>5.1f}%")
            if args.compare:
                r["other_samples_per_s"] = statistics.median(x["samples_per_s"] for x in runs["other"])
                r["other_samples_per_cpu_s"] = _per_cpu_s(runs["other"], args.batch)
                r["ratio"] = r["samples_per_cpu_s"] / r["other_samples_per_cpu_s"]  # per CPU-second
                line += f" {r['other_samples_per_cpu_s']:>11.1f} {r['ratio']:>6.2f}"
            rows.append(r)
            print(line, flush=True)
    print(json.dumps({"bench": "train_throughput", "batch_size": args.batch, "repeat": args.repeat,
                      "compare": args.compare, "rows": rows}))


if __name__ == "__main__":
    main()
