"""Fitting scaling laws with honest uncertainty.

* Data: rows sharing x (and x2) are replicates (seeds); a law is fitted to their means, weighted by their
  standard deviation σ_i (floored at 10% of the median σ so one lucky point cannot dominate; σ_i = 1 when
  there are no replicates).
* Objectives: ``wls`` minimises Σ ((L̂_i − L̄_i)/σ_i)²; ``huber`` minimises Σ Huber_δ(log L̂_i − log L̄_i)
  with δ = 1e-3 (Hoffmann et al. 2022; Besiroglu et al. 2024); ``msle`` minimises Σ (log(L̂_i + 1) − log(L̄_i + 1))²,
  the objective of the BNSL reference code (Caballero et al. 2022). ``auto`` (the default): ``msle`` for
  ``bnsl:K``, ``wls`` for every other law.
* Many starts (the product of each parameter's start values), screened by their objective; the best
  dozen are optimised with scipy's trust-region least squares within bounds; the best objective wins.
  ``bnsl:K`` starts from a brute-force grid over all its parameters as its authors fit it (:func:`_bnsl_grid`:
  a, c0 and every c_i, d_i, f_i on a grid, b solved in closed form for each row, evaluated vectorised).
* Model choice (:func:`choose_law`, the one rule that ``analyze`` and ``refine`` share): the lowest
  AICc = n·ln(RSS/n) + 2k + (2k² + 2k)/(n − k − 1), with RSS the unweighted residuals of the means after the fit
  (as in the dielectric paper), among the laws the points determine (finite AICc, no parameter pinned at the
  edge of its search range); an exact tie goes to the law listed first (the simpler one). Whether the winner has
  a break is ambiguous when the best law on the other side of that question is within ``AMBIGUITY`` AICc.
  Plus the extrapolation error RMSLE on the K largest x when they are held out of the fit.
* Uncertainty: standard errors from the Jacobian's covariance (delta method for log-fitted parameters) and
  percentile confidence intervals from a seeded bootstrap over runs (seeds resampled within each point, their
  spread inflated by √(r/(r−1)) so a point's mean varies as much as a fresh set of r seeds would; points
  resampled when there are no replicates).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from analysis.laws import LOG10, Law
from gnn.errors import InputError

HUBER_DELTA = 1e-3
OBJECTIVES = ("auto", "wls", "huber", "msle")
BNSL_GRID_ROWS = 40_000  #: the most rows of the brute-force grid of a bnsl law (a random subset beyond)
MAX_STARTS = 400  #: start grid size cap
LOCAL_STARTS = 12  #: the best grid points (by objective) that are optimised locally


@dataclass
class Curve:
    """Replicate-aware data: unique points ``x`` (``[n]`` or ``[n, 2]``), seed means, σ, and the replicates."""

    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    std: np.ndarray
    reps: list[np.ndarray]

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def joint(self) -> bool:
        return self.x.ndim == 2

    def xs(self):
        """The law's input: x, or (N, D)."""
        return (self.x[:, 0], self.x[:, 1]) if self.joint else self.x

    def spans(self):
        lx = np.log10(self.x)
        if self.joint:
            return (lx[:, 0].min(), lx[:, 0].max()), (lx[:, 1].min(), lx[:, 1].max())
        return (lx.min(), lx.max()), None


