"""Where to measure next: new axis values that shrink the uncertainty of a break (or decide between laws).

``propose(curve, k, bounds)`` is a pure function from data to new points, usable without any training:

* clear break (a broken law wins by more than ``ambiguity`` AICc): the k new x that most reduce the expected
  variance of log10 x_c (a sequential c-optimal design, linearised at bootstrap draws of the fit, so an
  uncertain break spreads the points over where it may be). For these laws the optimum is two clusters
  about half a decade either side of the break plus a few points at the ends of the range, which pin the
  slopes;
* ambiguous (a broken and an unbroken law within ``ambiguity`` AICc, or an unbroken law wins): the k new x
  are where the best broken and the best unbroken law disagree most, so the next round decides between them.

New x avoid the measured ones (≥ ``min_gap`` decades apart) and stay inside ``bounds``. The predicted CI is
estimated by simulating the proposal: the current fit's values at the new x with the data's relative seed
noise, refitted and bootstrapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.fit import Curve, aicc, batch_natural, bootstrap, fit_law, make_curve, percentile_ci, resample_many
from analysis.laws import make_law
from gnn.errors import InputError

BROKEN = ("broken", "broken_amp")
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


def broken_laws(law: str = "auto") -> tuple[str, ...]:
    """The broken laws a break's interval may come from: both (``auto``), or the one named."""
    if law == "auto":
        return BROKEN
    if law not in BROKEN:
        raise InputError(f"law must be auto, broken or broken_amp, got {law!r}", field="law")
    return (law,)


def break_interval(curve: Curve, n_boot: int = 400, seed: int = 0, level: float = 0.95, law: str = "auto"):
    """(best broken fit, log10 x_c bootstrap samples, CI in x, half-width in decades)."""
    return _break_bootstrap(curve, n_boot, seed, level, names=broken_laws(law))[:4]


def _break_bootstrap(curve: Curve, n_boot: int, seed: int, level: float = 0.95, fits: dict | None = None,
                     names: tuple[str, ...] = BROKEN):
    """Bootstrap of log10 x_c that includes the choice between the broken laws (Buckland et al. 1997).

    Every fitted broken law in ``names`` is refitted on the same resamples and each resample keeps the x_c of
    its own AICc winner, so a CI cannot be narrow only because a small sample made AICc prefer the
    amplitude-tied law (whose x_c also carries the loss level). With one law named, that law is assumed.
    """
    fits = {n: f for n, f in (_fits(curve, names) if fits is None else fits).items() if n in names}
    if not fits:
        raise InputError(f"{curve.n} points are too few to locate a break (need ≥ 4)", field="points")
    best = min(fits.values(), key=lambda f: f.aicc)
    _, y, _ = resample_many(curve, np.random.default_rng(seed), n_boot)  # the resamples bootstrap() draws
    samples, scores, best_draws = [], [], None
    for fit in fits.values():
        draws = bootstrap(fit, curve, n_boot=n_boot, seed=seed)
        if fit is best:
            best_draws = draws
        with np.errstate(all="ignore"):
            pred = fit.law.predict(curve.x[None, :], {k: draws[:, [j]] for j, k in enumerate(fit.law.names)})
            rss = np.sum((pred - y) ** 2, axis=1)
        scores.append(np.array([aicc(r, curve.n, fit.law.k) if np.isfinite(r) else np.inf for r in rss]))
        samples.append(np.log10(draws[:, fit.law.names.index("x_c")]))
    scores, samples = np.stack(scores), np.stack(samples)
    pick = np.argmin(np.where(np.isfinite(scores), scores, np.inf), axis=0)
    chosen = samples[pick, np.arange(n_boot)]
    chosen = np.where(np.isfinite(scores[pick, np.arange(n_boot)]), chosen, np.nan)
    lo, hi = percentile_ci(chosen, level)
    return best, chosen, (10**lo, 10**hi), (hi - lo) / 2, best_draws[np.isfinite(best_draws).all(axis=1)]


