"""Compute-optimal allocation from a joint fit L(N, D) and a cost model C(N, D): what to buy next.

Definitions (N parameters, D training structures, C cost; every answer also for each bootstrap draw of the law's
parameters, so each comes with its percentile CI):

    frontier      N*(C), D*(C) = argmin L(N, D) subject to C(N, D) = C, and L*(C) = L(N*, D*);
                  fitted as power laws N* ∝ C^a, D* ∝ C^b over the measured cost range.
                  Chinchilla with C = k·N·D: a = β/(α+β), b = α/(α+β) exactly.
    per cost      at a point, the loss reduction per unit of cost bought as parameters, −(∂L/∂N)/(∂C/∂N), or as
                  data, −(∂L/∂D)/(∂C/∂D); their ratio r = params ÷ data.
    verdict       "model-limited" (buy parameters) when the CI of r lies above 1, "data-limited" (buy data) when it
                  lies below 1, else "undecided at this precision"; given at the best point measured so far.
    target        for a loss L_t: the cheapest (N, D) on the frontier with L*(C) = L_t, and its cost C;
                  "unreachable" when L_t is at or below the fitted floor (L*(C) → floor as C → ∞).

The cost model is either a formula in N and D (``6*N*D``), or fitted to the trials' counted FLOPs
(``train_flops``, :mod:`gnn.flops`) as C = k·N·D·epochs, used at the trials' median epochs.
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass

import numpy as np

from gnn.errors import InputError

N_GRID = 481  #: log-spaced N per decade range searched for each budget (then refined by a parabola)
SEARCH_DECADES = 3.0  #: the frontier is searched this many decades beyond the measured N on each side
TARGET_DECADES = 6.0  #: a target loss is searched up to this many decades of cost beyond the largest measured
DEFAULT_COST = "6*N*D"
_OPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide, ast.Pow: np.power}


@dataclass(frozen=True)
class Cost:
    """C(N, D) = ``expr``(N, D); ``source`` says where it came from (``formula``, ``default`` or
    ``train_flops``, then with the fitted ``k``, the ``epochs`` it is used at and the RMS log10 residual of the
    fit over the ``runs``)."""

    expr: str
    source: str = "formula"
    k: float | None = None
    epochs: float | None = None
    rms_log10: float | None = None
    runs: int = 0

    def __call__(self, n, d):
        return _evaluate(_parse(self.expr), {"N": n, "D": d})

    def as_dict(self) -> dict:
        text = self.expr
        if self.source == "train_flops":
            text = f"{self.k:.4g}·N·D·epochs at epochs = {self.epochs:g}"
        elif self.source == "default":
            text = f"{self.expr} (assumed: no train_flops column; --cost to change)"
        out = {"model": text, "expr": self.expr, "source": self.source}
        if self.source == "train_flops":
            out.update(k=self.k, epochs=self.epochs, rms_log10_residual=self.rms_log10, runs=self.runs)
        return out


def parse_cost(expr: str, source: str = "formula") -> Cost:
    """A cost formula in ``N`` and ``D`` (numbers, + − * / ** and parentheses), checked to be positive and
    increasing in both on a wide range; else an :class:`InputError` naming ``--cost``."""
    cost = Cost(expr, source=source)
    tree = _parse(expr)
    n, d = np.meshgrid(np.logspace(2, 9, 8), np.logspace(1, 7, 7))
    with np.errstate(all="ignore"):
        c = _evaluate(tree, {"N": n, "D": d}) * np.ones_like(n)
        up_n, up_d = (_evaluate(tree, {"N": 1.01 * n, "D": d}) * np.ones_like(n),
                      _evaluate(tree, {"N": n, "D": 1.01 * d}) * np.ones_like(n))
    if not (np.isfinite(c).all() and (c > 0).all()):
        raise InputError(f"cost {expr!r} is not a positive finite number for every N, D > 0", field="cost")
    if not ((up_n > c).all() and (up_d > c).all()):
        raise InputError(f"cost {expr!r} must grow with both N and D", field="cost")
    return cost


@functools.lru_cache(maxsize=64)
def _parse(expr: str):  # cached: a cost is evaluated many times per frontier
    try:
        tree = ast.parse(str(expr), mode="eval").body
    except SyntaxError:
        raise InputError(f"cost {expr!r} is not a formula in N and D (like 6*N*D)", field="cost") from None
    for node in ast.walk(tree):
        ok = (isinstance(node, (ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop))
              or (isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
                  and not isinstance(node.value, bool))
              or (isinstance(node, ast.Name) and node.id in ("N", "D")) or isinstance(node, ast.Load))
        if not ok or isinstance(node, ast.operator) and type(node) not in _OPS:
            raise InputError(f"cost {expr!r}: only numbers, N, D, + - * / ** and parentheses are allowed",
                             field="cost")
    return tree


def _evaluate(node, names: dict):
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.UnaryOp):
        v = _evaluate(node.operand, names)
        return -v if isinstance(node.op, ast.USub) else v
    return _OPS[type(node.op)](_evaluate(node.left, names), _evaluate(node.right, names))


def fit_cost(n, d, flops, epochs=None, file=None) -> Cost:
    """C = k·N·D·epochs fitted to counted FLOPs (least squares in log), used at the median ``epochs``."""
    n, d, flops = (np.asarray(v, float) for v in (n, d, flops))
    e = np.ones_like(n) if epochs is None else np.asarray(epochs, float)
    ok = np.isfinite(flops) & (flops > 0) & np.isfinite(e) & (e > 0)
    if ok.sum() == 0:
        raise InputError("no run has a counted train_flops (trials log it since FLOP counting was added): give "
                         f"--cost, e.g. --cost '{DEFAULT_COST}'", file=file, field="train_flops")
    log_k = np.log10(flops[ok] / (n[ok] * d[ok] * e[ok]))
    k, epochs_used = 10 ** float(log_k.mean()), float(np.median(e[ok]))
    rms = float(np.sqrt(np.mean((log_k - log_k.mean()) ** 2)))
    return Cost(f"{k * epochs_used!r}*N*D", source="train_flops", k=k, epochs=epochs_used, rms_log10=rms,
                runs=int(ok.sum()))


def _params(law, rows: np.ndarray) -> dict:
    """Natural parameter rows ``[B, k]`` → ``{name: [B, 1, 1]}`` for broadcasting against ``[M, G]`` grids."""
    return {name: rows[:, i].reshape(-1, 1, 1) for i, name in enumerate(law.names)}


def _solve_d(cost: Cost, n: np.ndarray, c: np.ndarray) -> np.ndarray:
    """D with C(N, D) = c (C increasing in D): bisection in log D, vectorised over the arrays' shape."""
    lo, hi = np.full(np.broadcast(n, c).shape, -10.0), np.full(np.broadcast(n, c).shape, 40.0)
    with np.errstate(all="ignore"):
        for _ in range(70):
            mid = (lo + hi) / 2
            above = cost(n, 10.0**mid) > c
            hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return 10.0 ** ((lo + hi) / 2)