def make_curve(x, y, x2=None) -> Curve:
    """Group rows by x (and x2) into replicates; validate positivity and finiteness."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    cols = [x] if x2 is None else [x, np.asarray(x2, dtype=float)]
    for name, v in [("x", x), ("y", y)] + ([("x2", cols[1])] if x2 is not None else []):
        if not np.isfinite(v).all():
            raise InputError("NaN or infinite values", field=name)
        if (v <= 0).any():
            raise InputError("values must be positive (laws are fitted on log scales)", field=name)
    keys = np.stack(cols, axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    reps = [y[inverse == i] for i in range(len(uniq))]
    means = np.array([r.mean() for r in reps])
    std = np.array([r.std(ddof=1) if len(r) > 1 else np.nan for r in reps])
    return Curve(uniq if x2 is not None else uniq[:, 0], means, _sigma(std), std, reps)


def _sigma(std: np.ndarray) -> np.ndarray:
    if np.isnan(std).all():
        return np.ones_like(std)
    floor = 0.1 * np.nanmedian(std)
    out = np.where(np.isnan(std), np.nanmedian(std), std)
    return np.maximum(out, max(floor, 1e-12))


@dataclass
class Fit:
    """One law fitted to one curve."""

    law: Law
    theta: np.ndarray
    params: dict[str, float]
    stderr: dict[str, float]
    rss: float
    aicc: float
    cost: float
    n: int
    at_bound: tuple[str, ...] = ()  #: parameters pinned at the edge of their search range

    def predict(self, x) -> np.ndarray:
        return self.law.predict(x, self.params)

    @property
    def not_enough(self) -> str | None:
        """Why the points do not determine this law (None when they do): see :func:`undetermined`."""
        return undetermined(self.law, self.n, self.aicc, self.at_bound)


def aicc(rss: float, n: int, k: int) -> float:
    """n·ln(RSS/n) + 2k + (2k² + 2k)/(n − k − 1); +inf when n ≤ k + 1."""
    if n - k - 1 <= 0 or rss <= 0:
        return float("inf")
    return n * np.log(rss / n) + 2 * k + (2 * k * k + 2 * k) / (n - k - 1)


def objective_for(law: Law, objective: str) -> str:
    """The objective a fit of ``law`` uses: ``objective``, or for ``auto`` ``msle`` (bnsl) or ``wls``."""
    if objective not in OBJECTIVES:
        raise InputError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}", field="objective")
    if objective == "auto":
        return "msle" if law.kind == "bnsl" else "wls"
    return objective


def _resid(pred: np.ndarray, y: np.ndarray, sigma: np.ndarray, objective: str) -> np.ndarray:
    """Residuals of predictions ``pred`` (any leading batch shape) against the means ``y``; not finite where the
    objective is undefined."""
    with np.errstate(all="ignore"):
        if objective == "wls":
            return (pred - y) / sigma
        if objective == "msle":
            return np.log1p(np.where(pred > -1, pred, np.nan)) - np.log1p(y)
        return np.log(np.where(pred > 0, pred, np.nan)) - np.log(y)


def _residual_fn(law: Law, xs, y: np.ndarray, sigma: np.ndarray, objective: str):
    def residuals(theta):
        with np.errstate(all="ignore"):
            r = _resid(law.predict_theta(xs, theta), y, sigma, objective)
        bad = ~np.isfinite(r)
        return np.where(bad, 1e6, r) if bad.any() else r

    return residuals


def _rho(r: np.ndarray, objective: str) -> np.ndarray:
    if objective in ("wls", "msle"):
        return r**2
    a = np.abs(r)
    return np.where(a <= HUBER_DELTA, r**2, 2 * HUBER_DELTA * a - HUBER_DELTA**2)


def _bnsl_grid(law: Law, curve: Curve, objective: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The :data:`LOCAL_STARTS` best rows of a brute-force grid over a bnsl law's parameters (the protocol of
    Caballero et al. 2022): a (fractions of the smallest loss), c0, and per break c_i, d_i (across the x range and
    half a decade beyond) and f_i on a grid, b for each row by least squares of ``y − a`` on the row's shape
    (closed form), every row scored by ``objective`` in one vectorised pass."""
    x, y = curve.x, curve.y
    lx, y_min = np.log10(x), float(y.min())
    axes = {"a": np.array([0.0, 0.25, 0.5, 0.75, 0.95]) * y_min, "c0": np.array([0.0, 0.1, 0.25, 0.5, 1.0])}
    for i in range(1, law.extra["breaks"] + 1):
        axes[f"c{i}"] = np.array([-0.5, -0.2, 0.0, 0.2, 0.5, 1.0, 2.0])
        axes[f"d{i}"] = np.linspace(lx.min() - 0.5, lx.max() + 0.5, 8)  # log10
        axes[f"f{i}"] = np.array([-1.5, -1.0, -0.5, 0.0, 0.5])  # log10
    names = list(axes)
    size = int(np.prod([len(v) for v in axes.values()]))
    rows = np.arange(size) if size <= BNSL_GRID_ROWS else rng.choice(size, BNSL_GRID_ROWS, replace=False)
    idx = np.unravel_index(rows, [len(axes[n]) for n in names])
    grid = {n: axes[n][i][:, None] for n, i in zip(names, idx)}
    natural = {n: (10.0 ** v if n[0] in "df" else v) for n, v in grid.items()}
    with np.errstate(all="ignore"):
        shape = law.predict(x, {**natural, "a": np.zeros_like(natural["a"]), "b": np.ones_like(natural["a"])})
        b = np.sum(shape * (y - natural["a"]), axis=1, keepdims=True) / np.sum(shape**2, axis=1, keepdims=True)
        b = np.where(np.isfinite(b) & (b > 0), b, np.nan)
        r = _resid(law.predict(x, {**natural, "b": b}), y, curve.sigma, objective)
        score = np.where(np.isfinite(r).all(axis=1), np.sum(_rho(r, objective), axis=1), np.inf)
    best = np.argsort(score)[:LOCAL_STARTS]
    lower, upper = [p.lower for p in law.params], [p.upper for p in law.params]
    starts = []
    for j in best[np.isfinite(score[best])]:
        theta = [np.log10(b[j, 0]) if p.name == "b" else float(grid[p.name][j, 0]) for p in law.params]
        starts.append(np.clip(np.array(theta), lower, upper))
    return starts


