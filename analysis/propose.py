"""Where to measure next: new axis values that shrink the uncertainty of a break (or decide whether there is one).

``propose(curve, k, bounds)`` is a pure function from data to new points, usable without any training. It fits
the candidate laws exactly as ``matscale analyze`` does (:func:`analysis.scaling.fit_candidates`) and follows the
same model choice (:func:`analysis.fit.choose_law`), so both tell one story:

* the AICc winner has a break, clearly (the best law without one is more than ``ambiguity`` AICc worse): the
  break and its CI are analyze's (:func:`analysis.scaling.break_estimate`, the same resamples), and the k new x
  are those that most reduce the expected variance of log10 x_c (a sequential c-optimal design, linearised at
  bootstrap draws of the fit, so an uncertain break spreads the points over where it may be). That interval
  mixes the resamples of every broken law the points determine (each keeps its own AICc winner's x_c), so the
  design serves each of them, weighted by its share of the resamples × the spread of its x_c: the widest
  (often ``broken_amp``, whose break is located by the curvature alone) steers it. For these laws the optimum is
  two clusters about half a decade either side of the break plus a few points at the ends of the range, which
  pin the slopes;
* the winner has no break, clearly: no break is claimed and nothing is proposed — unless a broken law is
  assumed (``law="broken"`` or ``"broken_amp"``, or ``test=True``): then the k new x are where that law and
  the winner disagree most, to test for a break;
* ambiguous (the best law on the other side of "break or no break" within ``ambiguity`` AICc): the k new x are
  where the winner and that rival disagree most, so the next round decides between them; a break is reported
  only when the winner has one.

New x avoid the measured ones (≥ ``min_gap`` decades apart) and stay inside ``bounds``. The predicted CI is
estimated by simulating the proposal: the current fit's values at the new x with the data's relative seed
noise, refitted and bootstrapped like the current interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.fit import AMBIGUITY, Curve, batch_natural, make_curve
from analysis.laws import ONE_D
from analysis.scaling import break_estimate, break_text, fit_candidates
from gnn.errors import InputError

BROKEN = ("broken", "broken_amp")
UNBROKEN = ("power", "floor")


@dataclass
class Proposal:
    points: list[float]
    reason: str
    law: str | None  #: the law whose break is reported (None: no break is claimed)
    break_x: float | None = None
    break_ci: tuple[float, float] | None = None
    half_width: float | None = None  #: current CI half-width of log10 x_c (decades)
    predicted_half_width: float | None = None
    aicc: dict = field(default_factory=dict)
    verdict: str = "no break"  #: the AICc verdict of :func:`analysis.fit.choose_law`: "break" or "no break"
    winner: str | None = None  #: the AICc winner (analyze's law)
    rival: str | None = None  #: the best law on the other side of "break or no break"
    delta_aicc: float | None = None  #: rival's AICc − the winner's
    ambiguous: bool = False
    assumed: bool = False  #: the break comes from a law assumed by ``law=`` rather than from the AICc verdict
    summary: str = ""  #: the choice in words, as analyze prints it
    design: str | None = None  #: "break" (c-optimal for x_c), "disagree" (break or not?), None (nothing proposed)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("points", "reason", "law", "break_x", "break_ci", "half_width",
                                              "predicted_half_width", "aicc", "verdict", "winner", "rival",
                                              "delta_aicc", "ambiguous", "assumed", "summary", "design")}


def broken_laws(law: str = "auto") -> tuple[str, ...]:
    """The broken laws a break's interval may come from: both (``auto``), or the one named."""
    if law == "auto":
        return BROKEN
    if law not in BROKEN:
        raise InputError(f"law must be auto, broken or broken_amp, got {law!r}", field="law")
    return (law,)


def break_interval(curve: Curve, n_boot: int = 1000, seed: int = 0, level: float = 0.95, law: str = "auto"):
    """(best broken fit, log10 x_c bootstrap samples, CI in x, half-width in decades): the interval analyze
    reports for a broken winner, over the broken laws ``law`` names (both for ``auto``)."""
    return _break_bootstrap(curve, n_boot, seed, level, names=broken_laws(law))[:4]


def _break_bootstrap(curve: Curve, n_boot: int, seed: int, level: float = 0.95, names: tuple[str, ...] = BROKEN,
                     cands: dict | None = None, law: str | None = None):
    """The break of the best fitted broken law in ``names`` (or of ``law``), its interval including the choice
    between the broken laws in ``names`` (:func:`analysis.scaling.break_estimate`), and the finite bootstrap
    draws of its fit: ``(fit, log10 x_c samples, CI, half-width, draws)``."""
    if cands is None:
        if curve.n < 4:
            raise InputError(f"{curve.n} points are too few to locate a break (need ≥ 4)", field="points")
        cands, _ = fit_candidates(curve, list(names), n_boot=n_boot, seed=seed, level=level, workers=1)
    fitted = {n: c for n, c in cands.items() if n in names}
    if not fitted:
        raise InputError(f"{curve.n} points are too few to locate a break (need ≥ 4)", field="points")
    if law is None:
        law = min(fitted, key=lambda n: fitted[n]["fit"].aicc)
    b = break_estimate(curve, cands, law, among=names, n_boot=n_boot, seed=seed, level=level)
    ci = tuple(float("nan") if v is None else v for v in b["ci"])
    half = float("nan") if b["half_width"] is None else b["half_width"]
    draws = cands[law]["boot"]
    return cands[law]["fit"], b["samples"], ci, half, draws[np.isfinite(draws).all(axis=1)]


