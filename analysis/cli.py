"""The ``matscale`` command line — the top of the stack: it registers the commands of every layer.

    matscale data import KIND SRC --out DIR     read optimetal | petousis | cif-folder | extxyz data into a store
    matscale data synth --n N --out DIR         built-in synthetic metals (ε(ω) and ω_D labels)
    matscale data info DIR                      summarise a store
    matscale train --data DIR --arch cgc --n-params 1e5 --fraction 0.25 --seed 0 --epochs 5 --json
    matscale sweep SPEC [--address local|auto|ray://…] [--tracking-uri URI] [--resume] [--dry-run]
    matscale cluster check FILE…                validate cluster configs offline
    matscale server                             an MLflow tracking server
    matscale demo                               the demo sweep on embedded defaults, then its analysis
    matscale fit CSV --x COL --y COL [...]      fit scaling laws to any table
    matscale analyze --experiment NAME [...]    fit scaling laws to a sweep's MLflow experiment
    matscale refine --experiment NAME [...]     extra trials near the breakpoints, refit, repeat

User errors print one line (``error: FILE: entry 'ID': field 'NAME': ...``) and exit with status 2. Every heavy
import (torch, Ray, MLflow, pandas) happens inside a command, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from gnn.errors import InputError

LAWS_HELP = "auto|power|floor|broken|broken_amp|bnsl:K|chinchilla|kaplan|kaplan_broken"
OBJECTIVE_HELP = ("auto (default): msle for bnsl:K, wls otherwise; wls: least squares weighted by the seed spread; "
                  "huber: robust to outlying points; msle: squared error of log(L + 1), as the BNSL authors fit")
MIN_BOOT = 10  # percentile_ci draws no interval from fewer resamples


def _check_numbers(args) -> None:
    """The numeric flags of ``fit`` and ``analyze``: nonsense (negative, too few resamples, a loss that is not a
    positive finite number) is one line naming the flag, not a traceback or a silently empty result."""
    if args.bootstrap < 0 or 0 < args.bootstrap < MIN_BOOT:
        raise InputError(f"--bootstrap must be 0 (no confidence intervals) or at least {MIN_BOOT}, got "
                         f"{args.bootstrap}", field="bootstrap")
    for flag in ("holdout", "seed"):
        if getattr(args, flag) < 0:
            raise InputError(f"--{flag} must be 0 or more, got {getattr(args, flag)}", field=flag)
    if args.target is not None and not (math.isfinite(args.target) and args.target > 0):
        raise InputError(f"--target must be a positive, finite loss, got {args.target}", field="target")
    for flag in ("budget", "target_loss"):
        values = getattr(args, flag)
        values = values if isinstance(values, list) else [] if values is None else [values]
        bad = [v for v in values if not (math.isfinite(v) and v > 0)]
        if bad:
            raise InputError(f"--{flag.replace('_', '-')} must be positive and finite, got {bad[0]}", field=flag)


def _frontier_options(args, df, file=None) -> dict | None:
    """``fit_curve``'s ``frontier`` options from ``--frontier``, ``--cost``, ``--budget`` and ``--target-loss``:
    the cost is ``--cost``, else fitted to a ``train_flops`` column (with ``epochs`` when there is one), else
    :data:`analysis.frontier.DEFAULT_COST`."""
    from analysis import frontier

    if not args.frontier:
        for flag in ("cost", "budget", "target_loss"):
            if getattr(args, flag) is not None:
                raise InputError(f"--{flag.replace('_', '-')} is an option of --frontier", field=flag)
        return None
    if args.x2 is None:
        raise InputError("--frontier needs a joint law: give --x2 (D) with --x (N)", field="frontier")
    if args.cost is not None:
        cost = frontier.parse_cost(args.cost)
    elif "train_flops" in df.columns:
        cost = frontier.fit_cost(df[args.x], df[args.x2], df["train_flops"],
                                 df["epochs"] if "epochs" in df.columns else None, file=file)
    else:
        cost = frontier.parse_cost(frontier.DEFAULT_COST, source="default")
    return {"cost": cost, "budgets": args.budget, "target_loss": args.target_loss}


def _check_holdout(holdout: int, curve, law: str, file=None, entry=None) -> None:
    """``--holdout K`` must leave enough points to fit a candidate law (else every RMSLE would silently be NaN)."""
    from analysis.laws import make_law
    from analysis.scaling import candidate_names

    if not holdout:
        return
    xs, x2s = curve.spans()
    need = min(make_law(name, xs, (0.0, 0.0), x2s).k + 1 for name in candidate_names(law, curve.joint))
    if curve.n - holdout < need:
        raise InputError(f"--holdout {holdout} leaves {max(curve.n - holdout, 0)} of the curve's {curve.n} distinct "
                         f"points, and a fit needs {need}: hold out at most {max(curve.n - need, 0)}", file=file,
                         entry=entry or None, field="holdout")


def _cmd_fit(args) -> None:
    from analysis.experiment import print_result
    from analysis.scaling import fit_curve
    from analysis.table import curve_from, read_table, select

    _check_numbers(args)
    df = read_table(args.csv)
    df = select(df, args.where or [], file=args.csv)
    groups = [((), df)] if not args.group else list(df.groupby(args.group, sort=True))
    if not args.group and len(df) == 0:
        raise InputError("no rows left to fit", file=args.csv)
    results = []
    for key, sub in groups:
        name = ", ".join(f"{c}={v}" for c, v in zip(args.group or [], key if isinstance(key, tuple) else (key,)))
        curve = curve_from(sub, args.x, args.y, args.x2, file=args.csv)
        _check_holdout(args.holdout, curve, args.law, file=args.csv, entry=name)
        r = fit_curve(curve, args.law, objective=args.objective, holdout=args.holdout, n_boot=args.bootstrap,
                      seed=args.seed, target=args.target, frontier=_frontier_options(args, sub, args.csv))
        results.append((name, r))
    if args.json:
        if len(results) == 1 and not args.group:
            print(json.dumps(results[0][1], default=str))
        else:
            print(json.dumps([{"group": n, **r} for n, r in results], default=str))
        return
    for name, r in results:
        print_result(r, name)


def _cmd_analyze(args) -> None:
    from analysis.experiment import analyze_experiment
    from sweeps.tracking import default_uri

    _check_numbers(args)
    if args.axis != "compute":
        for flag in ("cost", "budget", "target_loss"):
            if getattr(args, flag) is not None:
                raise InputError(f"--{flag.replace('_', '-')} is an option of --axis compute", field=flag)
    if args.json:  # MLflow writes "View run at URL" to stdout after each run it ends
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    res = analyze_experiment(args.experiment, default_uri(args.tracking_uri), metric=args.metric, axis=args.axis,
                             out=args.out, law=args.law, objective=args.objective, holdout=args.holdout,
                             n_boot=args.bootstrap, seed=args.seed, target=args.target, sweep=args.sweep,
                             stage=args.stage, verbose=not args.json, cost=args.cost, budgets=args.budget,
                             target_loss=args.target_loss)
    if args.json:
        print(json.dumps(res, default=str))


def _cmd_refine(args) -> None:
    from analysis.refine import refine_experiment
    from analysis.runs import open_experiment
    from sweeps.tracking import default_uri

    # opened for reading first: a missing store, or one that cannot be read, is one line and nothing is created
    uri, _, _ = open_experiment(default_uri(args.tracking_uri), args.experiment)
    quiet = args.json
    res = refine_experiment(args.experiment, uri, axis=args.axis, points=args.points, seeds=args.seeds,
                            budget=args.budget, until_ci=args.until_ci, max_rounds=args.max_rounds,
                            dry_run=args.dry_run, address=args.address, law=args.law, progress=not quiet,
                            out=(lambda *a: None) if quiet else print)
    if args.json:
        print(json.dumps(res, default=float))


def _cmd_demo(args) -> None:
    from analysis.experiment import analyze_experiment, headline
    from sweeps.cli import SPECS, exit_status
    from sweeps.driver import run_sweep, summary_table
    from sweeps.spec import load_spec

    out = Path(args.out).resolve()
    db = f"sqlite:///{out / 'mlflow.db'}"
    spec = load_spec(SPECS / "demo.yaml", {"tracking_uri": db, "storage_path": str(out / "ray")})
    spec.dataset["data_dir"] = str(out / "data")
    print(f"demo: {spec.description}")
    summary = run_sweep(spec, address="local", resume=args.resume, verbose=args.verbose)
    print(summary_table(summary, per_trial=args.verbose))
    exit_status(summary)
    res = analyze_experiment(spec.experiment, spec.tracking_uri, axis="both", out=out / "analysis", holdout=1,
                             n_boot=1000, verbose=args.verbose)
    print("scaling laws (95 % CIs):")
    for g in res["groups"]:
        print("  " + headline(g, g["name"], g["axis"]))
    for why in res["skipped"]:
        print(f"  skipped {why}")
    print(f"report, fits and plots: {res['out']} (and the MLflow analysis run {res['run_id']})")
    print(f"browse the runs:  {_matscale()} ui --experiment {spec.experiment} --tracking-uri {db}")
    print(f"more data or more parameters?  {_matscale()} analyze --experiment {spec.experiment} --tracking-uri {db} "
          f"--axis compute --out {out / 'compute'}")


def _matscale() -> str:
    """How to run ``matscale`` from this shell: the script beside this Python (relative to here when inside)."""
    script = Path(sys.executable).parent / "matscale"
    if not script.exists():
        return f"{sys.executable} -m analysis.cli"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _frontier_flags(p, always: bool = False) -> None:
    """The compute-optimal options (``--frontier`` itself only where it is optional)."""
    if not always:
        p.add_argument("--frontier", action="store_true", help="joint laws: the compute-optimal frontier N*(C), D*(C) "
                       "with CIs, the verdict data-/model-limited at the best measured point, and --target-loss")
    p.add_argument("--cost", help="cost formula in N and D, like '6*N*D' (default: fitted to a train_flops column "
                   "as k*N*D*epochs, else 6*N*D)")
    p.add_argument("--budget", type=float, nargs="+", help="costs at which to report the optimal N, D and loss "
                   "(default: 5 from the smallest measured cost to 10x the largest)")
    p.add_argument("--target-loss", type=float, help="the cheapest N, D and cost reaching this loss")


def register(sub) -> None:
    """Add the analysis commands (``fit``, ``analyze``, ``refine``, ``demo``) to the ``matscale`` parser."""
    from analysis.experiment import AXES
    from sweeps.tracking import DEFAULT_URI

    p = sub.add_parser("fit", help="fit scaling laws to any CSV table of results")
    p.add_argument("csv", help="table of results (CSV, one row per run)")
    p.add_argument("--x", required=True, help="column of x (D, or N for joint laws)")
    p.add_argument("--x2", help="column of D for joint laws (then --x is N)")
    p.add_argument("--y", required=True, help="column of the loss")
    p.add_argument("--group", nargs="*", action="extend", help="fit each group of these columns separately")
    p.add_argument("--where", nargs="*", action="extend",
                   help="keep rows with COL=VALUE (several, or the flag repeated: every condition must hold)")
    p.add_argument("--law", default="auto", help=LAWS_HELP)
    p.add_argument("--objective", default="auto", choices=["auto", "wls", "huber", "msle"], help=OBJECTIVE_HELP)
    p.add_argument("--holdout", type=int, default=0, help="hold out the K largest x to score extrapolation")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (default 1000)")
    p.add_argument("--target", type=float, help="report the x needed to reach this loss")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    _frontier_flags(p)
    p.add_argument("--json", action="store_true", help="print the fits as JSON")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("analyze", help="fit scaling laws to an MLflow experiment written by `matscale sweep`")
    p.add_argument("--experiment", required=True, help="MLflow experiment (the spec's `experiment`)")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or {DEFAULT_URI})")
    p.add_argument("--metric", default="val_loss", help="the trial metric to fit (default val_loss; e.g. test_loss, "
                   "val_eps_mae)")
    p.add_argument("--axis", default="data", choices=AXES,
                   help="data/params/both: scaling laws; compute: the joint law's compute-optimal frontier and "
                        "whether the best point is data- or model-limited; transfer: L(source_n) = D n^-alpha + C per target size "
                        "against the no-pretraining baseline; coverage: curves per subset strategy and where more "
                        "diverse data raises the loss")
    p.add_argument("--out", default="analysis-out", help="folder for fits.json, report.md and plots")
    p.add_argument("--law", default="auto", help=LAWS_HELP)
    p.add_argument("--objective", default="auto", choices=["auto", "wls", "huber", "msle"], help=OBJECTIVE_HELP)
    p.add_argument("--holdout", type=int, default=1, help="hold out the K largest x to score extrapolation (default 1)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (default 1000; 0: none)")
    p.add_argument("--target", type=float, help="report the x needed to reach this loss")
    _frontier_flags(p, always=True)
    p.add_argument("--sweep", help="only this sweep id")
    p.add_argument("--stage", help="only this stage (grid, refine, ...)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--json", action="store_true", help="print the fits as JSON (no plots' paths or tables)")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("refine", help="launch extra trials near the breakpoints of an experiment, refit, repeat")
    p.add_argument("--experiment", required=True, help="MLflow experiment of a data or parameter sweep")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or {DEFAULT_URI})")
    p.add_argument("--axis", default="data", choices=["data", "params"], help="refine L(D) curves (data, default) or "
                   "L(N) curves (params)")
    p.add_argument("--points", type=int, default=3, help="new axis values per curve and round")
    p.add_argument("--seeds", type=int, help="seeds per new value (default: the parent sweep's)")
    p.add_argument("--budget", type=int, help="at most this many new trials in all")
    p.add_argument("--until-ci", type=float, default=0.1, help="stop when every break's 95%% CI half-width ≤ this "
                   "many decades")
    p.add_argument("--max-rounds", type=int, default=3, help="rounds in all, earlier invocations included")
    p.add_argument("--law", default="auto", choices=["auto", "broken", "broken_amp"],
                   help="the break's law: auto (the interval includes the choice between the two; default), broken "
                        "(assume the paper's amplitude-tied form), broken_amp (free amplitude)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "local"), help="Ray cluster for the new trials: "
                   "local (default), auto or ray://HOST:10001")
    p.add_argument("--dry-run", action="store_true", help="print the proposal, the predicted CI, the trials it would "
                   "launch and their estimated time; launch nothing")
    p.add_argument("--json", action="store_true", help="print the rounds and proposals as JSON")
    p.set_defaults(func=_cmd_refine)

    p = sub.add_parser("demo", help="run the demo sweep locally on built-in data (a few minutes on 2 cores)")
    p.add_argument("--out", default="runs/demo", help="output folder (MLflow SQLite store, Ray results, data)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo")
    p.add_argument("-v", "--verbose", action="store_true", help="also Ray Tune's per-trial output, a line per trial and "
                   "the full fits")
    p.set_defaults(func=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``matscale`` parser: gnn's commands (data, train), sweeps' (sweep, cluster, server), then these."""
    from gnn.cli import register as register_gnn
    from sweeps.cli import register as register_sweeps

    parser = argparse.ArgumentParser(prog="matscale", description="Neural scaling laws of GNNs on crystals.")
    sub = parser.add_subparsers(dest="command", required=True)
    register_gnn(sub)
    register_sweeps(sub)
    register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from gnn.cli import run_command

    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
