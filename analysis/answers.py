"""Derived answers from a fitted law: breakpoints, saturation, the size needed for a target loss, the gain from
doubling, and (for joint laws) which grid points are data-limited or model-limited.

Definitions (x is D or N; L(x) the fitted law):

    local slope            s(x) = −d ln L / d ln x
    saturation (floor)     the x where L − L_inf = frac · L_inf         (laws with an asymptote: floor, bnsl)
    saturation (slope)     the smallest x ≥ min(x) where s(x) < slope_min, searched up to 10⁴ · max(x)
    target                 the x where L(x) = target ("unreachable" when the target is below the asymptote)
    doubling gain          (L(x) − L(2x)) / L(x) at the largest observed x
    regime (joint N, D)    model-limited when doubling N lowers L more than doubling D, else data-limited;
                           the frontier is the D*(N) where both doublings buy the same
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from analysis.laws import Law

SEARCH_DECADES = 4.0


def local_slope(law: Law, params: dict, x: np.ndarray) -> np.ndarray:
    h = 1e-4
    with np.errstate(all="ignore"):
        up, down = law.predict(x * np.exp(h), params), law.predict(x * np.exp(-h), params)
        return -(np.log(up) - np.log(down)) / (2 * h)


def breakpoints(law: Law, params: dict) -> list[float]:
    if law.kind == "broken":
        return [params["x_c"]]
    if law.kind == "bnsl":
        return [params[f"d{i}"] for i in range(1, law.extra["breaks"] + 1)]
    return []


def asymptote(law: Law, params: dict) -> float:
    return {"floor": params.get("L_inf"), "bnsl": params.get("a")}.get(law.kind) or 0.0


def saturation_floor(law: Law, params: dict, frac: float) -> float:
    """x where L − L_inf = frac · L_inf (NaN without a positive asymptote)."""
    floor = asymptote(law, params)
    if floor <= 0:
        return float("nan")
    if law.kind == "floor":
        return float(params["x0"] * (frac * floor) ** (-1.0 / params["alpha"])) if params["alpha"] > 0 else float("nan")
    return _solve_decreasing(lambda x: law.predict(x, params) - floor * (1 + frac), 1e-30, 1e30)


def saturation_slope(law: Law, params: dict, x_min: float, x_max: float, slope_min: float) -> float:
    """Smallest x ≥ x_min where the local log-log slope drops below ``slope_min`` (NaN if never)."""
    grid = np.logspace(np.log10(x_min), np.log10(x_max) + SEARCH_DECADES, 600)
    s = local_slope(law, params, grid)
    below = np.flatnonzero(s < slope_min)
    if below.size == 0:
        return float("nan")
    i = below[0]
    if i == 0:
        return float(grid[0])
    return _bisect(lambda x: local_slope(law, params, np.array([x]))[0] - slope_min, grid[i - 1], grid[i])


def x_for_target(law: Law, params: dict, target: float, x_min: float, x_max: float) -> float:
    """x with L(x) = target, searched from 10⁻⁴·x_min to 10⁴·x_max; inf when unreachable."""
    if target <= asymptote(law, params):
        return float("inf")
    lo, hi = x_min * 10**-SEARCH_DECADES, x_max * 10**SEARCH_DECADES
    return _solve_decreasing(lambda x: law.predict(x, params) - target, lo, hi, unreachable=float("inf"))


def doubling_gain(law: Law, params: dict, x: float) -> float:
    with np.errstate(all="ignore"):
        a, b = law.predict(np.array([x]), params)[0], law.predict(np.array([2 * x]), params)[0]
    return float((a - b) / a)


def regimes(law: Law, params: dict, n: np.ndarray, d: np.ndarray) -> dict:
    """Per (N, D): gains from doubling each, the verdict, and the frontier D*(N) over the N range."""
    n, d = np.asarray(n, float), np.asarray(d, float)
    with np.errstate(all="ignore"):
        base = law.predict((n, d), params)
        gain_n = (base - law.predict((2 * n, d), params)) / base
        gain_d = (base - law.predict((n, 2 * d), params)) / base
    points = [{"N": float(a), "D": float(b), "gain_double_N": float(gn), "gain_double_D": float(gd),
               "regime": "model-limited" if gn > gd else "data-limited"}
              for a, b, gn, gd in zip(n, d, gain_n, gain_d)]
    frontier = []
    for nn in np.logspace(np.log10(n.min()), np.log10(n.max()), 25):
        def diff(dd, nn=nn):  # gain from doubling N minus gain from doubling D, at (nn, dd)
            nv = np.full_like(dd, nn)
            with np.errstate(all="ignore"):
                return law.predict((nv, 2 * dd), params) - law.predict((2 * nv, dd), params)

        grid = np.logspace(np.log10(d.min()) - 3, np.log10(d.max()) + 3, 400)
        vals = diff(grid)
        sign = np.flatnonzero(np.diff(np.sign(vals)) != 0)
        root = _bisect(lambda v: diff(np.array([v]))[0], grid[sign[0]], grid[sign[0] + 1]) if sign.size else None
        frontier.append({"N": float(nn), "D": root})
    return {"points": points, "frontier": frontier}


def _bisect(f, a: float, b: float) -> float:
    try:
        return float(brentq(f, a, b, xtol=1e-12 * max(a, 1.0), rtol=1e-10))
    except ValueError:
        return float("nan")


def _solve_decreasing(f, lo: float, hi: float, unreachable: float = float("nan")) -> float:
    """Root of a decreasing, vectorised f on [lo, hi]: the first sign change from + to − on a log grid."""
    grid = np.logspace(np.log10(lo), np.log10(hi), 800)
    with np.errstate(all="ignore"):
        vals = f(grid)
    idx = np.flatnonzero((vals[:-1] > 0) & (vals[1:] <= 0))
    if idx.size == 0:
        return unreachable
    i = idx[0]
    return _bisect(lambda x: f(np.array([x]))[0], grid[i], grid[i + 1])