def optimum(law, rows: np.ndarray, cost: Cost, budgets: np.ndarray, n_span: tuple[float, float], chunk: int = 64):
    """``(N*, D*, L*)``, each ``[B, M]``: the loss-minimising allocation of each budget (``[M]``) for each
    parameter row (``[B, k]``), searched over N in ``n_span`` (log10) widened by :data:`SEARCH_DECADES`; NaN where
    the optimum lies at the edge of that range. Rows go in chunks (memory: chunk × M × N_GRID floats)."""
    parts = [_optimum(law, rows[i:i + chunk], cost, budgets, n_span) for i in range(0, len(rows), chunk)]
    return tuple(np.concatenate([p[j] for p in parts]) for j in range(3))


def _optimum(law, rows: np.ndarray, cost: Cost, budgets: np.ndarray, n_span: tuple[float, float]):
    log_n = np.linspace(n_span[0] - SEARCH_DECADES, n_span[1] + SEARCH_DECADES, N_GRID)
    n = np.broadcast_to(10.0**log_n, (len(budgets), N_GRID))
    c = np.asarray(budgets, float)[:, None]
    d = _solve_d(cost, n, c)  # [M, G]
    p = _params(law, rows)
    with np.errstate(all="ignore"):
        loss = law.predict((n[None], d[None]), p)  # [B, M, G]
    loss = np.where(np.isfinite(loss), loss, np.inf)
    i = np.argmin(loss, axis=2)
    edge = (i == 0) | (i == N_GRID - 1)
    j = np.clip(i, 1, N_GRID - 2)
    y0, y1, y2 = (np.take_along_axis(loss, (j + s)[..., None], 2)[..., 0] for s in (-1, 0, 1))
    with np.errstate(all="ignore"):
        denom = y0 - 2 * y1 + y2
        shift = np.where(denom > 0, 0.5 * (y0 - y2) / denom, 0.0)
    step = log_n[1] - log_n[0]
    best_log_n = log_n[j] + np.clip(shift, -1, 1) * step
    n_star = 10.0**best_log_n
    c_b = np.broadcast_to(c[:, 0], n_star.shape)
    d_star = _solve_d(cost, n_star, c_b)
    with np.errstate(all="ignore"):
        l_star = law.predict((n_star, d_star), {k: v[:, :, 0] for k, v in p.items()})
    bad = edge | ~np.isfinite(l_star)
    return (np.where(bad, np.nan, n_star), np.where(bad, np.nan, d_star), np.where(bad, np.nan, l_star))


