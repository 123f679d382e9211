"""Refinement benchmark: the adaptive design's trials at equal precision against uniform log grids, and against the
best any design can do (the c-optimal bound).

    python bench/refine.py [--sims 30] [--noise 0.01,0.02] [--target 0.1] [--bootstrap 1000] [--law auto]
                           [--workers N] [--no-baselines] [--json]

Ground truths are broken curves on x ∈ [10³, 10^5.3], 3 seeds per point with 1–2 % relative seed noise, the
break placed at random inside the range (70 %) or 0.15 decade from an edge (30 %):

* ``paper``: the dielectric paper's form L = (x_c/x)^α2 (1 + x_c/x)^(α1−α2) — its amplitude is tied to x_c;
* ``bnsl``: BNSL with one break (a = 0, f = 1) and a free amplitude, L = b x^−c0 (1 + x/d)^−c1, so the break
  is located by the curvature alone (the fitter may choose ``broken`` or ``broken_amp``).

The adaptive run is the refine loop: the paper's start, a uniform 7-point grid, then rounds of 4 points from
:func:`analysis.propose.propose` (the function ``matscale refine`` calls), each round's interval the one analyze
reports (95 % bootstrap CI of log10 x_c, including the choice between the broken laws).

**Efficiency vs the bound** (the headline, ``efficiency_vs_bound`` in the JSON line). "Uniform trials ÷ adaptive
trials at equal CI width" is measured at equal budget, with no stopping rule on either side: at the
EQUAL_BUDGET checkpoints (19 and 31 points, i.e. 57 and 93 trials, reached by every adaptive run, which keeps
proposing past the target for this) the adaptive CI half-width h_a is compared with UNIFORM_DRAWS uniform grids of
as many points, each an independent noise draw of the same truth looked at once; as the variance of log10 x_c
falls as 1/trials, mean(h_u²)/h_a² is the trial ratio at equal precision, and a simulation's ratio is its
geometric mean over the checkpoints. Divided by that simulation's c-optimal bound (below) it is the fraction of
what is possible that the design achieves; ``efficiency_vs_bound`` is its median over the hard simulations
(those whose 7-point start did not already reach the target), overall and per form. The bound is asymptotic
(the linearised variance); where a break is barely identifiable (CIs of a decade or more) neither design is in
that regime, and such simulations stay in the median.

**Coverage** (``coverage``): the fraction of runs whose final 95 % CI (at the stop: the target reached, or
MAX_POINTS) contains the true break, overall and per form; the JSON also gives it at each checkpoint (hard
simulations), with how often each of propose's designs (``break``, ``disagree``) was used.

Trial-count baselines (skipped by ``--no-baselines``; each stopped by the same rule, the CI half-width of
log10 x_c ≤ target):

* *adaptive*: the trials at which the refine loop first reached the target (a user's stop);
* *uniform (expected)*: the fewest points m of a uniform log grid for which at least 2 of 3 independent
  noise draws reach the target (one look per draw: no "stop when lucky");
* *uniform (nested)*: what a user densifying a grid does: 7 → 13 → 25 → 49 points, each grid
  keeping the previous measurements, stopped at the first grid that reaches the target.

Their comparisons (median trials with "never" as infinity, wins and losses) are over the hard simulations. The
adaptive stop looks after every round, so these counts favour it a little; the efficiency above does not.

The bound, per simulation: the variance of log10 x_c per trial of a uniform grid over that of the locally
c-optimal design at the true curve (``broken`` for the paper form, ``broken_amp`` for bnsl), which no design
(adaptive or not) beats asymptotically. Prints a table, one summary per form and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.fit import make_curve  # noqa: E402
from analysis.laws import make_law  # noqa: E402
from analysis.propose import log_jacobian, break_interval, propose  # noqa: E402

LO, HI, SEEDS, START, MAX_POINTS, ROUND = 3.0, 5.3, 3, 7, 60, 4
NESTED = (7, 13, 25, 49)  #: nested uniform grids, each keeping the previous one's points
EQUAL_BUDGET = (19, 31)  #: points (start + rounds of 4) at which adaptive and uniform precision are compared
UNIFORM_DRAWS = 3  #: independent uniform grids per checkpoint


def truth(rng: np.random.Generator, form: str):
    log_xc = rng.uniform(LO + 0.1, HI - 0.1) if rng.random() < 0.7 else rng.choice([LO + 0.15, HI - 0.15])
    a1 = rng.uniform(0.05, 0.25)
    a2 = a1 + rng.uniform(0.15, 0.35) if rng.random() < 0.7 else max(0.02, a1 - rng.uniform(0.1, 0.2))  # steepen or flatten
    if form == "paper":
        return "broken", {"x_c": 10**log_xc, "alpha1": a1, "alpha2": a2}, log_xc
    # BNSL, one break, a = 0, f = 1: b x^-c0 (1 + x/d)^-c1 — slope c0 below d, c0 + c1 above; L(d) ∈ [0.3, 1.5]
    level = rng.uniform(np.log10(0.3), np.log10(1.5))
    b = 10 ** (level + a1 * log_xc) * 2 ** (a2 - a1)
    return "bnsl:1", {"a": 0.0, "b": b, "c0": a1, "c1": a2 - a1, "d1": 10**log_xc, "f1": 1.0}, log_xc


class Sim:
    """One ground truth with its own noise stream; ``measure(x)`` returns 3 seeds per x."""

    def __init__(self, sim: int, form: str, noise: float, stream: int = 0):
        self.rng = np.random.default_rng(1000 + sim)
        self.law, self.params, self.log_xc = truth(self.rng, form)
        self.noise = noise
        if stream:  # an independent noise stream for the same truth (the uniform baselines' draws)
            self.rng = np.random.default_rng([1000 + sim, stream])

    def measure(self, x) -> list[np.ndarray]:
        y = make_law(self.law, (LO, HI), (0, 0)).predict(np.asarray(x, float), self.params)
        return [v * (1 + self.noise * self.rng.standard_normal(SEEDS)) for v in y]


def curve(xs, ys):
    return make_curve(np.repeat(xs, SEEDS), np.concatenate(ys))


LAW = "auto"  #: the break's law (--law): auto includes the choice between broken and broken_amp


def half_width(xs, ys, n_boot, seed):
    _, _, ci, half = break_interval(curve(xs, ys), n_boot=n_boot, seed=seed, law=LAW)
    return half, ci


def adaptive(sim: Sim, target, n_boot, seed, history=None, until=0):
    """The refine loop: start, then rounds of :data:`ROUND` proposed points until the CI half-width is ≤ target.
    Returns (trials, truth inside the CI, half-width) at that stop (trials None: never within MAX_POINTS).
    ``until``: keep proposing (without changing the stop's answers) up to that many points, so that the
    equal-budget checkpoints are measured at fixed budgets whatever the stop."""
    xs = list(np.logspace(LO, HI, START))
    ys = sim.measure(xs)
    stop = None
    while True:
        half, ci = half_width(xs, ys, n_boot, seed)
        inside = bool(np.log10(ci[0]) <= sim.log_xc <= np.log10(ci[1]))
        if history is not None:
            history[len(xs)] = (half, inside)
        if stop is None and half <= target:
            stop = (len(xs) * SEEDS, inside, half)
        if stop is None and len(xs) >= MAX_POINTS:
            stop = (None, inside, half)
        if stop is not None and len(xs) >= until:
            return stop
        p = propose(curve(xs, ys), ROUND, (10**LO, 10**HI), n_boot=n_boot, seed=seed, predict=False, integer=False,
                    law=LAW, test=True)  # the truth has a break: look for it even where AICc does not see one yet
        if history is not None:
            history.setdefault("designs", []).append(p.design)
        if not p.points:
            return stop or (None, inside, half)
        xs += p.points
        ys += sim.measure(p.points)


def uniform_expected(sim: Sim, target, n_boot, seed, draws=3):
    """Smallest m (bisection over START…MAX_POINTS) where ≥ 2 of 3 fresh draws reach the target."""
    def ok(m):
        x = list(np.logspace(LO, HI, m))
        return sum(half_width(x, sim.measure(x), n_boot, seed)[0] <= target for _ in range(draws)) >= 2
    lo, hi = START, MAX_POINTS
    if ok(lo):
        return lo * SEEDS
    if not ok(hi):
        return None
    while hi - lo > 1:
        mid = int(round(np.sqrt(lo * hi)))
        mid = min(max(mid, lo + 1), hi - 1)
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi * SEEDS


def uniform_nested(sim: Sim, target, n_boot, seed):
    grid = np.linspace(LO, HI, NESTED[-1])
    measured: dict = {}
    for m in NESTED:
        step = (NESTED[-1] - 1) // (m - 1)
        new = [g for g in grid[::step] if g not in measured]
        measured.update(zip(new, sim.measure(10 ** np.array(new))))
        lx = sorted(g for g in measured if any(np.isclose(g, grid[::step])))
        if half_width(list(10 ** np.array(lx)), [measured[g] for g in lx], n_boot, seed)[0] <= target:
            return m * SEEDS
    return None


def bound(sim: Sim) -> float:
    """Asymptotic efficiency of the locally c-optimal design over a uniform grid for log10 x_c (≥ 1)."""
    x_span = (LO, HI)
    if sim.law == "broken":
        law = make_law("broken", x_span, (0, 0))
        theta = np.array([[sim.log_xc, sim.params["alpha1"], sim.params["alpha2"]]])
    else:
        p = sim.params
        law = make_law("broken_amp", x_span, (0, 0))
        amp = p["b"] * p["d1"] ** (-(p["c0"] + p["c1"]))  # b x^-c0 (1+x/d)^-c1 = A (d/x)^(c0+c1) (1+d/x)^-c1
        theta = np.array([[sim.log_xc, p["c0"], p["c0"] + p["c1"], np.log10(amp)]])
    grid = np.linspace(LO, HI, 93)
    f = log_jacobian(law, theta, grid)[0]
    w = np.full(len(grid), 1 / len(grid))
    v_uniform = np.linalg.pinv(f.T @ (f * w[:, None]))[0, 0]
    for _ in range(2000):  # multiplicative algorithm for c-optimal weights
        inv = np.linalg.pinv(f.T @ (f * w[:, None]))
        w = w * (f @ inv[:, 0]) ** 2 / inv[0, 0]
        w /= w.sum()
    return float(v_uniform / np.linalg.pinv(f.T @ (f * w[:, None]))[0, 0])


def equal_budget(history: dict, sim_no: int, form: str, noise: float, n_boot: int, draws: int = UNIFORM_DRAWS) -> dict:
    """At each EQUAL_BUDGET checkpoint the adaptive run reached: its CI half-width, the mean squared half-width of
    ``draws`` uniform grids of as many points (each an independent noise draw, one look each) and the trial ratio
    at equal precision mean(uniform²)/adaptive² (the variance of log10 x_c ∝ 1/trials)."""
    out = {}
    for m in EQUAL_BUDGET:
        if m in history:
            x = list(np.logspace(LO, HI, m))
            hu = [half_width(x, Sim(sim_no, form, noise, stream=d).measure(x), n_boot, sim_no)[0]
                  for d in range(1, draws + 1)]
            ha = history[m][0]
            out[m] = {"adaptive": ha, "uniform": hu, "inside": history[m][1],
                      "ratio": float(np.mean(np.square(hu)) / ha**2) if ha > 0 else float("nan")}
    return out


def trial_ratio(eb: dict) -> float:
    """One simulation's uniform trials ÷ adaptive trials at equal CI width: the geometric mean of the
    equal-budget ratios over the checkpoints (NaN when none was measured)."""
    r = [e["ratio"] for e in eb.values() if np.isfinite(e["ratio"]) and e["ratio"] > 0]
    return float(np.exp(np.mean(np.log(r)))) if r else float("nan")


def one(args):
    global LAW
    sim_no, form, noise, target, n_boot, LAW, baselines = args
    sim = Sim(sim_no, form, noise)
    history: dict = {}
    trials, inside, half = adaptive(sim, target, n_boot, sim_no, history, until=max(EQUAL_BUDGET))
    designs = history.pop("designs", [])
    eb = equal_budget(history, sim_no, form, noise, n_boot)
    b = bound(sim)
    print(f"sim {sim_no} {form}: adaptive {trials}, trial ratio {trial_ratio(eb):.2f}, bound {b:.2f}, "
          f"inside {inside}, designs {designs}", file=sys.stderr, flush=True)  # progress
    return {"sim": sim_no, "form": form, "log_xc": sim.log_xc, "noise": noise, "adaptive": trials, "inside": inside,
            "final_half_width": half,
            "uniform": uniform_expected(Sim(sim_no, form, noise, stream=11), target, n_boot, sim_no) if baselines else None,
            "nested": uniform_nested(Sim(sim_no, form, noise, stream=12), target, n_boot, sim_no) if baselines else None,
            "bound": b, "equal_budget": eb, "trial_ratio": trial_ratio(eb), "efficiency": trial_ratio(eb) / b,
            "hard": not (trials and trials <= START * SEEDS), "designs": designs}


def _hard_cases(sub: list[dict]) -> dict:
    """Over the simulations whose start did not reach the target: median trials with "never" as infinity, and
    how often adaptive needed fewer / more trials than each uniform baseline."""
    hard = [r for r in sub if not (r["adaptive"] and r["adaptive"] <= START * SEEDS)]
    t = {k: [r[k] or np.inf for r in hard] for k in ("adaptive", "uniform", "nested")}
    med = {k: float(np.median(v)) if v else None for k, v in t.items()}
    out = {"needed_refinement": len(hard),
           "hard_median_trials": {k: (None if v is None or np.isinf(v) else v) for k, v in med.items()}}
    for k in ("uniform", "nested"):
        out[f"hard_adaptive_fewer_than_{k}"] = int(sum(a < b for a, b in zip(t["adaptive"], t[k])))
        out[f"hard_adaptive_more_than_{k}"] = int(sum(a > b for a, b in zip(t["adaptive"], t[k])))
    return out


def _equal_budget_summary(sub: list[dict]) -> dict:
    """Per checkpoint: median half-widths and the median trial ratio mean(uniform²)/adaptive²."""
    out = {}
    for m in EQUAL_BUDGET:
        e = [r["equal_budget"][m] for r in sub if m in r["equal_budget"] and np.isfinite(r["equal_budget"][m]["ratio"])]
        if e:
            out[m] = {"sims": len(e), "median_adaptive": float(np.median([v["adaptive"] for v in e])),
                      "median_uniform": float(np.median([np.sqrt(np.mean(np.square(v["uniform"]))) for v in e])),
                      "median_trial_ratio": float(np.median([v["ratio"] for v in e])),
                      "coverage_95_adaptive": float(np.mean([v["inside"] for v in e]))}
    return out


def _median(v) -> float | None:
    v = [x for x in v if np.isfinite(x)]
    return float(np.median(v)) if v else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=30, help="simulations per form")
    ap.add_argument("--forms", default="paper,bnsl")
    ap.add_argument("--noise", default="0.01,0.02")
    ap.add_argument("--target", type=float, default=0.1)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--law", default="auto", choices=["auto", "broken", "broken_amp"],
                    help="the break's law, as matscale refine --law")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: every core)")
    ap.add_argument("--no-baselines", dest="baselines", action="store_false",
                    help="skip the trial-count baselines (uniform expected, nested); the efficiency does not need them")
    ap.add_argument("--json", action="store_true", help="accepted for clarity: the JSON line is always printed last")
    args = ap.parse_args()
    noises = [float(v) for v in args.noise.split(",")]
    forms = args.forms.split(",")
    jobs = [(s, form, noises[s % len(noises)], args.target, args.bootstrap, args.law, args.baselines)
            for form in forms for s in range(args.sims)]
    workers = args.workers or len(os.sched_getaffinity(0))
    if workers == 1:
        rows = [one(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(pool.map(one, jobs))
    cap = f">{MAX_POINTS * SEEDS}"
    na = "-"
    print(f"{'sim':>4} {'form':<6} {'log xc':>7} {'noise':>6} {'adaptive':>9} {'uniform':>8} {'nested':>7} "
          f"{'bound':>6} {'ratio':>6} {'eff':>5} {'inside':>7}")
    for r in rows:
        base = {k: (r[k] or cap) if args.baselines else na for k in ("uniform", "nested")}
        print(f"{r['sim']:>4} {r['form']:<6} {r['log_xc']:>7.2f} {r['noise']:>6.3f} {r['adaptive'] or cap:>9} "
              f"{base['uniform']:>8} {base['nested']:>7} {r['bound']:>6.2f} {r['trial_ratio']:>6.2f} "
              f"{r['efficiency']:>5.2f} {str(r['inside']):>7}" + ("" if r["hard"] else "  (start sufficed)"))
    hard_all = [r for r in rows if r["hard"]]
    summary = {"bench": "refine", "target_decades": args.target, "law": args.law, "sims_per_form": args.sims,
               "efficiency_vs_bound": _median([r["efficiency"] for r in hard_all]),
               "efficiency_vs_bound_by_form": {}, "coverage": float(np.mean([r["inside"] for r in rows])),
               "coverage_by_form": {}, "hard_cases": {"total": len(hard_all)}, "forms": {}}
    for form in forms:
        sub = [r for r in rows if r["form"] == form]
        hard = [r for r in sub if r["hard"]]
        done = [r for r in sub if r["adaptive"]]
        summary["efficiency_vs_bound_by_form"][form] = _median([r["efficiency"] for r in hard])
        summary["coverage_by_form"][form] = float(np.mean([r["inside"] for r in sub]))
        summary["hard_cases"][form] = len(hard)
        summary["forms"][form] = s = {
            "sims": len(sub), "adaptive_converged": len(done),
            "uniform_converged": sum(bool(r["uniform"]) for r in sub) if args.baselines else None,
            "nested_converged": sum(bool(r["nested"]) for r in sub) if args.baselines else None,
            **(_hard_cases(sub) if args.baselines else {"needed_refinement": len(hard)}),
            "median_bound": float(np.median([r["bound"] for r in sub])),
            "hard_median_bound": _median([r["bound"] for r in hard]),
            "hard_median_trial_ratio": _median([r["trial_ratio"] for r in hard]),
            "efficiency_vs_bound": summary["efficiency_vs_bound_by_form"][form],
            "coverage_95": float(np.mean([r["inside"] for r in done])) if done else None,
            "coverage_95_final_all": summary["coverage_by_form"][form],
            "equal_budget": _equal_budget_summary(hard),
            "designs": {str(k): int(v) for k, v in zip(*np.unique([str(d) for r in sub for d in r["designs"]],
                                                                  return_counts=True))}}
        cover = "n/a" if s["coverage_95"] is None else f"{100 * s['coverage_95']:.0f}%"
        cover += f" of converged runs, {100 * s['coverage_95_final_all']:.0f}% of all final CIs"
        eff = s["efficiency_vs_bound"]
        print(f"{form}: {len(hard)}/{len(sub)} needed more than the start; adaptive converged in {len(done)}; "
              f"where the start did not suffice, median trial ratio at equal precision "
              f"{s['hard_median_trial_ratio'] or float('nan'):.2f} against a median c-optimal bound "
              f"{s['hard_median_bound'] or float('nan'):.2f}, median efficiency vs the bound "
              f"{float('nan') if eff is None else eff:.2f}; truth inside the 95% CI {cover}")
        for m, e in s["equal_budget"].items():
            print(f"  at {m * SEEDS} trials ({e['sims']} simulations): median CI half-width adaptive "
                  f"{e['median_adaptive']:.3f} vs uniform {e['median_uniform']:.3f} decades (rms of {UNIFORM_DRAWS} "
                  f"draws); median mean(uniform^2)/adaptive^2 = {e['median_trial_ratio']:.2f}x; adaptive CI covers "
                  f"the truth in {100 * e['coverage_95_adaptive']:.0f}%")
        if args.baselines:
            print(f"  median trials where the start did not suffice {s['hard_median_trials']}; adaptive needed fewer "
                  f"trials than uniform in {s['hard_adaptive_fewer_than_uniform']} and more in "
                  f"{s['hard_adaptive_more_than_uniform']} simulations; fewer than nested in "
                  f"{s['hard_adaptive_fewer_than_nested']}, more in {s['hard_adaptive_more_than_nested']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