def _starts(law: Law, rng: np.random.Generator, curve: Curve | None = None,
            objective: str = "wls") -> list[np.ndarray]:
    if law.kind == "bnsl" and curve is not None:
        grid = _bnsl_grid(law, curve, objective, rng)
        if grid:
            return grid
    grids = [p.starts or (0.0,) for p in law.params]
    combos = list(itertools.product(*grids))
    if len(combos) > MAX_STARTS:
        combos = [combos[i] for i in rng.choice(len(combos), MAX_STARTS, replace=False)]
    return [np.clip(np.array(c, dtype=float), [p.lower for p in law.params], [p.upper for p in law.params])
            for c in combos]


def _solve(law: Law, curve: Curve, objective: str, starts: list[np.ndarray], xs=None, y=None, sigma=None):
    """Best local optimum over ``starts`` (scipy ``least_squares``, trust region within bounds)."""
    xs = curve.xs() if xs is None else xs
    y = curve.y if y is None else y
    sigma = curve.sigma if sigma is None else sigma
    fn = _residual_fn(law, xs, y, sigma, objective)
    lower = np.array([p.lower for p in law.params])
    upper = np.array([p.upper for p in law.params])
    kw = {"loss": "huber", "f_scale": HUBER_DELTA} if objective == "huber" else {}
    if len(starts) > LOCAL_STARTS:  # screen the grid by its objective, then optimise the best few
        score = [float(np.sum(_rho(fn(t), objective))) for t in starts]
        starts = [starts[i] for i in np.argsort(score)[:LOCAL_STARTS]]
    best = None
    for theta0 in starts:
        r = _least_squares(fn, theta0, lower, upper, kw)
        if r is not None and (best is None or r.cost < best.cost):
            best = r
    return best


def _least_squares(fn, theta0, lower, upper, kw, tol: float = 1e-8):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return least_squares(fn, np.clip(theta0, lower, upper), bounds=(lower, upper), method="trf",
                                 max_nfev=2000, ftol=tol, xtol=tol, gtol=tol, **kw)
    except (ValueError, np.linalg.LinAlgError):
        return None