def _optimal_design(fits, curve: Curve, draws, k: int, grid: np.ndarray, taken: np.ndarray,
                    seeds: int, min_gap: float, max_draws: int = 128, weights=None) -> list[float]:
    """Greedy sequential c-optimal design: k log10 x from ``grid`` that most reduce Var(log10 x_c).

    With J(x) the gradient of ln L in the fitted parameters and M = Σ_i s_i J(x_i) J(x_i)ᵀ the information
    of the data so far (s_i seeds at x_i; the pooled relative seed noise is a common factor and drops out),
    a new point with s seeds lowers v = cᵀM⁻¹c (c picks log10 x_c) by s (J(x)ᵀM⁻¹c)² / (1 + s J(x)ᵀM⁻¹J(x)).
    That reduction, relative to v, is averaged over bootstrap parameter draws (so a poorly located break
    spreads the design) and the best x is taken, M updated, k times. ``fits`` may be one fit or several
    (the broken laws whose resamples make up the reported interval, with their ``draws`` and ``weights``):
    the score is then the weighted sum of each law's averaged relative reduction. New x keep ≥ ``min_gap``
    decades from each other and from the measured ones (halved while nothing fits, down to the grid's spacing).
    """
    if not isinstance(fits, (list, tuple)):
        fits, draws = [fits], [draws]
    weights = np.ones(len(fits)) if weights is None else np.asarray(weights, float)
    weights = weights / weights.sum()
    s_old = np.array([len(r) for r in curve.reps], float)
    models = []
    for fit, d in zip(fits, draws):
        law = fit.law
        theta = np.vstack([fit.theta, _fitted(law, d[:max_draws - 1])]) if len(d) else fit.theta[None, :]
        jac_old = log_jacobian(law, theta, np.log10(curve.x))  # [B, n, k]
        m = np.einsum("bni,bnj,n->bij", jac_old, jac_old, s_old) + 1e-9 * np.eye(law.k)
        models.append([m, log_jacobian(law, theta, grid)])  # [B, G, k]
    chosen: list[float] = []
    spacing = float(np.min(np.diff(grid))) if len(grid) > 1 else 0.0
    for _ in range(k):
        score = np.zeros(len(grid))
        for w, (m, jac_new) in zip(weights, models):
            inv = np.linalg.pinv(m)
            u = inv[:, :, 0]  # M⁻¹c
            v = inv[:, 0, 0]
            ju = np.einsum("bgk,bk->bg", jac_new, u)
            jmj = np.einsum("bgk,bkl,bgl->bg", jac_new, inv, jac_new)
            with np.errstate(all="ignore"):
                score = score + w * np.nanmean(seeds * ju**2 / ((1 + seeds * jmj) * v[:, None]), axis=0)
        dist = np.min(np.abs(grid[:, None] - np.concatenate([taken, chosen])[None, :]), axis=1)
        gap = min_gap  # halved while nothing fits, down to the grid's spacing
        while not np.isfinite(np.where(dist >= gap, score, -np.inf)).any() and gap > spacing:
            gap /= 2
        score = np.where((dist < gap) | ~np.isfinite(score), -np.inf, score)
        if not np.isfinite(score.max()):
            break
        g = int(np.argmax(score))
        chosen.append(float(grid[g]))
        for model in models:
            jg = model[1][:, g]
            model[0] = model[0] + seeds * np.einsum("bi,bj->bij", jg, jg)
    return sorted(chosen)


def _interval_laws(cands: dict, law: str, names: tuple[str, ...], samples: np.ndarray, floor: float = 0.05):
    """The broken laws whose resamples make up the reported interval (as :func:`analysis.scaling.break_estimate`
    picks them), their finite bootstrap draws, and design weights: each law's share of the resamples (floored at
    ``floor``: a law rarely chosen today may be chosen tomorrow) times the spread (variance) of its log10 x_c draws,
    so the design shrinks the part of the interval's spread that each law contributes."""
    members = [n for n, c in cands.items() if c["fit"].law.kind == "broken" and (n == law or (
        n in names and not c["not_enough"] and len(c["boot"])))]
    fits, draws, weights = [], [], []
    for n in members:
        d = cands[n]["boot"]
        d = d[np.isfinite(d).all(axis=1)]
        if not len(d):
            continue
        with np.errstate(all="ignore"):
            logs = np.log10(cands[n]["boot"][:, cands[n]["fit"].law.names.index("x_c")])
            share = float(np.mean(np.isclose(samples, logs))) if len(samples) == len(logs) else float(n == law)
            lx = np.log10(d[:, cands[n]["fit"].law.names.index("x_c")])
        q = np.percentile(lx, [16, 84])
        fits.append(cands[n]["fit"])
        draws.append(d)
        weights.append(max(share, floor) * max(((q[1] - q[0]) / 2) ** 2, 1e-8))
    return fits, draws, weights


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