def _optimal_design(fit, curve: Curve, draws: np.ndarray, k: int, grid: np.ndarray, taken: np.ndarray,
                    seeds: int, min_gap: float, max_draws: int = 64) -> list[float]:
    """Greedy sequential c-optimal design: k log10 x from ``grid`` that most reduce Var(log10 x_c).

    With J(x) the gradient of ln L in the fitted parameters and M = Σ_i s_i J(x_i) J(x_i)ᵀ the information
    of the data so far (s_i seeds at x_i; the pooled relative seed noise is a common factor and drops out),
    a new point with s seeds lowers v = cᵀM⁻¹c (c picks log10 x_c) by s (J(x)ᵀM⁻¹c)² / (1 + s J(x)ᵀM⁻¹J(x)).
    That reduction, relative to v, is averaged over bootstrap parameter draws (so a poorly located break
    spreads the design) and the best x is taken, M updated, k times. New x keep ≥ ``min_gap`` decades from
    each other and from the measured ones (halved while nothing fits, down to the grid's spacing).
    """
    law = fit.law
    theta = np.vstack([fit.theta, _fitted(law, draws[:max_draws - 1])]) if len(draws) else fit.theta[None, :]
    jac_old = log_jacobian(law, theta, np.log10(curve.x))  # [B, n, k]
    s_old = np.array([len(r) for r in curve.reps], float)
    m = np.einsum("bni,bnj,n->bij", jac_old, jac_old, s_old) + 1e-9 * np.eye(law.k)
    jac_new = log_jacobian(law, theta, grid)  # [B, G, k]
    chosen: list[float] = []
    spacing = float(np.min(np.diff(grid))) if len(grid) > 1 else 0.0
    for _ in range(k):
        inv = np.linalg.pinv(m)
        u = inv[:, :, 0]  # M⁻¹c
        v = inv[:, 0, 0]
        ju = np.einsum("bgk,bk->bg", jac_new, u)
        jmj = np.einsum("bgk,bkl,bgl->bg", jac_new, inv, jac_new)
        with np.errstate(all="ignore"):
            score = np.nanmean(seeds * ju**2 / ((1 + seeds * jmj) * v[:, None]), axis=0)
        dist = np.min(np.abs(grid[:, None] - np.concatenate([taken, chosen])[None, :]), axis=1)
        gap = min_gap  # halved while nothing fits, down to the grid's spacing
        while not np.isfinite(np.where(dist >= gap, score, -np.inf)).any() and gap > spacing:
            gap /= 2
        score = np.where((dist < gap) | ~np.isfinite(score), -np.inf, score)
        if not np.isfinite(score.max()):
            break
        g = int(np.argmax(score))
        chosen.append(float(grid[g]))
        m = m + seeds * np.einsum("bi,bj->bij", jac_new[:, g], jac_new[:, g])
    return sorted(chosen)


def _fitted(law, natural: np.ndarray) -> np.ndarray:
    """Natural parameters ``[B, k]`` → the fitted space (log10 for log parameters)."""
    return np.stack([np.log10(natural[:, j]) if p.log else natural[:, j] for j, p in enumerate(law.params)], axis=1)


def log_jacobian(law, theta: np.ndarray, log_x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """∂ ln L(x) / ∂θ for every parameter row: ``[B, len(log_x), k]`` by central differences."""
    x = np.broadcast_to(10.0 ** np.asarray(log_x, float), (theta.shape[0], len(log_x)))
    out = np.empty(x.shape + (law.k,))
    for j in range(law.k):
        step = np.zeros(law.k)
        step[j] = h
        with np.errstate(all="ignore"):
            hi = np.log(law.predict(x, batch_natural(law, theta + step)))
            lo = np.log(law.predict(x, batch_natural(law, theta - step)))
        out[:, :, j] = (hi - lo) / (2 * h)
    return np.nan_to_num(out)


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
            seed: int = 0, min_gap: float = 0.02, predict: bool = True, integer: bool = True,
            law: str = "auto") -> Proposal:
    """k new axis values in ``bounds`` (see the module docstring); ``law`` restricts the break to one broken law."""
    if k < 1:
        raise InputError("--points must be ≥ 1", field="points")
    names = broken_laws(law)
    lo_b, hi_b = np.log10(bounds[0]), np.log10(bounds[1])
    taken = np.log10(np.unique(curve.x))
    fits = _fits(curve, names + UNBROKEN)
    broken = min((fits[n] for n in names if n in fits), key=lambda f: f.aicc, default=None)
    unbroken = min((fits[n] for n in UNBROKEN if n in fits), key=lambda f: f.aicc, default=None)
    if broken is None:
        raise InputError(f"{curve.n} points are too few to locate a break (need ≥ 4)", field="points")
    clear = unbroken is None or broken.aicc < unbroken.aicc - ambiguity
    _, _, ci, half, draws = _break_bootstrap(curve, n_boot, seed, fits=fits, names=names)
    grid = np.linspace(lo_b, hi_b, 600)
    if clear:  # sequential c-optimal design for log10 x_c, averaged over the bootstrap's parameter draws
        seeds = max(len(r) for r in curve.reps)
        points = _optimal_design(broken, curve, draws, k, grid, taken, seeds, min_gap)
        reason = "break: largest expected CI reduction"
    else:
        with np.errstate(all="ignore"):
            d = np.abs(np.log(broken.predict(10**grid)) - np.log(unbroken.predict(10**grid)))
        gap = max(min_gap, (hi_b - lo_b) / (4 * k))
        points, reason = _spread(grid, np.nan_to_num(d), taken, k, gap, min_gap), "laws disagree"
    xs = [float(np.round(10**p)) if integer else float(10**p) for p in points]
    if integer:  # rounding may land on a measured value or merge two proposals
        xs = sorted(set(xs) - set(np.round(curve.x).tolist()))
    prop = Proposal(points=xs, reason=reason, law=broken.law.name, break_x=broken.params["x_c"], break_ci=ci,
                    half_width=half, aicc={n: f.aicc for n, f in fits.items()})
    if predict and xs:  # an independent simulation, so the printed prediction is not the design score
        prop.predicted_half_width = predicted_half_width(curve, broken, xs, n_boot=max(100, n_boot // 2), seed=seed,
                                                         names=names)
    return prop


def predicted_half_width(curve: Curve, fit, new_x: list[float], n_boot: int = 200, seed: int = 0,
                         names: tuple[str, ...] = BROKEN) -> float:
    """CI half-width (decades) of the break after adding ``new_x``, simulated once from the current fit and
    bootstrapped like the current interval."""
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
    return float(_break_bootstrap(sim, n_boot, seed, names=names)[3])  # the same interval as today's