def fit_law(law: Law, curve: Curve, objective: str = "auto", seed: int = 0) -> Fit:
    """Multi-start fit of ``law``; raises :class:`InputError` when there are too few points."""
    objective = objective_for(law, objective)
    if curve.n < law.k + 1:
        raise InputError(f"law {law.name!r} has {law.k} parameters but there are only {curve.n} distinct points "
                         f"(need ≥ {law.k + 1})", field="law")
    best = _solve(law, curve, objective, _starts(law, np.random.default_rng(seed), curve, objective))
    if best is None:
        raise InputError(f"law {law.name!r} could not be fitted", field="law")
    return _make_fit(law, curve, best, objective)


def _make_fit(law: Law, curve: Curve, r, objective: str) -> Fit:
    params = law.natural(r.x)
    with np.errstate(all="ignore"):
        pred = law.predict(curve.xs(), params)
    rss = float(np.sum((pred - curve.y) ** 2))
    return Fit(law, r.x.copy(), params, _stderr(law, r, curve.n), rss, aicc(rss, curve.n, law.k), float(r.cost),
               curve.n, at_bounds(law, r.x))


def at_bounds(law: Law, theta: np.ndarray, tol: float = 1e-6) -> tuple[str, ...]:
    """Parameters (fitted space ``theta``) at a finite bound of their search range. A bound of exactly 0 is
    not counted: a floor or an exponent at 0 is the law reducing to a simpler one, a legitimate fit."""
    out = []
    for p, t in zip(law.params, theta):
        for b in (p.lower, p.upper):
            if np.isfinite(b) and b != 0.0 and abs(t - b) <= tol * max(1.0, abs(b)):
                out.append(p.name)
                break
    return tuple(out)


def undetermined(law: Law, n: int, aicc_value, at_bound=()) -> str | None:
    """Why ``n`` points do not determine a fit of ``law`` (its AICc is not finite, or a parameter sits at the
    edge of its search range), as a short clause; None when they do."""
    if aicc_value is None or not np.isfinite(aicc_value):
        if n < law.k + 2:
            return f"{law.k} parameters: AICc needs ≥ {law.k + 2} points, there are {n}"
        return "AICc is undefined (a perfect fit)"
    if at_bound:
        return f"{', '.join(at_bound)} at the edge of the search range"
    return None


AMBIGUITY = 2.0  #: AICc difference within which "break or no break" is called ambiguous


def has_break(name: str) -> bool:
    """Whether the law ``name`` has a break (broken, broken_amp, bnsl:K, kaplan_broken)."""
    return name in ("broken", "broken_amp", "kaplan_broken") or name.startswith("bnsl")


@dataclass
class Choice:
    """The model choice of one curve (:func:`choose_law`)."""

    law: str  #: the winner
    aicc: dict  #: AICc of every candidate (inf where not finite)
    not_enough: dict  #: law → why the points do not determine it (excluded from the choice)
    rival: str | None = None  #: the best determined law on the other side of "break or no break"
    delta: float | None = None  #: rival's AICc − the winner's (≥ 0)
    ambiguity: float = AMBIGUITY
    determined: bool = True  #: False when no candidate is determined and the winner is a fallback

    @property
    def has_break(self) -> bool:
        return has_break(self.law)

    @property
    def ambiguous(self) -> bool:
        """The rival is within ``ambiguity`` AICc: the data do not decide between break and no break."""
        return self.delta is not None and self.delta <= self.ambiguity

    @property
    def verdict(self) -> str:
        return "break" if self.has_break else "no break"

    def summary(self) -> str:
        """One line: e.g. ``power preferred by AICc (ΔAICc 17.46 over broken)``."""
        if not self.determined:
            return f"{self.law}: no candidate is determined by these points"
        if self.rival is None:
            side = "without" if self.has_break else "with"
            return f"{self.law} preferred by AICc (no determined law {side} a break to compare)"
        if self.ambiguous:
            return f"{self.law} preferred by AICc, but {self.rival} is within {self.ambiguity:g} (ΔAICc " \
                   f"{self.delta:.2f}): ambiguous"
        return f"{self.law} preferred by AICc (ΔAICc {self.delta:.2f} over {self.rival})"

    def as_dict(self) -> dict:
        return {"law": self.law, "verdict": self.verdict, "rival": self.rival, "delta_aicc": self.delta,
                "ambiguous": self.ambiguous, "not_enough": dict(self.not_enough), "summary": self.summary()}


