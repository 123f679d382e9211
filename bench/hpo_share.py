"""HPO-sharing benchmark: 2 trials per point with ``hpo.share: neighbours`` against 4 independent trials per point.

    python bench/hpo_share.py [--n-params 5e3,2e4,8e4] [--n-train 200,400,800] [--seeds 0,1] [--epochs 6]
                              [--out /tmp/matscale-bench-hpo-share]

Two real sweeps (``run_sweep``, local Ray, SQLite MLflow) over the same grid of the built-in synthetic metals and
the same search space (learning rate and weight decay, log-uniform over wide ranges, TPE): *shared* with 2 trials
per point and ``share: neighbours``, *independent* with 4 trials per point and no sharing. Trial 0 of a point draws
the same configuration in both (the sampler is seeded by the trial key), so the comparison is paired.

For every (point, seed): the best validation loss of each sweep, as ``analyze`` takes it. The paired difference
log(shared / independent) — negative when sharing is better — is summarised by its mean with a 95 % CI (t and
percentile bootstrap over pairs), wins and losses. "No worse" means the t CI's upper end is at most +2 % (log 1.02),
"worse" that its lower end is above 0, else "undecided at this precision".
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOLERANCE = math.log(1.02)  #: "no worse": the CI of the mean log ratio stays below +2 %


def _spec(out: Path, name: str, args, trials: int, share: str) -> dict:
    return {
        "experiment": f"bench-hpo-{name}",
        "dataset": {"synthetic": {"n": args.n_data, "points": 41, "seed": 0, "noise": 0.05},
                    "data_dir": str(out / "data")},
        "archs": [args.arch],
        "axes": {"n_train": [int(v) for v in args.n_train.split(",")],
                 "n_params": [float(v) for v in args.n_params.split(",")],
                 "seeds": [int(v) for v in args.seeds.split(",")]},
        "budget": {"epochs": args.epochs, "patience": args.epochs},
        "hpo": {"trials_per_point": trials, "sampler": "tpe", "share": share,
                "space": {"lr": {"log_uniform": [1e-4, 3e-2]}, "weight_decay": {"log_uniform": [1e-6, 1e-1]},
                          "batch_size": 32}},
        "system_metrics": False, "num_threads": 1,
        "tracking_uri": f"sqlite:///{out / name / 'mlflow.db'}", "storage_path": str(out / name / "ray"),
    }


def _best(spec) -> dict:
    from analysis.runs import aggregate, load_runs

    df, _ = load_runs(spec.tracking_uri, spec.experiment)
    best, _, _ = aggregate(df)
    return {(r.arch, r.n_params_target, int(r.n_train), int(r.seed)): float(r.val_loss) for r in best.itertuples()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="cgc")
    ap.add_argument("--n-params", default="5e3,2e4,8e4")
    ap.add_argument("--n-train", default="200,400,800")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n-data", type=int, default=1600, help="structures synthesised (the training split ~70 %)")
    ap.add_argument("--boot", type=int, default=10000)
    ap.add_argument("--out", default="/tmp/matscale-bench-hpo-share")
    args = ap.parse_args()

    import ray

    from sweeps.driver import prepare_store, run_sweep
    from sweeps.spec import validate

    out = Path(args.out)
    for name in ("shared", "independent"):
        shutil.rmtree(out / name, ignore_errors=True)
    specs = {"shared": validate(_spec(out, "shared", args, 2, "neighbours"), "bench"),
             "independent": validate(_spec(out, "independent", args, 4, "none"), "bench")}
    prepare_store(specs["shared"], progress=False)
    ray.init(address="local", include_dashboard=False, configure_logging=False)
    wall = {}
    try:
        for name, spec in specs.items():
            t = time.perf_counter()
            summary = run_sweep(spec, progress=False)
            wall[name] = time.perf_counter() - t
            if summary["status"] != "FINISHED":
                raise SystemExit(f"the {name} sweep ended {summary['status']}")
    finally:
        ray.shutdown()
    shared, indep = _best(specs["shared"]), _best(specs["independent"])
    keys = sorted(set(shared) & set(indep))
    diff = np.array([math.log(shared[k] / indep[k]) for k in keys])
    n = len(diff)
    mean, sd = float(diff.mean()), float(diff.std(ddof=1)) if n > 1 else float("nan")
    from scipy import stats

    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else float("nan")
    rng = np.random.default_rng(0)
    boot = diff[rng.integers(0, n, (args.boot, n))].mean(axis=1)
    boot_ci = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
    print(f"{'arch':<6} {'N':>8} {'D':>6} {'seed':>4} {'shared (2)':>11} {'indep. (4)':>11} {'log ratio':>10}")
    for k, d in zip(keys, diff):
        print(f"{k[0]:<6} {k[1]:>8.3g} {k[2]:>6} {k[3]:>4} {shared[k]:>11.4f} {indep[k]:>11.4f} {d:>+10.4f}")
    wins, losses = int((diff < 0).sum()), int((diff > 0).sum())
    verdict = ("no worse" if mean + half <= TOLERANCE else "worse" if mean - half > 0 else
               "undecided at this precision")
    print(f"pairs {n}; mean log(shared/independent) {mean:+.4f} (95 % CI t [{mean - half:+.4f}, {mean + half:+.4f}], "
          f"bootstrap [{boot_ci[0]:+.4f}, {boot_ci[1]:+.4f}]); shared better in {wins}, worse in {losses}; "
          f"trials {2 * n} vs {4 * n}; wall {wall['shared']:.0f} s vs {wall['independent']:.0f} s → {verdict}")
    print(json.dumps({"bench": "hpo_share", "pairs": n, "mean_log_ratio": mean, "ci_t": [mean - half, mean + half],
                      "ci_bootstrap": boot_ci, "shared_better": wins, "shared_worse": losses,
                      "trials_shared": 2 * n, "trials_independent": 4 * n, "wall_s": wall, "verdict": verdict,
                      "tolerance_log": TOLERANCE}))


if __name__ == "__main__":
    main()
