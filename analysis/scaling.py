"""Fit every candidate law to one curve and report the winner, all candidates and the derived answers.

``fit_curve(curve, law="auto")`` returns the JSON-ready object printed by ``matscale fit --json``::

    {"law", "params", "stderr", "ci", "aicc", "candidates": [{"law", "params", "stderr", "ci", "aicc",
     "rmsle_holdout"}], "breakpoints": [{"x", "ci"}], "saturation": {...}, "target": {...}, "doubling": {...},
     "regimes": {...} (joint laws), "n_points", "objective", "n_boot"}
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from analysis import answers
from analysis.fit import Curve, bootstrap, fit_law, holdout_rmsle, percentile_ci
from analysis.laws import JOINT, ONE_D, make_law
from gnn.errors import InputError


def candidate_names(law: str, joint: bool) -> list[str]:
    if law == "auto":
        return list(JOINT if joint else ONE_D)
    if (law in JOINT) != joint:
        raise InputError(f"law {law!r} needs {'--x2' if law in JOINT else 'a single x'}", field="law")
    return [law]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _ci(samples: np.ndarray, level: float) -> list:
    return [_clean(c) for c in percentile_ci(samples, level)]


def _one(args) -> dict:
    """Fit, hold out and bootstrap one law (runs in a worker process); answers come later, for the winner."""
    name, curve, objective, holdout, n_boot, seed, level = args
    xs, x2s = curve.spans()
    ys = (float(np.log10(curve.y.min())), float(np.log10(curve.y.max())))
    law = make_law(name, xs, ys, x2s)
    fit = fit_law(law, curve, objective, seed)
    boot = bootstrap(fit, curve, objective, n_boot, seed) if n_boot else np.empty((0, law.k))
    out = {"law": law.name, "formula": law.formula, "params": fit.params, "stderr": fit.stderr,
           "ci": {p: _ci(boot[:, i], level) for i, p in enumerate(law.names)} if n_boot else {},
           "aicc": _clean(fit.aicc), "rss": fit.rss, "k": law.k,
           "rmsle_holdout": _clean(holdout_rmsle(law, curve, holdout, objective)) if holdout else None}
    out["boot"] = boot
    return out


def _answers(law, params, boot, curve: Curve, level, target, sat_frac, sat_slope) -> dict:
    """Derived answers of one fit, each with a bootstrap CI."""
    draws = [dict(zip(law.names, row)) for row in boot if np.isfinite(row).all()]

    def with_ci(fn) -> dict:
        value = fn(params)
        samples = np.array([fn(p) for p in draws]) if draws else np.empty(0)
        if samples.size:
            samples = np.where(np.isinf(samples), np.nan, samples)
        return {"value": _clean(float(value)), "ci": _ci(samples, level) if samples.size else [None, None]}

    if law.joint:
        n, d = curve.x[:, 0], curve.x[:, 1]
        return {"regimes": answers.regimes(law, params, n, d)}
    x_min, x_max = float(curve.x.min()), float(curve.x.max())
    res = {"breakpoints": [], "saturation": {}, "doubling": {}, "target": None}
    for i, _ in enumerate(answers.breakpoints(law, params)):
        b = with_ci(lambda p, i=i: answers.breakpoints(law, p)[i])
        res["breakpoints"].append({"x": b["value"], "ci": b["ci"]})
    res["saturation"] = {
        "frac": sat_frac, "slope_min": sat_slope,
        "x_floor": with_ci(lambda p: answers.saturation_floor(law, p, sat_frac)),
        "x_slope": with_ci(lambda p: answers.saturation_slope(law, p, x_min, x_max, sat_slope)),
        "slope_at_max_x": with_ci(lambda p: answers.local_slope(law, p, np.array([x_max]))[0]),
    }
    res["doubling"] = {"x": x_max, **with_ci(lambda p: answers.doubling_gain(law, p, x_max))}
    if target is not None:
        t = with_ci(lambda p: answers.x_for_target(law, p, target, x_min, x_max))
        res["target"] = {"loss": target, "x": t["value"], "ci": t["ci"], "reachable": t["value"] != "inf"}
    return res


def fit_curve(curve: Curve, law: str = "auto", *, objective: str = "wls", holdout: int = 0, n_boot: int = 1000,
              seed: int = 0, level: float = 0.95, target: float | None = None, sat_frac: float = 0.05,
              sat_slope: float = 0.05, workers: int | None = None) -> dict:
    """Fit the candidate laws (all of them for ``law="auto"``); the winner has the lowest AICc."""
    names = candidate_names(law, curve.joint)
    xs, x2s = curve.spans()
    ks = {name: make_law(name, xs, (0.0, 0.0), x2s).k for name in names}
    if law != "auto" and curve.n < ks[names[0]] + 1:
        raise InputError(f"law {names[0]!r} has {ks[names[0]]} parameters but there are only {curve.n} distinct "
                         f"points (need ≥ {ks[names[0]] + 1})", field="law")
    names = [name for name in names if curve.n >= ks[name] + 1]  # auto: skip laws the data cannot support
    if not names:
        raise InputError(f"too few distinct points ({curve.n}) for any candidate law", field="x")
    jobs = [(name, curve, objective, holdout, n_boot, seed, level) for name in names]
    workers = workers or min(len(jobs), len(os.sched_getaffinity(0)))
    if workers > 1 and n_boot:
        order = sorted(range(len(jobs)), key=lambda i: -ks[jobs[i][0]])  # the costliest (most parameters) first
        with ProcessPoolExecutor(workers) as pool:
            futures = {i: pool.submit(_one, jobs[i]) for i in order}
            cands = [futures[i].result() for i in range(len(jobs))]
    else:
        cands = [_one(j) for j in jobs]
    finite = [c for c in cands if isinstance(c["aicc"], float)]
    best = min(finite or cands, key=lambda c: c["aicc"] if isinstance(c["aicc"], float) else math.inf)
    out = {"law": best["law"], "formula": best["formula"], "params": best["params"], "stderr": best["stderr"],
           "ci": best["ci"], "aicc": best["aicc"],
           "candidates": [{k: c[k] for k in ("law", "params", "stderr", "ci", "aicc", "rmsle_holdout")}
                          for c in cands],
           "n_points": curve.n, "n_runs": int(sum(len(r) for r in curve.reps)), "objective": objective,
           "n_boot": n_boot, "level": level}
    winner = make_law(best["law"], xs, (0.0, 0.0), x2s)
    out.update(_answers(winner, best["params"], best["boot"], curve, level, target, sat_frac, sat_slope))
    return out
