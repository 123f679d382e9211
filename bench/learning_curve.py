"""Learning curve on the built-in synthetic data: does a fixed GNN keep improving from ~500 to ≥20,000 structures?

    python bench/learning_curve.py [--store DIR] [--n 26000] [--sizes 500,1000,...] [--n-params 1e5] [--threads 1]

Prints a table (n_train, epochs, val/test loss, MAE of ε and ω_D, the noise floor) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gnn.store import Store  # noqa: E402
from gnn.synth import synth_store  # noqa: E402
from gnn.train import TrainConfig, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="data/bench-learning-curve")
    ap.add_argument("--n", type=int, default=26000, help="structures to synthesise (80% are training)")
    ap.add_argument("--sizes", default="500,1000,2000,5000,10000,20000")
    ap.add_argument("--n-params", type=float, default=1e5)
    ap.add_argument("--arch", default="transformer")
    ap.add_argument("--samples", type=float, default=2e5, help="training samples per run (epochs = samples / n)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    store = Path(args.store)
    if not (store / "meta.json").exists():
        synth_store(args.n, store)
    floor = Store(store).meta["synthetic"]["loss_floor_mae"]
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        epochs = max(10, min(60, math.ceil(args.samples / n)))
        t = time.perf_counter()
        m = train(TrainConfig(data=str(store), arch=args.arch, n_params=args.n_params, n_train=n, epochs=epochs,
                              patience=None, num_threads=args.threads))
        rows.append({"n_train": n, "epochs": epochs, "val_loss": m["val_loss"], "test_loss": m["test_loss"],
                     "test_eps_mae": m["test_eps_mae"], "test_drude_mae": m["test_drude_mae"],
                     "test_eps_sc": m["test_eps_sc"], "seconds": time.perf_counter() - t})
        r = rows[-1]
        print(f"{n:>7} {epochs:>5} {r['val_loss']:>9.4f} {r['test_loss']:>9.4f} {r['test_eps_mae']:>9.4f} "
              f"{r['test_drude_mae']:>9.4f} {r['test_eps_sc']:>7.3f} {r['seconds']:>7.0f}", flush=True)
    print(f"{'n_train':>7} {'ep':>5} {'val_loss':>9} {'test_loss':>9} {'eps_mae':>9} {'drude_mae':>9} "
          f"{'eps_sc':>7} {'s':>7}   (noise floor per target ≈ {floor:.4f})")
    print(json.dumps({"bench": "learning_curve", "arch": args.arch, "n_params": args.n_params,
                      "noise_floor_mae": floor, "rows": rows}))


if __name__ == "__main__":
    main()