def choose_law(aiccs: dict, not_enough: dict | None = None, ambiguity: float = AMBIGUITY) -> Choice:
    """The one model-choice rule: the lowest AICc among the determined candidates (``aiccs`` in candidate order;
    an exact tie goes to the first), and the best determined law on the other side of "break or no break" with
    its AICc gap. ``not_enough`` maps a candidate to why the points do not determine it; candidates with a
    non-finite AICc count as not determined too. Without any determined candidate the lowest finite AICc (or the
    first candidate) is a fallback, flagged ``determined=False``."""
    if not aiccs:
        raise InputError("no candidate law to choose from", field="law")
    vals = {n: float(v) if isinstance(v, (int, float)) and v is not None else float("inf") for n, v in aiccs.items()}
    skip = dict(not_enough or {})
    ok = {n: v for n, v in vals.items() if np.isfinite(v) and n not in skip}
    determined = bool(ok)
    pool = ok or {n: v for n, v in vals.items() if np.isfinite(v)} or {next(iter(vals)): 0.0}
    winner = min(pool, key=lambda n: pool[n])  # min keeps the first of equal values: ties go to the simpler law
    others = {n: v for n, v in ok.items() if has_break(n) != has_break(winner)}
    rival = min(others, key=lambda n: others[n]) if others and determined else None
    delta = float(others[rival] - vals[winner]) if rival is not None else None
    return Choice(winner, vals, skip, rival, delta, ambiguity, determined)


