"""Where to measure next: new axis values that shrink the uncertainty of a break (or decide between laws).

``propose(curve, k, bounds)`` is a pure function from data to new points, usable without any training:

* clear break (a broken law wins by more than ``ambiguity`` AICc): candidate designs of k points spread
  symmetrically (in log x) around the fitted break with half-spans of 0.1–1 decade; the design predicted to
  leave the narrowest CI of the break wins (expected CI reduction, simulated from the current fit);
* ambiguous (a broken and an unbroken law within ``ambiguity`` AICc, or an unbroken law wins): the k new x
  are where the best broken and the best unbroken law disagree most, so the next round decides between them.

New x avoid the measured ones (≥ ``min_gap`` decades apart) and stay inside ``bounds``. The predicted CI is
estimated by simulating the proposal: the current fit's values at the new x with the data's relative seed
noise, refitted and bootstrapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.fit import Curve, bootstrap, fit_law, make_curve, percentile_ci
from analysis.laws import make_law
from gnn.errors import InputError

BROKEN = ("broken", "broken_amp")
DESIGN_WIDTHS = (0.1, 0.25, 0.45, 0.7, 1.0)  #: half-spans (decades) of the candidate designs around the break
UNBROKEN = ("power", "floor")


@dataclass
class Proposal:
    points: list[float]
    reason: str
    law: str
    break_x: float | None = None
    break_ci: tuple[float, float] | None = None
    half_width: float | None = None  #: current CI half-width of log10 x_c (decades)
    predicted_half_width: float | None = None
    aicc: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("points", "reason", "law", "break_x", "break_ci", "half_width",
                                              "predicted_half_width", "aicc")}


def _fits(curve: Curve, names) -> dict:
    xs, _ = curve.spans()
    ys = (float(np.log10(curve.y.min())), float(np.log10(curve.y.max())))
    out = {}
    for name in names:
        law = make_law(name, xs, ys)
        if curve.n >= law.k + 1:
            out[name] = fit_law(law, curve)
    return out


def break_interval(curve: Curve, n_boot: int = 400, seed: int = 0, level: float = 0.95, best=None):
    """(best broken fit, log10 x_c bootstrap samples, CI in x, half-width in decades); ``best`` skips the fits."""
    if best is None:
        fits = _fits(curve, BROKEN)
        if not fits:
            raise InputError(f"{curve.n} points are too few to locate a break (need ≥ 4)", field="points")
        best = min(fits.values(), key=lambda f: f.aicc)
    samples = np.log10(bootstrap(best, curve, n_boot=n_boot, seed=seed)[:, best.law.names.index("x_c")])
    lo, hi = percentile_ci(samples, level)
    return best, samples, (10**lo, 10**hi), (hi - lo) / 2


def _spread(candidates: np.ndarray, score: np.ndarray, taken: np.ndarray, k: int, gap: float,
            min_gap: float = 0.01) -> list[float]:
    """Greedy: the k highest-scoring log10 x at least ``gap`` from each other and from ``taken`` (the gap is
    halved, down to ``min_gap``, while fewer than k fit)."""
    order = np.argsort(-score)
    while True:
        chosen: list[float] = []
        for i in order:
            c = candidates[i]
            if all(abs(c - t) >= gap for t in list(taken) + chosen):
                chosen.append(float(c))
            if len(chosen) == k:
                break
        if len(chosen) == k or gap / 2 < min_gap:
            return sorted(chosen)
        gap /= 2


def propose(curve: Curve, k: int, bounds: tuple[float, float], *, ambiguity: float = 2.0, n_boot: int = 400,
            seed: int = 0, min_gap: float = 0.02, predict: bool = True, integer: bool = True) -> Proposal:
    """k new axis values in ``bounds`` (see the module docstring)."""
    if k < 1:
        raise InputError("--points must be ≥ 1", field="points")
    lo_b, hi_b = np.log10(bounds[0]), np.log10(bounds[1])
    taken = np.log10(np.unique(curve.x))
    fits = _fits(curve, BROKEN + UNBROKEN)
    broken = min((fits[n] for n in BROKEN if n in fits), key=lambda f: f.aicc, default=None)
    unbroken = min((fits[n] for n in UNBROKEN if n in fits), key=lambda f: f.aicc, default=None)
    if broken is None:
        raise InputError(f"{curve.n} points are too few to locate a break (need ≥ 4)", field="points")
    aicc = {n: f.aicc for n, f in fits.items()}
    clear = unbroken is None or broken.aicc < unbroken.aicc - ambiguity
    _, _, ci, half = break_interval(curve, n_boot, seed, best=broken)
    grid = np.linspace(lo_b, hi_b, 600)
    if clear:  # designs around the break, scored by the CI half-width they are predicted to leave
        centre = float(np.clip(np.log10(broken.params["x_c"]), lo_b, hi_b))
        best_design, best_pred = None, np.inf
        for width in DESIGN_WIDTHS:
            offsets = np.linspace(-width, width, k) if k > 1 else np.zeros(1)
            design = _spread(grid, -np.min(np.abs(grid[:, None] - (centre + offsets)[None, :]), axis=1), taken,
                             k, max(min_gap, (hi_b - lo_b) / 600), min_gap)
            if not design:
                continue
            pred = predicted_half_width(curve, broken, [10**d for d in design], n_boot=max(100, n_boot // 2),
                                        seed=seed, repeats=2)
            if pred < best_pred:
                best_design, best_pred = design, pred
        points, reason = best_design or [], "break: smallest predicted CI"
    else:
        with np.errstate(all="ignore"):
            d = np.abs(np.log(broken.predict(10**grid)) - np.log(unbroken.predict(10**grid)))
        gap = max(min_gap, (hi_b - lo_b) / (4 * k))
        points, reason = _spread(grid, np.nan_to_num(d), taken, k, gap, min_gap), "laws disagree"
    xs = [float(np.round(10**p)) if integer else float(10**p) for p in points]
    prop = Proposal(points=xs, reason=reason, law=broken.law.name, break_x=broken.params["x_c"], break_ci=ci,
                    half_width=half, aicc=aicc)
    if predict and xs:  # an independent simulation, so the printed prediction is not the design score
        prop.predicted_half_width = predicted_half_width(curve, broken, xs, n_boot=max(100, n_boot // 2), seed=seed)
    return prop


def predicted_half_width(curve: Curve, fit, new_x: list[float], n_boot: int = 200, seed: int = 0,
                         repeats: int = 1) -> float:
    """CI half-width (decades) of the break after adding ``new_x``, simulated from the current fit (the mean
    over ``repeats`` simulated futures)."""
    if repeats > 1:
        return float(np.mean([predicted_half_width(curve, fit, new_x, n_boot, seed + 97 * i) for i in range(repeats)]))
    rng = np.random.default_rng(seed + 1)
    rel = np.nanmedian(curve.std / curve.y) if np.isfinite(curve.std).any() else 0.01
    seeds = max(len(r) for r in curve.reps)
    x_all = [np.repeat(curve.x[i], len(r)) for i, r in enumerate(curve.reps)]
    y_all = list(curve.reps)
    for x in new_x:
        y = fit.predict(np.array([x]))[0]
        x_all.append(np.full(seeds, x))
        y_all.append(y * (1 + rel * rng.standard_normal(seeds)))
    sim = make_curve(np.concatenate(x_all), np.concatenate(y_all))
    refit = fit_law(fit.law, sim)
    s = np.log10(bootstrap(refit, sim, n_boot=n_boot, seed=seed)[:, fit.law.names.index("x_c")])
    lo, hi = percentile_ci(s)
    return float((hi - lo) / 2)
