"""Fitting benchmark: every candidate law with 1,000 bootstrap resamples on 21 runs (7 sizes × 3 seeds).

    python bench/analysis_fit.py [--csv ../shared/data/optimetal2026_scaling_1d.csv] [--bootstrap 1000]

Uses the published data-axis sweep of the dielectric paper (optimetal2b-cgc) when the CSV is found, else a
simulated broken power law with 1.5 % seed noise. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.fit import make_curve  # noqa: E402
from analysis.laws import make_law  # noqa: E402
from analysis.scaling import fit_curve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=os.environ.get("MATSCALE_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
                    + "/optimetal2026_scaling_1d.csv")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    if Path(args.csv).exists():
        import pandas as pd

        df = pd.read_csv(args.csv)
        df = df[(df.model == "optimetal2b-cgc") & (df.axis == "data")]
        curve, source = make_curve(df.n_train, df.val_loss), "published optimetal2b-cgc data axis"
    else:
        rng = np.random.default_rng(0)
        x = np.logspace(3.4, 5.2, 7)
        y = make_law("broken", (3, 5), (0, 0)).predict(x, {"x_c": 5e4, "alpha1": 0.15, "alpha2": 0.42})
        xs = np.tile(x, 3)
        curve, source = make_curve(xs, np.tile(y, 3) * (1 + 0.015 * rng.standard_normal(21))), "simulated"
    t = time.perf_counter()
    r = fit_curve(curve, "auto", holdout=2, n_boot=args.bootstrap, workers=args.workers)
    dt = time.perf_counter() - t
    print(f"{source}: {r['n_runs']} runs, {r['n_points']} points, {len(r['candidates'])} laws, "
          f"{args.bootstrap} resamples each, {len(os.sched_getaffinity(0))} cores")
    print(f"{'law':<12} {'AICc':>9} {'RMSLE':>8}")
    for c in r["candidates"]:
        print(f"{c['law']:<12} {c['aicc']:>9.2f} {c['rmsle_holdout']:>8.4f}")
    print(f"winner {r['law']}; total {dt:.2f} s")
    print(json.dumps({"bench": "analysis_fit", "runs": r["n_runs"], "laws": len(r["candidates"]),
                      "bootstrap": args.bootstrap, "seconds": dt, "winner": r["law"]}))


if __name__ == "__main__":
    main()
