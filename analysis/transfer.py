"""Sim2Real transfer scaling: how the fine-tuned loss falls with the size n of the pretraining database.

Law (Minami, Yoshida et al., npj Comput. Mater. 11, 146 (2025)), fitted per target size over the points with
n > 0::

    L(n) = D · n^(−alpha) + C        alpha: scaling intensity (what the database is worth); C: transfer gap

It is the ``floor`` law ``L_inf + (x0/n)^alpha`` of :mod:`analysis.laws` with C = L_inf and D = x0^alpha, fitted
and bootstrapped the same way (weighted by seed spread, seeds resampled within points). Answers, each with a
percentile CI over the bootstrap draws:

* the source size needed for a target loss, n* = (D / (L* − C))^(1/alpha), "unreachable" when L* ≤ C;
* the equivalent number of target samples that pretraining is worth: the baseline (no pretraining) curve over
  the target sizes, L0(t) = (t0/t)^beta (a power law fitted to ≥ 3 target sizes, or the log-log line through 2),
  is solved for the t_eq with L0(t_eq) = L; t_eq / t is the gain. The CI covers the baseline's uncertainty only;
  beyond ten times the largest baseline size only the bound is reported (``far``).
"""

from __future__ import annotations

import numpy as np

from analysis.fit import Curve, bootstrap, fit_law, make_curve, percentile_ci
from analysis.laws import make_law
from gnn.errors import InputError

FORMULA = "L = D n^-alpha + C"


def _ci(samples: np.ndarray, level: float) -> list:
    """Percentile interval over all draws, keeping infinities (an unreachable draw is an answer, not a failure)."""
    s = samples[~np.isnan(samples)]
    if s.size < 10:
        return [None, None]
    a = (1 - level) / 2
    lo, hi = (float(np.quantile(s, q, method="inverted_cdf")) for q in (a, 1 - a))
    return [lo, hi]


def fit_transfer(curve: Curve, *, n_boot: int = 1000, seed: int = 0, target: float | None = None,
                 level: float = 0.95) -> dict:
    """Fit ``L(n) = D n^-alpha + C`` to a curve over source sizes n > 0 (≥ 4 distinct n)."""
    if curve.n < 4:
        raise InputError(f"{curve.n} pretraining sizes are too few for L(n) = D n^-alpha + C (need ≥ 4)",
                         field="source_n")
    xs, _ = curve.spans()
    ys = (float(np.log10(curve.y.min())), float(np.log10(curve.y.max())))
    floor, power = make_law("floor", xs, ys), make_law("power", xs, ys)
    fit = fit_law(floor, curve)
    no_gap = fit_law(power, curve)
    boot = bootstrap(fit, curve, n_boot=n_boot, seed=seed) if n_boot else np.empty((0, 3))
    boot = boot[np.isfinite(boot).all(axis=1)]
    x0, alpha, c = (boot[:, floor.names.index(k)] for k in ("x0", "alpha", "L_inf"))
    draws = {"alpha": alpha, "C": c, "D": x0**alpha}
    p = fit.params
    params = {"alpha": p["alpha"], "C": p["L_inf"], "D": p["x0"] ** p["alpha"]}
    out = {"law": "transfer", "formula": FORMULA, "params": params,
           "ci": {k: [finite(v) for v in percentile_ci(d, level)] for k, d in draws.items()},
           "aicc": fit.aicc, "aicc_no_gap": no_gap.aicc, "n_points": curve.n,
           "n_runs": int(sum(len(r) for r in curve.reps)), "n_boot": len(boot)}
    out["gap_resolved"] = bool(out["ci"]["C"][0] is not None and out["ci"]["C"][0] > 0)
    if target is not None:
        out["target"] = source_size_for(params, draws, target, level)
    return out


def finite(v) -> float | None:
    """``v`` as a float, or None when it is missing or not finite (JSON-ready)."""
    return None if v is None or not np.isfinite(v) else float(v)


def n_for_loss(alpha, c, d, target):
    """n* = (D / (L* − C))^(1/alpha); inf where L* ≤ C (vectorised)."""
    alpha, c, d = (np.asarray(v, float) for v in (alpha, c, d))
    with np.errstate(all="ignore"):
        n = (d / (target - c)) ** (1.0 / alpha)
    return np.where(target > c, n, np.inf)


def source_size_for(params: dict, draws: dict, target: float, level: float = 0.95) -> dict:
    """The pretraining size for loss ``target`` with its CI, or unreachable when the target is below C."""
    n = float(n_for_loss(params["alpha"], params["C"], params["D"], target))
    samples = n_for_loss(draws["alpha"], draws["C"], draws["D"], target)
    return {"loss": target, "reachable": bool(np.isfinite(n)), "source_n": n if np.isfinite(n) else "unreachable",
            "ci": [v if v is None or np.isfinite(v) else "unreachable" for v in _ci(samples, level)],
            "unreachable_fraction": float(np.mean(~np.isfinite(samples))) if len(samples) else None}


def baseline_law(sizes: np.ndarray, losses: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """The no-pretraining curve over target sizes: power-law parameters (t0, beta) and bootstrap draws."""
    curve = make_curve(sizes, losses)
    if curve.n < 2:
        return None
    if curve.n == 2:  # the log-log line through two points
        lx, ly = np.log(curve.x), np.log(curve.y)
        beta = -(ly[1] - ly[0]) / (lx[1] - lx[0])
        t0 = float(np.exp(lx[0] + ly[0] / beta)) if beta != 0 else float("nan")
        return {"t0": t0, "beta": float(beta), "draws": None, "sizes": curve.x.tolist()}
    xs, _ = curve.spans()
    law = make_law("power", xs, (float(np.log10(curve.y.min())), float(np.log10(curve.y.max()))))
    fit = fit_law(law, curve)
    boot = bootstrap(fit, curve, n_boot=n_boot, seed=seed)
    boot = boot[np.isfinite(boot).all(axis=1)]
    return {"t0": fit.params["x0"], "beta": fit.params["alpha"], "draws": boot, "sizes": curve.x.tolist()}


def equivalent_target_samples(base: dict, loss: float, target_n: float, level: float = 0.95,
                              baseline_loss: float | None = None) -> dict:
    """t_eq with L0(t_eq) = ``loss`` (baseline law), the gain t_eq / target_n, and the CI of t_eq. Negative
    transfer: ``loss`` above the measured baseline at the same size (``baseline_loss``; else above the law)."""
    def solve(t0, beta):
        with np.errstate(all="ignore"):
            return np.where(np.asarray(beta) > 0, t0 * loss ** (-1.0 / np.asarray(beta)), np.nan)

    t_eq = float(solve(base["t0"], base["beta"]))
    ci = [None, None]
    if base["draws"] is not None and len(base["draws"]):
        ci = [finite(v) for v in percentile_ci(solve(base["draws"][:, 0], base["draws"][:, 1]), level)]
    return {"target_equivalent": t_eq, "ci": ci, "gain": t_eq / target_n,
            "extrapolated": bool(t_eq > max(base["sizes"]) or t_eq < min(base["sizes"])),
            "far": 10 * max(base["sizes"]) if not t_eq <= 10 * max(base["sizes"]) else None,
            "negative_transfer": bool(loss > baseline_loss if baseline_loss is not None else t_eq < target_n)}
