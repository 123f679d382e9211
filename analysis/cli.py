"""``matscale fit`` (any CSV) and ``matscale analyze`` (an MLflow experiment written by sweeps/)."""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from analysis.fit import make_curve
from analysis.laws import JOINT, make_law
from analysis.report import log_analysis_run, plot_curve, plot_grid, safe_name, write_outputs
from analysis.scaling import candidate_names, fit_curve
from analysis.table import curve_from, read_table, select
from gnn.errors import InputError
from sweeps.spec import sci

LAWS_HELP = "auto|power|floor|broken|broken_amp|bnsl:K|chinchilla|kaplan|kaplan_broken"
MIN_BOOT = 10  # percentile_ci draws no interval from fewer resamples


def _print_result(r: dict, name: str = "") -> None:
    head = f"== {name}: " if name else "== "
    print(f"{head}{r['n_points']} points, {r['n_runs']} runs; best law by AICc: {r['law']}  ({r['formula']})")
    print(f"   {'law':<12} {'AICc':>10} {'RMSLE held out':>15}")
    for c in r["candidates"]:
        aicc = f"{c['aicc']:.2f}" if isinstance(c["aicc"], float) else str(c["aicc"])
        rm = f"{c['rmsle_holdout']:.4f}" if isinstance(c["rmsle_holdout"], float) else "–"
        print(f"   {c['law']:<12} {aicc:>10} {rm:>15}")
    print(f"   {'param':<10} {'value':>12} {'stderr':>12} {'95% CI':>28}")
    for k, v in r["params"].items():
        lo, hi = r["ci"].get(k, [None, None])
        ci = f"[{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else "–"
        print(f"   {k:<10} {v:>12.4g} {r['stderr'].get(k, float('nan')):>12.3g} {ci:>28}")
    for bp in r.get("breakpoints", []):
        lo, hi = bp["ci"]
        print(f"   break at {bp['x']:.4g}" + (f"  (95% CI {lo:.4g} – {hi:.4g})" if lo is not None else ""))
    if r.get("saturation"):
        s = r["saturation"]
        for label, key in (("saturation (floor)", "x_floor"), ("saturation (slope)", "x_slope")):
            v = s[key]["value"]
            if v is not None:
                print(f"   {label} at {v:.4g}")
    if r.get("doubling"):
        print(f"   doubling x from {r['doubling']['x']:.4g} lowers the loss by {100 * r['doubling']['value']:.2f} %")
    if r.get("target"):
        t = r["target"]
        print(f"   loss {t['loss']} needs x = {t['x']:.4g}" if t["reachable"] else f"   loss {t['loss']} is unreachable")


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


def _check_holdout(holdout: int, curve, law: str, file=None, entry=None) -> None:
    """``--holdout K`` must leave enough points to fit a candidate law (else every RMSLE would silently be NaN)."""
    if not holdout:
        return
    xs, x2s = curve.spans()
    need = min(make_law(name, xs, (0.0, 0.0), x2s).k + 1 for name in candidate_names(law, curve.joint))
    if curve.n - holdout < need:
        raise InputError(f"--holdout {holdout} leaves {max(curve.n - holdout, 0)} of the curve's {curve.n} distinct "
                         f"points, and a fit needs {need}: hold out at most {max(curve.n - need, 0)}", file=file,
                         entry=entry or None, field="holdout")


def _cmd_fit(args) -> None:
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
                      seed=args.seed, target=args.target)
        results.append((name, r))
    if args.json:
        if len(results) == 1 and not args.group:
            print(json.dumps(results[0][1], default=str))
        else:
            print(json.dumps([{"group": n, **r} for n, r in results], default=str))
        return
    for name, r in results:
        _print_result(r, name)