def per_cost(law, rows: np.ndarray, cost: Cost, n: float, d: float, h: float = 1e-4) -> tuple[np.ndarray, ...]:
    """``(params, data)``, each ``[B]``: the loss reduction per unit of cost from more parameters and from more
    data at ``(n, d)``, by central differences in log N and log D."""
    p = {k: v[:, 0, 0] for k, v in _params(law, rows).items()}
    up, down = math.exp(h), math.exp(-h)
    with np.errstate(all="ignore"):
        dl_n = law.predict((n * up, d), p) - law.predict((n * down, d), p)
        dl_d = law.predict((n, d * up), p) - law.predict((n, d * down), p)
        dc_n = cost(n * up, d) - cost(n * down, d)
        dc_d = cost(n, d * up) - cost(n, d * down)
        return -dl_n / dc_n, -dl_d / dc_d


def _interval(samples: np.ndarray, level: float) -> list:
    """Percentile CI over the draws; infinite draws (unreachable) count as +inf, NaN ones are left out."""
    s = samples[~np.isnan(samples)]
    if s.size < 10:
        return [None, None]
    a = (1 - level) / 2
    with np.errstate(invalid="ignore"):  # interpolating between two infinite draws gives NaN: take the draw
        q = [np.quantile(s, v) for v in (a, 1 - a)]
        q = [np.quantile(s, v, method="inverted_cdf") if np.isnan(x) else x for v, x in zip((a, 1 - a), q)]
    return [_num(x) for x in q]


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else ("inf" if v > 0 else None)


