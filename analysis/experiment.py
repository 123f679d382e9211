"""One sweep's scaling analysis: load its trial runs from MLflow, aggregate them into points, fit every curve
(groups in parallel processes), write plots, ``report.md`` and ``fits.json``, and log an ``analysis`` run.

Imports of the fitting and plotting stack happen inside the functions: the command line reads :data:`AXES`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gnn.errors import InputError
from sweeps import record


def print_result(r: dict, name: str = "") -> None:
    """Print one fit (its candidates, parameters with CIs, breaks, saturation, target) to stdout: the model choice
    in the words ``refine`` uses, and a candidate the points do not determine as "not enough points for this
    law" (no parameters)."""
    from analysis.scaling import break_line, not_enough_text, saturation_text

    head = f"== {name}: " if name else "== "
    print(f"{head}{r['n_points']} points, {r['n_runs']} runs; best law by AICc: {r['law']}  ({r['formula']})")
    if r.get("choice"):
        print(f"   {r['choice']['verdict']}: {r['choice']['summary']}")
    print(f"   {'law':<12} {'AICc':>10} {'RMSLE held out':>15}")
    for c in r["candidates"]:
        missing = not_enough_text(c)
        if missing:
            print(f"   {c['law']:<12} {missing}")
            continue
        rm = f"{c['rmsle_holdout']:.4f}" if isinstance(c["rmsle_holdout"], float) else "–"
        print(f"   {c['law']:<12} {c['aicc']:>10.2f} {rm:>15}")
    print(f"   {'param':<10} {'value':>12} {'stderr':>12} {'95% CI':>28}")
    for k, v in r["params"].items():
        lo, hi = r["ci"].get(k, [None, None])
        ci = f"[{lo:.4g}, {hi:.4g}]" if isinstance(lo, float) and isinstance(hi, float) else "–"
        print(f"   {k:<10} {v:>12.4g} {r['stderr'].get(k, float('nan')):>12.3g} {ci:>28}")
    for bp in r.get("breakpoints", []):
        print(f"   {break_line(bp)}")
    if r.get("saturation"):
        print(f"   saturation: {saturation_text(r['saturation'])}")
    if r.get("doubling"):
        print(f"   doubling x from {r['doubling']['x']:.4g} lowers the loss by {100 * r['doubling']['value']:.2f} %")
    if r.get("target"):
        t = r["target"]
        print(f"   loss {t['loss']} needs x = {t['x']:.4g}" if t["reachable"] else f"   loss {t['loss']} is unreachable")
    if r.get("frontier"):
        from analysis.frontier import text

        for line in text(r["frontier"]):
            print(f"   {line}")


AXES = ("data", "params", "both", "compute", "transfer", "coverage")  #: what ``analyze --axis`` takes


def analyze_experiment(experiment: str, tracking_uri: str, *, metric: str = "val_loss", axis: str = "data",
                       out: str | Path = "analysis", law: str = "auto", objective: str = "auto", holdout: int = 0,
                       n_boot: int = 1000, seed: int = 0, target: float | None = None, sweep: str | None = None,
                       stage: str | None = None, log: bool = True, verbose: bool = True, cost: str | None = None,
                       budgets: list[float] | None = None, target_loss: float | None = None) -> dict:
    """Load, aggregate, fit every group, write plots/report/fits.json and log an ``analysis`` run.

    ``axis="compute"``: the joint L(N, D) per architecture with its compute-optimal frontier
    (:mod:`analysis.frontier`), the cost ``cost`` (a formula in N and D) or else fitted to the trials' counted
    ``train_flops``; ``budgets`` and ``target_loss`` as there."""
    from analysis.report import log_analysis_run, write_outputs
    from analysis.runs import aggregate, load_runs
    from sweeps import tracking
    from sweeps.spec import sci

    if axis not in AXES:
        raise InputError(f"axis must be {', '.join(AXES[:-1])} or {AXES[-1]}, got {axis!r}", field="axis")
    out = Path(out)
    df, exp_id = load_runs(tracking_uri, experiment, sweep=sweep, stage=stage)
    tracking_uri = tracking.use_credentials(tracking_uri)  # MLflow prints the URI it writes to: no password in it
    best, points, problems_df = aggregate(df, metric)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    if axis in ("transfer", "coverage"):
        from analysis.variants import analyze_coverage, analyze_transfer

        run = analyze_transfer if axis == "transfer" else analyze_coverage
        return run(experiment, tracking_uri, best, points, exp_id, out=out, metric=metric, n_boot=n_boot, seed=seed,
                   target=target, log=log, verbose=verbose)
    options = {"objective": objective, "holdout": holdout, "n_boot": n_boot, "seed": seed, "target": target}
    compute = {"cost": cost, "budgets": budgets, "target_loss": target_loss} if axis in ("both", "compute") else None
    groups, skipped = _fit_groups(_group_jobs(best, axis, metric, law, options, out / "plots", compute), verbose)
    problems = [f"{row.trial_key}: {row.status}" + (f" ({row.failure_reason})" if row.failure_reason else "")
                for row in problems_df.itertuples()]
    flagged = [f"{p.arch} N={sci(p.n_params_target)} D={int(p.n_train)}: spread {100 * p.spread:.1f} % over {p.seeds} "
               f"seeds" for p in points.itertuples() if p.flag_spread]
    write_outputs(out, f"Scaling analysis of {experiment} ({metric})", groups, problems + skipped, flagged)
    run_id = log_analysis_run(tracking_uri, exp_id, out, groups, metric,
                              {record.AXIS: axis, **({record.SWEEP_ID: sweep} if sweep else {})}) if log else None
    if verbose:
        print(f"wrote {out / 'fits.json'}, {out / 'report.md'} and {len(groups)} plots"
              + (f"; MLflow analysis run {run_id}" if run_id else ""))
    return {"groups": [{"name": g["name"], "axis": g["axis"], **g["result"]} for g in groups],
            "problems": problems, "flagged": flagged, "skipped": skipped, "run_id": run_id, "out": str(out)}