def analyze_experiment(experiment: str, tracking_uri: str, *, metric: str = "val_loss", axis: str = "data",
                       out: str | Path = "analysis", law: str = "auto", objective: str = "wls", holdout: int = 0,
                       n_boot: int = 1000, seed: int = 0, target: float | None = None, sweep: str | None = None,
                       stage: str | None = None, log: bool = True, verbose: bool = True) -> dict:
    """Load, aggregate, fit every group, write plots/report/fits.json and log an ``analysis`` run."""
    from analysis.runs import VARIANT, aggregate, load_runs, variant_label
    from sweeps import tracking

    out = Path(out)
    df, exp_id = load_runs(tracking_uri, experiment, sweep=sweep, stage=stage)
    tracking_uri = tracking.use_credentials(tracking_uri)  # MLflow prints the URI it writes to: no password in it
    best, points, problems_df = aggregate(df, metric)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    groups = []
    specs = []
    if axis in ("transfer", "coverage"):
        from analysis.variants import analyze_coverage, analyze_transfer

        run = analyze_transfer if axis == "transfer" else analyze_coverage
        return run(experiment, tracking_uri, best, points, exp_id, out=out, metric=metric, n_boot=n_boot, seed=seed,
                   target=target, log=log, verbose=verbose)
    if axis in ("data", "both"):
        for (arch, n, *v), sub in best.groupby(["arch", "n_params_target"] + VARIANT):
            specs.append(("data", f"{arch} N={sci(n)}{variant_label(*v)}", sub, "n_train", None))
    if axis in ("params", "both"):
        for (arch, d, *v), sub in best.groupby(["arch", "n_train"] + VARIANT):
            specs.append(("params", f"{arch} D={int(d)}{variant_label(*v)}", sub, "n_params", None))
    if axis == "both":
        for (arch, *v), sub in best.groupby(["arch"] + VARIANT):
            specs.append(("joint", f"{arch} joint{variant_label(*v)}", sub, "n_params", "n_train"))
    if axis not in ("data", "params", "both"):
        raise InputError(f"axis must be data, params, both, transfer or coverage, got {axis!r}", field="axis")
    jobs = []
    for kind, name, sub, xcol, x2col in specs:
        curve = make_curve(sub[xcol].to_numpy(float), sub[metric].to_numpy(float),
                           None if x2col is None else sub[x2col].to_numpy(float))
        group_law = law if (kind == "joint") == (law in JOINT) else "auto"  # a 1-D law for 1-D groups only
        options = {"objective": objective, "holdout": holdout, "n_boot": n_boot, "seed": seed, "target": target}
        jobs.append((kind, name, curve, group_law, options, out / "plots", metric))
    cores = len(os.sched_getaffinity(0))
    if len(jobs) > 1 and cores > 1:  # groups in parallel, each fitted in one process
        with ProcessPoolExecutor(min(cores, len(jobs))) as pool:
            done = list(pool.map(_analyze_group, [j + (1,) for j in jobs]))
    else:
        done = [_analyze_group(j + (None,)) for j in jobs]
    groups, skipped = [], []
    for item in done:
        if isinstance(item, str):
            skipped.append(item)
            continue
        groups.append(item)
        if verbose:
            _print_result(item["result"], item["name"])
    if not groups:
        raise InputError("no group has enough distinct points to fit" + (f" ({skipped[0]})" if skipped else ""),
                         field="axis")
    problems = [f"{row.trial_key}: {row.status}" + (f" ({row.failure_reason})" if row.failure_reason else "")
                for row in problems_df.itertuples()]
    flagged = [f"{p.arch} N={sci(p.n_params_target)} D={int(p.n_train)}: spread {100 * p.spread:.1f} % over {p.seeds} "
               f"seeds" for p in points.itertuples() if p.flag_spread]
    write_outputs(out, f"Scaling analysis of {experiment} ({metric})", groups, problems + skipped, flagged)
    run_id = log_analysis_run(tracking_uri, exp_id, out, groups, metric,
                              {"matscale.axis": axis, **({"matscale.sweep_id": sweep} if sweep else {})}) if log else None
    if verbose:
        print(f"wrote {out / 'fits.json'}, {out / 'report.md'} and {len(groups)} plots"
              + (f"; MLflow analysis run {run_id}" if run_id else ""))
    return {"groups": [{"name": g["name"], "axis": g["axis"], **g["result"]} for g in groups],
            "problems": problems, "flagged": flagged, "skipped": skipped, "run_id": run_id, "out": str(out)}


