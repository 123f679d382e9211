"""Sweep-overhead benchmark: what Ray Tune + MLflow add to trials with a fixed amount of training work.

    python bench/sweep_overhead.py [--trials 8] [--epochs 5] [--n-train 600] [--out /tmp/matscale-bench-sweep]

1. *Ideal*: the same trainings called directly, one after another in this process, timed; with ``S`` parallel
   slots (CPUs / CPUs per trial) the ideal sweep time is Σ t_i / S.
2. *Sweep*: the same trials through ``run_sweep`` (local Ray, SQLite MLflow), timed from the call to its return.

Per-trial overhead = (sweep − ideal) · S / trials; per-report costs come from the trials themselves
(``mlflow_s_per_report``: the batched MLflow call; ``tune_s_per_report``: tune.report with its checkpoint).

Threads and oversubscription (run it with more trials than cores, the default): every trial must train with
exactly ``--cpu`` torch threads (its metric ``threads``), at most cores / cpu trials may train at once (from each
trial's ``started_at`` and ``wall_time_s``), and each trial's CPU time per wall second must stay within its threads;
the node's CPU use is Σ cpu_time_s / (sweep time × cores). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--n-params", type=float, default=3e4)
    ap.add_argument("--cpu", type=int, default=1, help="CPUs (and torch threads) per trial")
    ap.add_argument("--out", default="/tmp/matscale-bench-sweep")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep (a loaded node)

    import ray

    from gnn.train import TrainConfig, train
    from sweeps import tracking
    from sweeps.driver import prepare_store, run_sweep
    from sweeps.spec import validate

    out = Path(args.out)
    shutil.rmtree(out / "ray", ignore_errors=True)
    (out / "mlflow.db").unlink(missing_ok=True)
    raw = {
        "experiment": "bench-overhead",
        "dataset": {"synthetic": {"n": max(1000, int(args.n_train / 0.7)), "points": 41, "seed": 0},
                    "data_dir": str(out / "data")},
        "archs": ["cgc"],
        "axes": {"n_train": [args.n_train], "n_params": [args.n_params], "seeds": list(range(args.trials))},
        "budget": {"epochs": args.epochs, "patience": args.epochs + 1},
        "hpo": {"trials_per_point": 1, "space": {"lr": 1e-3, "batch_size": 32}},
        "system_metrics": False, "resources": {"cpu": args.cpu, "gpu": 0},
        "tracking_uri": f"sqlite:///{out / 'mlflow.db'}", "storage_path": str(out / "ray"),
    }
    spec = validate(raw, "bench")
    store = prepare_store(spec, progress=False)

    ideal = []
    for seed in range(args.trials):
        t = time.perf_counter()
        train(TrainConfig(data=str(store), arch="cgc", n_params=args.n_params, n_train=args.n_train, seed=seed,
                          epochs=args.epochs, patience=args.epochs + 1, lr=1e-3, num_threads=args.cpu))
        ideal.append(time.perf_counter() - t)

    ray.init(address="local", include_dashboard=False, configure_logging=False)
    cores = int(ray.cluster_resources()["CPU"])
    slots = max(1, cores // args.cpu)
    t = time.perf_counter()
    summary = run_sweep(spec, progress=False)
    sweep_s = time.perf_counter() - t
    ray.shutdown()

    c = tracking.client(tracking.normalise_uri(spec.tracking_uri))
    runs = [c.get_run(r["run_id"]) for r in summary["trials"]]
    mlflow_ms = 1000 * sum(r.data.metrics["mlflow_s_per_report"] for r in runs) / len(runs)
    tune_ms = 1000 * sum(r.data.metrics["tune_s_per_report"] for r in runs) / len(runs)
    ideal_s = sum(ideal) / slots
    threads = sorted({int(r.data.metrics["threads"]) for r in runs})
    spans = sorted((r.data.metrics["started_at"], r.data.metrics["started_at"] + r.data.metrics["wall_time_s"])
                   for r in runs)
    concurrent = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    cpu_per_wall = max(r.data.metrics["cpu_time_s"] / r.data.metrics["wall_time_s"] for r in runs)
    node_use = sum(r.data.metrics["cpu_time_s"] for r in runs) / (sweep_s * cores)
    per_trial = (sweep_s - ideal_s) * slots / args.trials
    mean_trial = sum(ideal) / len(ideal)
    row = {"trials": args.trials, "slots": slots, "epochs": args.epochs, "mean_trial_s": mean_trial,
           "ideal_s": ideal_s, "sweep_s": sweep_s, "overhead_per_trial_s": per_trial,
           "overhead_share_of_60s_trial": per_trial / 60.0, "mlflow_ms_per_report": mlflow_ms,
           "tune_report_ms_per_report": tune_ms, "status": summary["status"], "cores": cores, "cpu_per_trial": args.cpu,
           "trial_threads": threads, "max_concurrent_trials": concurrent, "max_trial_cpu_per_wall_s": cpu_per_wall,
           "node_cpu_use": node_use,
           "oversubscribed": concurrent * args.cpu > cores or threads != [args.cpu] or cpu_per_wall > args.cpu * 1.1}
    print(f"{'trials':>6} {'slots':>5} {'trial s':>8} {'ideal s':>8} {'sweep s':>8} {'overhead/trial s':>17} "
          f"{'of 60 s':>8} {'mlflow ms/report':>17} {'tune ms/report':>15}")
    print(f"{args.trials:>6} {slots:>5} {mean_trial:>8.2f} {ideal_s:>8.1f} {sweep_s:>8.1f} {per_trial:>17.2f} "
          f"{100 * per_trial / 60:>7.1f}% {mlflow_ms:>17.1f} {tune_ms:>15.1f}")
    print(f"threads per trial {threads} (cpu {args.cpu}); at most {concurrent} trials at once on {cores} cores; "
          f"a trial's CPU-s per wall-s ≤ {cpu_per_wall:.2f}; node CPU use {100 * node_use:.0f} % → "
          + ("OVERSUBSCRIBED" if row["oversubscribed"] else "not oversubscribed"))
    print(json.dumps({"bench": "sweep_overhead", **row}))


if __name__ == "__main__":
    main()