def choice_bootstrap(curve: Curve, laws: list[Law], draws: list[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """For every bootstrap resample, the index (into ``laws``) of its own AICc winner among ``laws``, whose
    ``[n_boot, k]`` natural-parameter ``draws`` come from :func:`bootstrap` with the same ``n_boot`` and ``seed``
    (so they were refitted on these very resamples); −1 where no law refitted."""
    _, y, _ = resample_many(curve, np.random.default_rng(seed), n_boot)  # the resamples bootstrap() draws
    scores = []
    for law, d in zip(laws, draws):
        with np.errstate(all="ignore"):
            pred = law.predict(curve.x[None, :], {k: d[:, [j]] for j, k in enumerate(law.names)})
            rss = np.sum((pred - y) ** 2, axis=1)
        scores.append(np.array([aicc(r, curve.n, law.k) if np.isfinite(r) else np.inf for r in rss]))
    scores = np.stack(scores)
    pick = np.argmin(scores, axis=0)
    return np.where(np.isfinite(scores[pick, np.arange(n_boot)]), pick, -1)


def break_interval(curve: Curve, laws: list[Law], draws: list[np.ndarray], n_boot: int, seed: int,
                   level: float = 0.95) -> tuple[np.ndarray, tuple[float, float], float]:
    """The break's bootstrap interval, including the choice between the broken ``laws`` (Buckland et al. 1997):
    each resample keeps the x_c of its own AICc winner (:func:`choice_bootstrap`), so a CI cannot be narrow only
    because a small sample made AICc prefer one form. ``(log10 x_c samples, CI in x, half-width in decades)``;
    with one law it is that law's percentile interval (resamples where its AICc is undefined dropped).
    ``analyze`` and ``refine`` both report this one."""
    pick = choice_bootstrap(curve, laws, draws, n_boot, seed)
    with np.errstate(all="ignore"):
        logs = np.stack([np.log10(d[:, law.names.index("x_c")]) for law, d in zip(laws, draws)])
    chosen = np.where(pick >= 0, logs[np.maximum(pick, 0), np.arange(n_boot)], np.nan)
    lo, hi = percentile_ci(chosen, level)
    return chosen, (float(10**lo), float(10**hi)), float((hi - lo) / 2)


def _stderr(law: Law, r, n: int) -> dict[str, float]:
    """Standard errors from (JᵀJ)⁻¹ scaled by the residual variance, mapped to natural parameters."""
    dof = max(n - law.k, 1)
    try:
        cov = np.linalg.pinv(r.jac.T @ r.jac) * (2.0 * r.cost / dof)
        se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    except np.linalg.LinAlgError:
        se = np.full(law.k, np.nan)
    out = {}
    for p, t, s in zip(law.params, r.x, se):
        out[p.name] = float(10.0**t * LOG10 * s) if p.log else float(s)
    return out


def _inflated(m: np.ndarray) -> np.ndarray:
    """Replicates spread about their mean by √(r/(r−1)), so that resampling r of them with replacement has the
    variance of the mean an independent run would have (the plain bootstrap shrinks it by (r−1)/r)."""
    r = m.shape[1]
    if r < 2:
        return m
    mean = m.mean(axis=1, keepdims=True)
    return mean + (m - mean) * np.sqrt(r / (r - 1))


def resample(curve: Curve, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One bootstrap draw: (x indices, means, σ) with seeds resampled within points (points if no replicates)."""
    if all(len(r) < 2 for r in curve.reps):
        idx = np.sort(rng.integers(0, curve.n, curve.n))
        return idx, curve.y[idx], curve.sigma[idx]
    sizes = {len(r) for r in curve.reps}
    if len(sizes) == 1:  # the usual case, vectorised: every point has the same number of seeds
        m = _inflated(np.stack(curve.reps))
        draw = np.take_along_axis(m, rng.integers(0, m.shape[1], m.shape), axis=1)
        std = draw.std(axis=1, ddof=1)
        return np.arange(curve.n), draw.mean(axis=1), _sigma(np.where(std > 0, std, np.nan))
    means, stds = np.empty(curve.n), np.empty(curve.n)
    for i, r in enumerate(curve.reps):
        r = _inflated(r[None, :])[0] if len(r) > 1 else r
        draw = r[rng.integers(0, len(r), len(r))]
        means[i] = draw.mean()
        stds[i] = draw.std(ddof=1) if len(draw) > 1 else np.nan
    return np.arange(curve.n), means, _sigma(np.where(stds > 0, stds, np.nan))


def resample_many(curve: Curve, rng: np.random.Generator, n: int):
    """``n`` bootstrap draws at once: ``[n, points]`` indices, means and σ (see :func:`resample`)."""
    sizes = {len(r) for r in curve.reps}
    if len(sizes) != 1 or sizes == {1}:
        draws = [resample(curve, rng) for _ in range(n)]
        return tuple(np.stack([d[i] for d in draws]) for i in range(3))
    m = _inflated(np.stack(curve.reps))  # [points, seeds]
    pick = rng.integers(0, m.shape[1], (n,) + m.shape)
    draw = np.take_along_axis(np.broadcast_to(m, (n,) + m.shape), pick, axis=2)
    std = draw.std(axis=2, ddof=1)
    std = np.where(std > 0, std, np.nan)
    med = np.nanmedian(np.where(np.isnan(std).all(axis=1, keepdims=True), 1.0, std), axis=1, keepdims=True)
    sigma = np.maximum(np.where(np.isnan(std), med, std), np.maximum(0.1 * med, 1e-12))
    return np.broadcast_to(np.arange(curve.n), (n, curve.n)), draw.mean(axis=2), sigma


def bootstrap(fit: Fit, curve: Curve, objective: str = "auto", n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_boot, k]`` natural parameters refitted on resampled data (NaN rows where a refit failed).

    All resamples are refitted at once by a batched Levenberg–Marquardt (projected onto the bounds), started
    at the full-data optimum: the same objective as :func:`fit_law`, a hundred times faster than one scipy
    call per resample.
    """
    rng = np.random.default_rng(seed)
    law = fit.law
    idx, y, sigma = resample_many(curve, rng, n_boot)
    x = curve.x[idx]
    xs = (x[..., 0], x[..., 1]) if curve.joint else x
    theta, ok = _batch_lm(law, xs, y, sigma, fit.theta, objective_for(law, objective))
    distinct = np.array([len(np.unique(i)) for i in idx]) >= law.k + 1
    out = np.full((n_boot, law.k), np.nan)
    good = ok & distinct
    for j, p in enumerate(law.params):
        out[good, j] = 10.0 ** theta[good, j] if p.log else theta[good, j]
    return out


def batch_natural(law: Law, theta: np.ndarray) -> dict:
    return {p.name: (10.0 ** theta[:, j:j + 1] if p.log else theta[:, j:j + 1]) for j, p in enumerate(law.params)}


def _batch_lm(law: Law, xs, y: np.ndarray, sigma: np.ndarray, theta0: np.ndarray, objective: str,
              iters: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg–Marquardt on a batch of problems sharing a law: minimise Σ ρ(r_b) for every row b."""
    b, k = y.shape[0], law.k
    lower = np.array([p.lower for p in law.params])
    upper = np.array([p.upper for p in law.params])

    def resid(theta):
        with np.errstate(all="ignore"):
            r = _resid(law.predict(xs, batch_natural(law, theta)), y, sigma, objective)
        return np.where(np.isfinite(r), r, 1e6)

    def cost(r):
        return np.sum(_rho(r, objective), axis=1)

    theta = np.repeat(theta0[None, :], b, axis=0).astype(float)
    r = resid(theta)
    c = cost(r)
    lam = np.full(b, 1e-3)
    for _ in range(iters):
        w = np.ones_like(r) if objective != "huber" else np.where(np.abs(r) <= HUBER_DELTA, 1.0,
                                                                 HUBER_DELTA / np.abs(r))  # IRLS for Huber
        h = 1e-6 * np.maximum(1.0, np.abs(theta))
        jac = np.empty(r.shape + (k,))
        for j in range(k):
            t2 = theta.copy()
            t2[:, j] += h[:, j]
            jac[:, :, j] = (resid(t2) - r) / h[:, j:j + 1]
        jw = jac * w[..., None]
        a = np.einsum("bnk,bnl->bkl", jw, jac)
        g = np.einsum("bnk,bn->bk", jw, r)
        diag = np.einsum("bkk->bk", a)
        damp = a + (lam[:, None] * np.maximum(diag, 1e-12))[:, :, None] * np.eye(k) + 1e-12 * np.eye(k)
        try:
            step = np.linalg.solve(damp, -g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.einsum("bkl,bl->bk", np.linalg.pinv(damp), -g)
        new = np.clip(theta + np.nan_to_num(step), lower, upper)
        r_new = resid(new)
        c_new = cost(r_new)
        better = c_new < c
        theta[better], r[better], c[better] = new[better], r_new[better], c_new[better]
        lam = np.where(better, lam / 3.0, np.minimum(lam * 4.0, 1e12))
        if np.all(np.abs(step).max(axis=1) < 1e-9 * np.maximum(1.0, np.abs(theta).max(axis=1))):
            break
    return theta, np.isfinite(c) & (c < 1e11)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if s.size < 10:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def holdout_rmsle(law: Law, curve: Curve, k: int, objective: str = "auto") -> float:
    """Fit without the ``k`` largest x (by N·D for joint laws), return the RMSLE on them."""
    if k <= 0:
        return float("nan")
    order = np.argsort(curve.x.prod(axis=1) if curve.joint else curve.x)
    keep, held = order[:-k], order[-k:]
    if len(keep) < law.k + 1:
        return float("nan")
    sub = Curve(curve.x[keep], curve.y[keep], curve.sigma[keep], curve.std[keep], [curve.reps[i] for i in keep])
    try:
        fit = fit_law(law, sub, objective)
    except InputError:
        return float("nan")
    xh = curve.x[held]
    with np.errstate(all="ignore"):
        pred = law.predict((xh[:, 0], xh[:, 1]) if curve.joint else xh, fit.params)
    if not (pred > 0).all():
        return float("inf")
    return float(np.sqrt(np.mean((np.log(pred) - np.log(curve.y[held])) ** 2)))