def _analyze_group(job) -> dict | str:
    """Fit one group's curve and draw its plot (runs in a worker); a string says why it was skipped."""
    kind, name, curve, group_law, options, plots, metric, workers = job
    try:
        r = fit_curve(curve, group_law, workers=workers, **options)
    except InputError as exc:
        return f"{name}: {exc}"
    plot = f"{kind}-{safe_name(name)}.png"
    if kind == "joint":
        plot_grid(name, curve, r, plots / plot)
    else:
        plot_curve(name, curve, r, plots / plot, "D (training structures)" if kind == "data" else "N (parameters)",
                   metric)
    return {"name": name, "axis": kind, "result": r, "plot": plot}


def _cmd_analyze(args) -> None:
    from sweeps.tracking import env_tracking_uri

    _check_numbers(args)
    if args.json:  # MLflow writes "View run at URL" to stdout after each run it ends
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = args.tracking_uri or env_tracking_uri() or "sqlite:///runs/mlflow.db"
    res = analyze_experiment(args.experiment, uri, metric=args.metric, axis=args.axis, out=args.out, law=args.law,
                             objective=args.objective, holdout=args.holdout, n_boot=args.bootstrap, seed=args.seed,
                             target=args.target, sweep=args.sweep, stage=args.stage, verbose=not args.json)
    if args.json:
        print(json.dumps(res, default=str))


def report_after_sweep(spec, summary: dict) -> None:
    """What ``matscale demo`` runs after its sweep: the data-axis analysis, written next to the Ray results."""
    out = Path(spec.storage_path).parent / "analysis"
    analyze_experiment(spec.experiment, spec.tracking_uri, axis="data", out=out, holdout=1, n_boot=1000)


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit scaling laws to any CSV table of results")
    p.add_argument("csv")
    p.add_argument("--x", required=True, help="column of x (D, or N for joint laws)")
    p.add_argument("--x2", help="column of D for joint laws (then --x is N)")
    p.add_argument("--y", required=True, help="column of the loss")
    p.add_argument("--group", nargs="*", action="extend", help="fit each group of these columns separately")
    p.add_argument("--where", nargs="*", action="extend",
                   help="keep rows with COL=VALUE (several, or the flag repeated: every condition must hold)")
    p.add_argument("--law", default="auto", help=LAWS_HELP)
    p.add_argument("--objective", default="wls", choices=["wls", "huber"])
    p.add_argument("--holdout", type=int, default=0, help="hold out the K largest x to score extrapolation")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (default 1000)")
    p.add_argument("--target", type=float, help="report the x needed to reach this loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("analyze", help="fit scaling laws to an MLflow experiment written by `matscale sweep`")
    p.add_argument("--experiment", required=True)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    p.add_argument("--metric", default="val_loss")
    p.add_argument("--axis", default="data", choices=["data", "params", "both", "transfer", "coverage"],
                   help="data/params/both: scaling laws; transfer: L(source_n) = D n^-alpha + C per target size "
                        "against the no-pretraining baseline; coverage: curves per subset strategy and where more "
                        "diverse data raises the loss")
    p.add_argument("--out", default="analysis-out", help="folder for fits.json, report.md and plots")
    p.add_argument("--law", default="auto", help=LAWS_HELP)
    p.add_argument("--objective", default="wls", choices=["wls", "huber"])
    p.add_argument("--holdout", type=int, default=1)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--target", type=float)
    p.add_argument("--sweep", help="only this sweep id")
    p.add_argument("--stage", help="only this stage (grid, refine, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_analyze)
