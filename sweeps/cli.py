"""``matscale sweep`` and ``matscale demo``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SPECS = Path(__file__).resolve().parent / "specs"


def _cmd_sweep(args) -> None:
    from sweeps.driver import run_sweep, summary_table
    from sweeps.spec import load_spec

    overrides = {"tracking_uri": args.tracking_uri} if args.tracking_uri else {}
    spec = load_spec(args.spec, overrides)
    summary = run_sweep(spec, address=args.address, resume=args.resume, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(summary))
    elif not args.dry_run:
        print(summary_table(summary))
        print(f"MLflow: experiment {spec.experiment!r} at {spec.tracking_uri}, parent run {summary['parent_run_id']}")
    _exit_status(summary)


def _exit_status(summary: dict) -> None:
    """Exit non-zero when the sweep was interrupted (130) or trials failed (1)."""
    if summary.get("status") == "KILLED":
        print("interrupted: run the same command with --resume to continue", file=sys.stderr)
        raise SystemExit(130)
    if summary.get("status") == "FAILED":
        n = summary.get("failed") or len(summary.get("errors", []))
        print(f"{n} trials failed; see the FAILED runs in MLflow (tag matscale.failure_reason)", file=sys.stderr)
        raise SystemExit(1)


def _cmd_demo(args) -> None:
    from sweeps.driver import run_sweep, summary_table
    from sweeps.spec import load_spec

    out = Path(args.out).resolve()
    db = f"sqlite:///{out / 'mlflow.db'}"
    spec = load_spec(SPECS / "demo.yaml", {"tracking_uri": db, "storage_path": str(out / "ray")})
    spec.dataset["data_dir"] = str(out / "data")
    summary = run_sweep(spec, address="local", resume=args.resume)
    print(summary_table(summary))
    _exit_status(summary)
    try:
        from analysis.cli import report_after_sweep  # the scaling-law analysis, where installed
    except ImportError:
        report_after_sweep = None
    if report_after_sweep is not None:
        report_after_sweep(spec, summary)
    print(f"\nBrowse the runs:  mlflow ui --backend-store-uri {db} --host 127.0.0.1 --port 5000\n"
          f"then open http://127.0.0.1:5000 (experiment {spec.experiment!r}).")


def _cmd_refine(args) -> None:
    from sweeps.refine import refine_experiment
    from sweeps.tracking import env_tracking_uri

    uri = args.tracking_uri or env_tracking_uri() or "sqlite:///runs/mlflow.db"
    quiet = args.json
    res = refine_experiment(args.experiment, uri, axis=args.axis, points=args.points, seeds=args.seeds,
                            budget=args.budget, until_ci=args.until_ci, max_rounds=args.max_rounds,
                            dry_run=args.dry_run, address=args.address, progress=not quiet,
                            out=(lambda *a: None) if quiet else print)
    if args.json:
        print(json.dumps(res, default=float))


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a scaling sweep (Ray Tune + Optuna per point, tracked in MLflow)")
    p.add_argument("spec", help="sweep spec YAML (see sweeps/specs/)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "local"),
                   help="local (default), auto (attach to this machine's cluster) or ray://HOST:10001")
    p.add_argument("--tracking-uri", help="override the spec's MLflow tracking URI")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same spec")
    p.add_argument("--dry-run", action="store_true", help="print every planned trial and its cost; run nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("refine", help="launch extra trials near the breakpoints of an experiment, refit, repeat")
    p.add_argument("--experiment", required=True)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    p.add_argument("--axis", default="data", choices=["data", "params"])
    p.add_argument("--points", type=int, default=3, help="new axis values per curve and round")
    p.add_argument("--seeds", type=int, help="seeds per new value (default: the parent sweep's)")
    p.add_argument("--budget", type=int, help="at most this many new trials in all")
    p.add_argument("--until-ci", type=float, default=0.1, help="stop when every break's 95%% CI half-width ≤ this "
                   "many decades")
    p.add_argument("--max-rounds", type=int, default=3, help="rounds in all, earlier invocations included")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "local"))
    p.add_argument("--dry-run", action="store_true", help="print the proposal and the predicted CI; launch nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_refine)

    p = sub.add_parser("demo", help="run the demo sweep locally on built-in data (a few minutes on 2 cores)")
    p.add_argument("--out", default="runs/demo", help="output folder (MLflow SQLite store, Ray results, data)")
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=_cmd_demo)
