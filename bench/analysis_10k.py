"""End-to-end analysis benchmark: an MLflow experiment of 10,000 trial runs in a SQLite store.

    python bench/analysis_10k.py [--out /tmp/matscale-bench-10k] [--runs 10000]

The store is filled once (runs shaped like those `matscale sweep` writes: 2 archs × 5 sizes × 10 data sizes ×
5 seeds × 20 HPO trials, losses from a broken power law in D with a floor in N, plus noise); then
``analyze_experiment`` (``--axis``, default both: 10 data curves, 20 parameter curves, 2 joint fits) is timed end to end: loading with pagination, aggregation, every fit with
1,000 bootstrap resamples, plots, report and the analysis run. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fill(uri: str, runs: int) -> None:
    from mlflow.entities import Metric, Param, RunTag

    from sweeps import tracking

    c = tracking.client(uri)
    exp = tracking.experiment_id(c, "bench-10k")  # artifacts beside the store, not in ./mlruns
    rng = np.random.default_rng(0)
    grid = [(a, n, d, s, t) for a in ("cgc", "transformer") for n in np.logspace(4, 6, 5)
            for d in np.logspace(3, 5, 10).round().astype(int) for s in range(5) for t in range(20)][:runs]
    now = int(time.time() * 1000)
    for i, (arch, n, d, seed, t) in enumerate(grid):
        loss = (0.3 + (3e4 / n) ** 0.5) * (3e4 / d) ** 0.4 * (1 + 3e4 / d) ** -0.25
        loss *= (1 + 0.02 * rng.standard_normal()) * (1 + 0.3 * rng.random())  # seed noise, HPO spread
        key = f"{arch}-N{n:.0e}-D{d}-s{seed}"
        run = c.create_run(exp, run_name=f"{key}-t{t}", tags={"matscale.kind": "trial", "matscale.point": key,
                                                              "matscale.trial_key": f"{key}-t{t}",
                                                              "matscale.stage": "grid"})
        metrics = {"val_loss": loss, "test_loss": loss * 1.02, "n_train": d, "n_params": n, "n_params_target": n,
                   "seed": seed, "trial_index": t, "val_eps_mae": loss * 0.6, "val_drude_mae": loss * 0.4,
                   "wall_time_s": 60.0}
        c.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                    params=[Param("arch", arch), Param("hp.lr", f"{1e-3 * (1 + t):.4g}")],
                    tags=[RunTag("mlflow.runName", f"{key}-t{t}")])
        c.set_terminated(run.info.run_id, "FINISHED")
        if i % 1000 == 999:
            print(f"filled {i + 1} runs", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/matscale-bench-10k")
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--axis", default="both", choices=["data", "params", "both"])
    args = ap.parse_args()

    from analysis.experiment import analyze_experiment

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    if not (out / "filled").exists():
        (out / "mlflow.db").unlink(missing_ok=True)
        fill(uri, args.runs)
        (out / "filled").write_text("ok")
    t = time.perf_counter()
    res = analyze_experiment("bench-10k", uri, axis=args.axis, out=out / "analysis", n_boot=args.bootstrap,
                             verbose=False)
    dt = time.perf_counter() - t
    print(f"{'runs':>6} {'axis':>6} {'groups':>7} {'seconds':>8}")
    print(f"{args.runs:>6} {args.axis:>6} {len(res['groups']):>7} {dt:>8.1f}")
    print(json.dumps({"bench": "analysis_10k", "runs": args.runs, "axis": args.axis, "groups": len(res["groups"]),
                      "seconds": dt, "bootstrap": args.bootstrap}))


if __name__ == "__main__":
    main()