def propose(curve: Curve, k: int, bounds: tuple[float, float], *, ambiguity: float = AMBIGUITY, n_boot: int = 1000,
            seed: int = 0, min_gap: float = 0.02, predict: bool = True, integer: bool = True,
            law: str = "auto", test: bool | None = None) -> Proposal:
    """k new axis values in ``bounds`` (see the module docstring). ``law`` assumes one broken law for the break;
    ``test`` (default: whether a law is assumed) proposes points that test for a break where AICc finds none.
    With the defaults (1000 resamples, seed 0) the break and its CI are the numbers ``analyze`` reports."""
    if k < 1:
        raise InputError("--points must be ≥ 1", field="points")
    names = broken_laws(law)
    assumed = law != "auto"
    test = assumed if test is None else test
    lo_b, hi_b = np.log10(bounds[0]), np.log10(bounds[1])
    taken = np.log10(np.unique(curve.x))
    cands, choice = fit_candidates(curve, list(ONE_D), n_boot=n_boot, seed=seed, workers=1, boot=names,
                                   ambiguity=ambiguity)
    prop = Proposal(points=[], reason="", law=None, aicc={n: c["fit"].aicc for n, c in cands.items()},
                    verdict=choice.verdict, winner=choice.law, rival=choice.rival, delta_aicc=choice.delta,
                    ambiguous=choice.ambiguous, assumed=assumed, summary=choice.summary())
    usable = [n for n in names if n in cands and not cands[n]["not_enough"]]
    if assumed:  # asked for: any fit with a finite AICc will do (a parameter at its bound is said below)
        broken_name = law if law in cands and np.isfinite(cands[law]["fit"].aicc) else None
    elif choice.has_break:
        broken_name = choice.law
    else:  # the break a test would look for: the best determined broken law
        broken_name = min(usable, key=lambda n: cands[n]["fit"].aicc, default=None)
    if broken_name is None:  # the points determine no broken law (of those asked for)
        missing = law if assumed else "a broken law"
        why = cands[law]["not_enough"] if assumed and law in cands else f"{curve.n} points, need ≥ 4"
        prop.reason = f"{choice.verdict}: {choice.summary()}; not enough points for {missing} ({why})"
        return prop
    broken = cands[broken_name]["fit"]
    claim = choice.has_break or assumed  # a break is reported only when AICc finds one or a law is assumed
    said = ""
    if claim:
        _, samples, ci, half, draws = _break_bootstrap(curve, n_boot, seed, names=names, cands=cands, law=broken_name)
        prop.law, prop.break_x, prop.break_ci, prop.half_width = broken_name, broken.params["x_c"], ci, half
        said = break_text(broken.params["x_c"], ci, half)
        if cands[broken_name]["not_enough"]:
            said += f" [{cands[broken_name]['not_enough']}]"
    grid = np.linspace(lo_b, hi_b, 600)
    if choice.has_break:
        head = f"{said}: {choice.summary()}"
        if assumed and broken_name != choice.law:
            head += f"; the break is {broken_name}'s (--law {law}), not the winner's"
    else:
        head = f"no break: {choice.summary()}"
        if claim:  # a broken law assumed by the user: its break, labelled as such
            head += f"; --law {law} assumes one, {said.replace('break', f'{broken_name} puts it at', 1)}"
    if claim and choice.has_break and not choice.ambiguous:
        seeds = max(len(r) for r in curve.reps)
        fits, law_draws, weights = _interval_laws(cands, broken_name, names, samples)
        if not fits:  # no finite resample: the fit alone
            fits, law_draws, weights = [broken], [draws], None
        points = _optimal_design(fits, curve, law_draws, k, grid, taken, seeds, min_gap, weights=weights)
        prop.design, prop.reason = "break", f"{head}; new x that most shrink its CI"
    elif not choice.has_break and not choice.ambiguous and not test:
        points = []
        prop.design, prop.reason = None, f"{head}; nothing to propose"
    else:  # decide between the break and no break: where the two laws disagree most
        other = choice.law if not choice.has_break else choice.rival
        with np.errstate(all="ignore"):
            d = np.abs(np.log(broken.predict(10**grid)) - np.log(cands[other]["fit"].predict(10**grid)))
        gap = max(min_gap, (hi_b - lo_b) / (4 * k))
        points = _spread(grid, np.nan_to_num(d), taken, k, gap, min_gap)
        why = "" if choice.ambiguous or choice.has_break else "; to test for a break"
        prop.design = "disagree"
        prop.reason = f"{head}{why}: new x where {broken_name} and {other} disagree most"
    xs = [float(np.round(10**p)) if integer else float(10**p) for p in points]
    if integer:  # rounding may land on a measured value or merge two proposals
        xs = sorted(set(xs) - set(np.round(curve.x).tolist()))
    prop.points = xs
    if predict and xs and claim and np.isfinite(prop.half_width):
        # an independent simulation, so the printed prediction is not the design score
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