def _slope(log_c: np.ndarray, log_v: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of ``log_v`` against ``log_c`` (NaN rows with fewer than 3 points)."""
    ok = np.isfinite(log_v)
    out = np.full(log_v.shape[0], np.nan)
    for i in range(log_v.shape[0]):
        if ok[i].sum() >= 3:
            out[i] = np.polyfit(log_c[ok[i]], log_v[i, ok[i]], 1)[0]
    return out


def verdict_of(ci: list, value: float) -> str:
    """From the ratio r = per-cost gain of parameters ÷ of data: its CI above 1 → model-limited, below 1 →
    data-limited, else undecided; without a CI (no bootstrap) the point estimate decides."""
    lo, hi = (math.inf if v == "inf" else v for v in ci)
    if lo is None or hi is None:
        if not math.isfinite(value):
            return "undecided at this precision"
        return "model-limited" if value > 1 else "data-limited"
    if lo > 1:
        return "model-limited"
    if hi < 1:
        return "data-limited"
    return "undecided at this precision"


def compute(law, params: dict, boot: np.ndarray, curve, cost: Cost, *, budgets=None, target_loss=None,
            level: float = 0.95, at: tuple[float, float] | None = None) -> dict:
    """The frontier, the verdict at ``at`` (default: the measured point with the lowest mean loss) and the
    target answer of a fitted joint law, each with CIs from the bootstrap rows ``boot`` (``[B, k]``, natural)."""
    est = np.array([[params[name] for name in law.names]])
    draws = boot[np.isfinite(boot).all(axis=1)] if len(boot) else np.empty((0, law.k))
    rows = np.vstack([est, draws])
    n_pts, d_pts = curve.x[:, 0], curve.x[:, 1]
    measured = cost(n_pts, d_pts)
    n_span = (float(np.log10(n_pts.min())), float(np.log10(n_pts.max())))
    fit_c = np.logspace(np.log10(measured.min()), np.log10(measured.max()), 9)
    n_star, d_star, _ = optimum(law, rows, cost, fit_c, n_span)
    a, b = _slope(np.log(fit_c), np.log(n_star)), _slope(np.log(fit_c), np.log(d_star))
    out = {"law": law.name, "cost": cost.as_dict(),
           "cost_range": [float(measured.min()), float(measured.max())],
           "a": {"value": _num(a[0]), "ci": _interval(a[1:], level)},
           "b": {"value": _num(b[0]), "ci": _interval(b[1:], level)}}
    budgets = np.asarray(budgets if budgets else
                         np.logspace(np.log10(measured.min()), np.log10(measured.max()) + 1, 5), float)
    n_b, d_b, l_b = optimum(law, rows, cost, budgets, n_span)
    out["points"] = [{"C": float(c), **{key: _num(v[0, m]) for key, v in (("N", n_b), ("D", d_b), ("loss", l_b))},
                      **{f"{key}_ci": _interval(v[1:, m], level) for key, v in (("N", n_b), ("D", d_b), ("loss", l_b))}}
                     for m, c in enumerate(budgets)]
    best = int(np.argmin(curve.y)) if at is None else None
    n0, d0 = (float(n_pts[best]), float(d_pts[best])) if at is None else at
    gain_n, gain_d = per_cost(law, rows, cost, n0, d0)
    ratio = gain_n / gain_d
    ratio_ci = _interval(ratio[1:], level)
    out["verdict"] = {
        "N": n0, "D": d0, "C": float(cost(n0, d0)), "loss": float(curve.y[best]) if best is not None else None,
        "per_cost_params": {"value": _num(gain_n[0]), "ci": _interval(gain_n[1:], level)},
        "per_cost_data": {"value": _num(gain_d[0]), "ci": _interval(gain_d[1:], level)},
        "ratio": {"value": _num(ratio[0]), "ci": ratio_ci},
        "verdict": verdict_of(ratio_ci, float(ratio[0]))}
    if target_loss is not None:
        out["target"] = _target(law, rows, cost, float(target_loss), measured, n_span, level)
    return out


def _target(law, rows, cost: Cost, target: float, measured: np.ndarray, n_span, level: float) -> dict:
    """The cheapest budget whose frontier loss reaches ``target`` (searched from 10⁻² × the smallest measured cost
    to 10^:data:`TARGET_DECADES` × the largest), with its allocation; inf where unreachable."""
    grid = np.logspace(np.log10(measured.min()) - 2, np.log10(measured.max()) + TARGET_DECADES, 49)
    n_g, d_g, l_g = optimum(law, rows, cost, grid, n_span)
    c_t, n_t, d_t = (np.full(len(rows), np.inf) for _ in range(3))
    for r in range(len(rows)):
        ok = np.isfinite(l_g[r])
        below = np.flatnonzero(ok & (l_g[r] <= target))
        if below.size == 0:
            continue
        i = below[0]
        if i == 0:
            c_t[r], n_t[r], d_t[r] = grid[0], n_g[r, 0], d_g[r, 0]
            continue
        lo, hi = l_g[r, i - 1], l_g[r, i]  # interpolate log C linearly in log L between grid budgets
        w = (np.log(lo) - np.log(target)) / (np.log(lo) - np.log(hi)) if lo > hi else 1.0
        lc = np.log(grid[i - 1]) + w * (np.log(grid[i]) - np.log(grid[i - 1]))
        c_t[r] = math.exp(lc)
        n_t[r] = math.exp(np.log(n_g[r, i - 1]) + w * (np.log(n_g[r, i]) - np.log(n_g[r, i - 1])))
        d_t[r] = math.exp(np.log(d_g[r, i - 1]) + w * (np.log(d_g[r, i]) - np.log(d_g[r, i - 1])))
    floor = floor_of(law, rows[0])
    reachable = bool(np.isfinite(c_t[0]))
    why = None
    if not reachable:
        why = (f"at or below the fitted floor {floor:.4g}" if target <= floor
               else f"beyond 10^{TARGET_DECADES:g} × the largest measured cost")
    return {"loss": target, "reachable": reachable, "why": why, "floor": floor,
            "C": _num(c_t[0]), "C_ci": _interval(c_t[1:], level), "N": _num(n_t[0]), "N_ci": _interval(n_t[1:], level),
            "D": _num(d_t[0]), "D_ci": _interval(d_t[1:], level)}


def floor_of(law, row: np.ndarray) -> float:
    """The loss as N, D → ∞: E of chinchilla, 0 for the Kaplan forms."""
    return float(dict(zip(law.names, row)).get("E", 0.0))


def text(fr: dict, fmt=lambda v: f"{v:.3g}") -> list[str]:
    """The frontier answers in a few lines, as ``analyze`` and ``fit`` print them."""
    def ci(a: dict | list) -> str:
        lo, hi = a["ci"] if isinstance(a, dict) else a
        return f" [{_f(lo)}, {_f(hi)}]" if lo is not None and hi is not None else ""

    def _f(v) -> str:
        return v if isinstance(v, str) else fmt(v) if v is not None else "–"

    v = fr["verdict"]
    buy = {"model-limited": " (buy parameters)", "data-limited": " (buy data)"}.get(v["verdict"], "")
    lines = [f"compute-optimal frontier, cost {fr['cost']['model']}: N* ∝ C^{_f(fr['a']['value'])}{ci(fr['a'])}, "
             f"D* ∝ C^{_f(fr['b']['value'])}{ci(fr['b'])}",
             f"at the best point measured (N={fmt(v['N'])}, D={fmt(v['D'])}): loss reduction per unit of cost, "
             f"parameters ÷ data = {_f(v['ratio']['value'])}{ci(v['ratio'])} → {v['verdict']}{buy}"]
    for p in fr["points"]:
        lines.append(f"  budget C={fmt(p['C'])}: N*={_f(p['N'])}{ci(p['N_ci'])}, D*={_f(p['D'])}{ci(p['D_ci'])}, "
                     f"loss {_f(p['loss'])}{ci(p['loss_ci'])}")
    t = fr.get("target")
    if t:
        lines.append(f"loss {t['loss']:g} costs at least C={_f(t['C'])}{ci(t['C_ci'])}, with N={_f(t['N'])}"
                     f"{ci(t['N_ci'])} and D={_f(t['D'])}{ci(t['D_ci'])}"
                     if t["reachable"] else f"loss {t['loss']:g} is unreachable ({t['why']})")
    return lines
