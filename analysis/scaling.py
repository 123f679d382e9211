"""Fit every candidate law to one curve and report the winner, all candidates and the derived answers.

``fit_curve(curve, law="auto")`` returns the JSON-ready object printed by ``matscale fit --json``::

    {"law", "params", "stderr", "ci", "aicc", "choice": {"law", "verdict", "rival", "delta_aicc", "ambiguous",
     "not_enough", "summary"}, "candidates": [{"law", "params", "stderr", "ci", "aicc", "rmsle_holdout",
     "not_enough"}], "breakpoints": [{"x", "ci", "half_width", "laws"}], "saturation": {...}, "target": {...},
     "doubling": {...}, "regimes": {...} (joint laws), "n_points", "objective", "n_boot"}

The winner comes from :func:`analysis.fit.choose_law`, the rule ``refine`` uses too; a broken winner's break
interval is :func:`break_estimate`'s (the bootstrap that includes the choice between the broken laws fitted),
which ``refine`` reports for the same curve with the same resamples.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from analysis import answers
from analysis.fit import (AMBIGUITY, Choice, Curve, bootstrap, break_interval, choose_law, fit_law, holdout_rmsle,
                          percentile_ci)
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
           "rmsle_holdout": _clean(holdout_rmsle(law, curve, holdout, objective)) if holdout else None,
           "not_enough": fit.not_enough}
    out["boot"] = boot
    out["fit"] = fit
    return out


def fit_candidates(curve: Curve, names: list[str], *, objective: str = "auto", holdout: int = 0, n_boot: int = 1000,
                   seed: int = 0, level: float = 0.95, workers: int | None = None,
                   boot: tuple[str, ...] | None = None, ambiguity: float = AMBIGUITY) -> tuple[dict, Choice]:
    """Fit (and bootstrap: every law, or those in ``boot``) the candidates ``names`` the points can carry, and
    choose among them by :func:`analysis.fit.choose_law`: ``({law: candidate}, choice)`` in candidate order, each
    candidate with its ``fit`` (:class:`analysis.fit.Fit`) and ``boot`` draws. Laws with more parameters than
    points − 1 are skipped (an :class:`InputError` when none is left)."""
    xs, x2s = curve.spans()
    ks = {name: make_law(name, xs, (0.0, 0.0), x2s).k for name in names}
    names = [name for name in names if curve.n >= ks[name] + 1]
    if not names:
        raise InputError(f"too few distinct points ({curve.n}) for any candidate law", field="x")
    jobs = [(name, curve, objective, holdout, n_boot if boot is None or name in boot else 0, seed, level)
            for name in names]
    workers = workers or min(len(jobs), len(os.sched_getaffinity(0)))
    if workers > 1 and n_boot:
        order = sorted(range(len(jobs)), key=lambda i: -ks[jobs[i][0]])  # the costliest (most parameters) first
        with ProcessPoolExecutor(workers) as pool:
            futures = {i: pool.submit(_one, jobs[i]) for i in order}
            cands = [futures[i].result() for i in range(len(jobs))]
    else:
        cands = [_one(j) for j in jobs]
    out = {c["law"]: c for c in cands}
    choice = choose_law({c["law"]: c["fit"].aicc for c in cands},
                        {c["law"]: c["not_enough"] for c in cands if c["not_enough"]}, ambiguity)
    return out, choice


def break_estimate(curve: Curve, cands: dict, law: str, among: tuple[str, ...] | None = None, n_boot: int = 1000,
                   seed: int = 0, level: float = 0.95) -> dict:
    """The break x_c of candidate ``law`` (a broken or broken_amp fit), with the bootstrap interval that includes
    the choice between the broken laws ``among`` (default: every broken-kind candidate the points determine, and
    ``law`` itself): ``{"x", "ci", "half_width", "laws", "samples"}``, the CI ``[None, None]`` without
    resamples. ``analyze`` (:func:`fit_curve`) and ``refine`` report this one."""
    names = [n for n, c in cands.items() if c["fit"].law.kind == "broken" and (n == law or (
        (among is None or n in among) and not c["not_enough"]))]
    x = float(cands[law]["params"]["x_c"])
    res = {"x": x, "ci": [None, None], "half_width": None, "laws": names, "samples": np.empty(0)}
    if not n_boot or any(len(cands[n]["boot"]) != n_boot for n in names):
        return res
    samples, ci, half = break_interval(curve, [cands[n]["fit"].law for n in names], [cands[n]["boot"] for n in names],
                                       n_boot, seed, level)
    if np.isfinite(half):
        res.update(ci=[_clean(ci[0]), _clean(ci[1])], half_width=half)
    res["samples"] = samples
    return res


def break_text(x: float, ci, half) -> str:
    """``break 4473 (95 % CI 1300 – 2.896e+04, ±0.674 decades)``, as analyze and refine print a break."""
    if ci is None or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (*ci, half)):
        return f"break {x:.4g} (no CI: no bootstrap, or too few resamples refitted)"
    return f"break {x:.4g} (95 % CI {ci[0]:.4g} – {ci[1]:.4g}, ±{half:.3f} decades)"


def break_line(bp: dict) -> str:
    """One breakpoint of :func:`fit_curve`'s answers in :func:`break_text`'s words."""
    half = bp.get("half_width")
    ci = bp.get("ci") or [None, None]
    if half is None and all(isinstance(v, float) and v > 0 for v in ci):
        half = (math.log10(ci[1]) - math.log10(ci[0])) / 2
    return break_text(bp["x"], ci, half)


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def saturation_text(sat: dict, fmt=lambda v: f"{v:.4g}") -> str:
    """The saturation answers in words; a missing one says why (no floor in the fit, or a slope that stays
    above the threshold as far as the search goes) instead of printing an empty value."""
    def ci(a: dict) -> str:
        lo, hi = (_num(v) for v in a.get("ci") or [None, None])
        return f" (95 % CI [{fmt(lo)}, {fmt(hi)}])" if lo is not None and hi is not None else ""

    xf, xs = sat["x_floor"], sat["x_slope"]
    vf, vs = _num(xf["value"]), _num(xs["value"])
    floor = (f"L − L_inf ≤ {sat['frac']:.0%} of L_inf from x = {fmt(vf)}{ci(xf)}" if vf is not None
             else "the fit has no loss floor (L_inf = 0, or none in this law)")
    slope = (f"local slope < {sat['slope_min']} from x = {fmt(vs)}{ci(xs)}" if vs is not None
             else f"the local slope stays ≥ {sat['slope_min']} up to 10^{answers.SEARCH_DECADES:g} × the largest x")
    at_max = _num(sat.get("slope_at_max_x", {}).get("value"))
    tail = f"; slope at the largest x: {fmt(at_max)}" if at_max is not None else ""
    if vf is None and vs is None:
        return f"none within reach — {floor}, and {slope}{tail}"
    return f"{floor}; {slope}{tail}"


def not_enough_text(c: dict) -> str | None:
    """``not enough points for this law (why)`` for a candidate the points do not determine, else None."""
    why = c.get("not_enough")
    if why is None and isinstance(c.get("aicc"), (int, float)) and math.isfinite(c["aicc"]):
        return None
    return f"not enough points for this law ({why or 'AICc undefined'})"


def _answers(law, params, boot, curve: Curve, level, target, sat_frac, sat_slope, breaks=None) -> dict:
    """Derived answers of one fit, each with a bootstrap CI (``breaks``, when given, are the breakpoints)."""
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
    for i, _ in enumerate(answers.breakpoints(law, params) if breaks is None else ()):
        b = with_ci(lambda p, i=i: answers.breakpoints(law, p)[i])
        res["breakpoints"].append({"x": b["value"], "ci": b["ci"]})
    res["breakpoints"] += breaks or []
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


def fit_curve(curve: Curve, law: str = "auto", *, objective: str = "auto", holdout: int = 0, n_boot: int = 1000,
              seed: int = 0, level: float = 0.95, target: float | None = None, sat_frac: float = 0.05,
              sat_slope: float = 0.05, workers: int | None = None, frontier: dict | None = None) -> dict:
    """Fit the candidate laws (all of them for ``law="auto"``); the winner by :func:`analysis.fit.choose_law`.
    ``frontier`` (joint curves): the keyword arguments ``cost``, ``budgets``, ``target_loss`` of
    :func:`analysis.frontier.compute`, whose answers become ``out["frontier"]``."""
    names = candidate_names(law, curve.joint)
    xs, x2s = curve.spans()
    ks = {name: make_law(name, xs, (0.0, 0.0), x2s).k for name in names}
    if law != "auto" and curve.n < ks[names[0]] + 1:
        raise InputError(f"law {names[0]!r} has {ks[names[0]]} parameters but there are only {curve.n} distinct "
                         f"points (need ≥ {ks[names[0]] + 1})", field="law")
    cands, choice = fit_candidates(curve, names, objective=objective, holdout=holdout, n_boot=n_boot, seed=seed,
                                   level=level, workers=workers)
    best = cands[choice.law]
    out = {"law": best["law"], "formula": best["formula"], "params": best["params"], "stderr": best["stderr"],
           "ci": best["ci"], "aicc": best["aicc"], "choice": choice.as_dict(),
           "candidates": [{k: c[k] for k in ("law", "params", "stderr", "ci", "aicc", "rmsle_holdout", "not_enough")}
                          for c in cands.values()],
           "n_points": curve.n, "n_runs": int(sum(len(r) for r in curve.reps)), "objective": objective,
           "n_boot": n_boot, "level": level}
    winner = make_law(best["law"], xs, (0.0, 0.0), x2s)
    breaks = None
    if winner.kind == "broken":
        b = break_estimate(curve, cands, best["law"], n_boot=n_boot, seed=seed, level=level)
        breaks = [{k: b[k] for k in ("x", "ci", "half_width", "laws")}]
    out.update(_answers(winner, best["params"], best["boot"], curve, level, target, sat_frac, sat_slope, breaks))
    if frontier is not None and winner.joint:
        from analysis import frontier as compute_optimal

        out["frontier"] = compute_optimal.compute(winner, best["params"], best["boot"], curve, level=level, **frontier)
    return out