def _group_jobs(best, axis: str, metric: str, law: str, options: dict, plots: Path,
                compute: dict | None = None) -> list[tuple]:
    """One fitting job per curve: L(D) at each N (``data``), L(N) at each D (``params``), and with ``both`` also
    the joint L(N, D) per architecture (``compute``: only those); a joint group gets its frontier with the options
    ``compute``, the cost fitted to that group's ``train_flops`` unless a formula is given (``both``: only where
    every trial counted its FLOPs); each variant (subset, transfer source) is its own group."""
    from analysis import frontier
    from analysis.fit import make_curve
    from analysis.laws import JOINT
    from analysis.runs import VARIANT, variant_label
    from sweeps.spec import sci

    specs = []
    if axis in ("data", "both"):
        for (arch, n, *v), sub in best.groupby(["arch", "n_params_target"] + VARIANT):
            specs.append(("data", f"{arch} N={sci(n)}{variant_label(*v)}", sub, "n_train", None))
    if axis in ("params", "both"):
        for (arch, d, *v), sub in best.groupby(["arch", "n_train"] + VARIANT):
            specs.append(("params", f"{arch} D={int(d)}{variant_label(*v)}", sub, "n_params", None))
    if axis in ("both", "compute"):
        for (arch, *v), sub in best.groupby(["arch"] + VARIANT):
            specs.append(("joint", f"{arch} joint{variant_label(*v)}", sub, "n_params", "n_train"))
    jobs = []
    for kind, name, sub, xcol, x2col in specs:
        curve = make_curve(sub[xcol].to_numpy(float), sub[metric].to_numpy(float),
                           None if x2col is None else sub[x2col].to_numpy(float))
        group_law = law if (kind == "joint") == (law in JOINT) else "auto"  # a 1-D law for 1-D groups only
        group_options = options
        counted = "train_flops" in sub and bool(np.isfinite(sub["train_flops"].to_numpy(float)).all())
        if kind == "joint" and compute is not None and (axis == "compute" or counted):  # both: where FLOPs were counted
            cost = (frontier.parse_cost(compute["cost"]) if compute["cost"] else
                    frontier.fit_cost(sub["n_params"], sub["n_train"], sub.get("train_flops", np.full(len(sub), np.nan)),
                                      sub.get("epochs")))
            group_options = {**options, "frontier": {**compute, "cost": cost}}
        jobs.append((kind, name, curve, group_law, group_options, plots, metric))
    return jobs


def _fit_groups(jobs: list[tuple], verbose: bool) -> tuple[list[dict], list[str]]:
    """Fit every job (in parallel processes, one group each, where there are cores); the fitted groups and the
    reasons of those skipped."""
    from concurrent.futures import ProcessPoolExecutor

    cores = len(os.sched_getaffinity(0))
    if len(jobs) > 1 and cores > 1:
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
            print_result(item["result"], item["name"])
    if not groups:
        raise InputError("no group has enough distinct points to fit" + (f" ({skipped[0]})" if skipped else ""),
                         field="axis")
    return groups, skipped


def _analyze_group(job) -> dict | str:
    """Fit one group's curve and draw its plot (runs in a worker); a string says why it was skipped."""
    from analysis.report import plot_curve, plot_grid, safe_name
    from analysis.scaling import fit_curve

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


def headline(r: dict, name: str, axis: str = "") -> str:
    """One line for a fitted group: the law, its exponents with 95 % CIs, a break or saturation where the fit
    shows one (with CI), and for a joint fit the regime of the largest measured point."""
    def num(v) -> str:
        return f"{v:.3g}" if isinstance(v, (int, float)) else "–"

    def with_ci(key: str) -> str:
        lo, hi = r["ci"].get(key, [None, None])
        return f"{key} {num(r['params'][key])}" + (f" [{num(lo)}, {num(hi)}]" if lo is not None and hi is not None
                                                    else "")

    x = "N" if axis == "params" else "D"
    exps = [k for k in r["params"] if k.startswith(("alpha", "beta", "c"))][:3]
    parts = [f"{name}: {r['law']}"] + [with_ci(k) for k in exps]
    for bp in r.get("breakpoints", []):
        if bp["x"] is not None:
            lo, hi = bp["ci"]
            parts.append(f"break at {x} = {num(bp['x'])}" + (f" [{num(lo)}, {num(hi)}]" if lo is not None else ""))
    sat = (r.get("saturation") or {}).get("x_floor") or {}
    if isinstance(sat.get("value"), (int, float)):
        lo, hi = sat.get("ci") or [None, None]
        parts.append(f"within 5 % of its floor from {x} = {num(sat['value'])}"
                     + (f" [{num(lo)}, {num(hi)}]" if lo is not None and hi is not None else ""))
    if r.get("frontier"):
        v = r["frontier"]["verdict"]
        lo, hi = v["ratio"]["ci"]
        parts.append(f"at the best point N={num(v['N'])}, D={num(v['D'])}: {v['verdict']} (per unit of cost, "
                     f"parameters buy {num(v['ratio']['value'])}" + (f" [{num(lo)}, {num(hi)}]" if lo is not None else "")
                     + " × what data buy)")
    elif r.get("regimes", {}).get("points"):
        last = max(r["regimes"]["points"], key=lambda p: (p["N"], p["D"]))
        parts.append(f"at N={num(last['N'])}, D={num(last['D'])}: {last['regime']} (point estimate)")
    return "; ".join(parts)
