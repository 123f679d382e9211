"""Refinement benchmark: trials needed to pin a break to ±0.1 decade, adaptive against uniform log grids.

    python bench/refine.py [--sims 30] [--noise 0.01,0.02] [--target 0.1] [--bootstrap 1000] [--law auto]

Ground truths are broken curves on x ∈ [10³, 10^5.3], 3 seeds per point with 1–2 % relative seed noise, the
break placed at random inside the range (70 %) or 0.15 decade from an edge (30 %):

* ``paper``: the dielectric paper's form L = (x_c/x)^α2 (1 + x_c/x)^(α1−α2) — its amplitude is tied to x_c;
* ``bnsl``: BNSL with one break (a = 0, f = 1) and a free amplitude, L = b x^−c0 (1 + x/d)^−c1, so the break
  is located by the curvature alone (the fitter may choose ``broken`` or ``broken_amp``).

Methods, each stopped by the same rule (the 95 % bootstrap CI half-width of log10 x_c ≤ target):

* *adaptive*: the paper's start, a uniform 7-point grid, then rounds of 4 points from :func:`analysis.propose.propose`;
* *uniform (expected)*: the fewest points m of a uniform log grid for which at least 2 of 3 independent
  noise draws reach the target (one look per draw: no "stop when lucky");
* *uniform (nested)*: what a user densifying a grid does: 7 → 13 → 25 → 49 points, each grid
  keeping the previous measurements, stopped at the first grid that reaches the target;
* *equal budget*: where the target is out of reach, the CI half-width of the adaptive run after 19, 31 and 59
  points against one uniform grid of as many points; (uniform/adaptive)² is the trial ratio at equal precision.

Comparisons (median trials with "never" as infinity, wins and losses) are over the simulations whose 7-point
start did not already reach the target.

Also printed per simulation: the asymptotic bound — the variance of log10 x_c per trial of a uniform grid
over that of the locally c-optimal design at the true curve, which no design (adaptive or not) can beat.
The truth's coverage by the final 95 % CI of the adaptive runs is reported, over the converged runs and over
all runs (a run that never converged still reports its last CI). Prints a table and one JSON line.
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
EQUAL_BUDGET = (19, 31, 59)  #: points (start + rounds of 4) at which adaptive and uniform precision are compared


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

    def __init__(self, sim: int, form: str, noise: float):
        self.rng = np.random.default_rng(1000 + sim)
        self.law, self.params, self.log_xc = truth(self.rng, form)
        self.noise = noise

    def measure(self, x) -> list[np.ndarray]:
        y = make_law(self.law, (LO, HI), (0, 0)).predict(np.asarray(x, float), self.params)
        return [v * (1 + self.noise * self.rng.standard_normal(SEEDS)) for v in y]


def curve(xs, ys):
    return make_curve(np.repeat(xs, SEEDS), np.concatenate(ys))


LAW = "auto"  #: the break's law (--law): auto includes the choice between broken and broken_amp


def half_width(xs, ys, n_boot, seed):
    _, _, ci, half = break_interval(curve(xs, ys), n_boot=n_boot, seed=seed, law=LAW)
    return half, ci


def adaptive(sim: Sim, target, n_boot, seed, history=None):
    xs = list(np.logspace(LO, HI, START))
    ys = sim.measure(xs)
    while True:
        half, ci = half_width(xs, ys, n_boot, seed)
        inside = bool(np.log10(ci[0]) <= sim.log_xc <= np.log10(ci[1]))
        if history is not None:
            history[len(xs)] = half
        if half <= target:
            return len(xs) * SEEDS, inside, half
        if len(xs) >= MAX_POINTS:
            return None, inside, half
        p = propose(curve(xs, ys), ROUND, (10**LO, 10**HI), n_boot=n_boot, seed=seed, predict=False, integer=False,
                    law=LAW, test=True)  # the truth has a break: look for it even where AICc does not see one yet
        if not p.points:
            return None, inside, half
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


def equal_budget(history: dict, sim: Sim, n_boot: int, seed: int) -> dict:
    """CI half-widths of the adaptive run and of one uniform grid with the same number of points, at the
    EQUAL_BUDGET checkpoints the adaptive run reached (precision at equal cost, when neither hits the target)."""
    out = {}
    for m in EQUAL_BUDGET:
        if m in history:
            x = list(np.logspace(LO, HI, m))
            out[m] = (history[m], half_width(x, sim.measure(x), n_boot, seed)[0])
    return out


def one(args):
    global LAW
    sim_no, form, noise, target, n_boot, LAW = args
    sim = Sim(sim_no, form, noise)
    history: dict = {}
    trials, inside, half = adaptive(sim, target, n_boot, sim_no, history)
    return {"sim": sim_no, "form": form, "log_xc": sim.log_xc, "noise": noise, "adaptive": trials, "inside": inside,
            "final_half_width": half, "uniform": uniform_expected(Sim(sim_no, form, noise), target, n_boot, sim_no),
            "nested": uniform_nested(Sim(sim_no, form, noise), target, n_boot, sim_no), "bound": bound(sim),
            "equal_budget": equal_budget(history, Sim(sim_no, form, noise), n_boot, sim_no)}


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
    """Per checkpoint: median half-widths and the median trial ratio (uniform/adaptive)², variance ∝ 1/trials."""
    out = {}
    for m in EQUAL_BUDGET:
        pairs = np.array([r["equal_budget"][m] for r in sub if m in r["equal_budget"]])
        pairs = pairs[np.isfinite(pairs).all(axis=1)] if len(pairs) else pairs
        if len(pairs):
            out[m] = {"sims": len(pairs), "median_adaptive": float(np.median(pairs[:, 0])),
                      "median_uniform": float(np.median(pairs[:, 1])),
                      "median_trial_ratio": float(np.median((pairs[:, 1] / pairs[:, 0]) ** 2))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=30, help="simulations per form")
    ap.add_argument("--forms", default="paper,bnsl")
    ap.add_argument("--noise", default="0.01,0.02")
    ap.add_argument("--target", type=float, default=0.1)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--law", default="auto", choices=["auto", "broken", "broken_amp"],
                    help="the break's law, as matscale refine --law")
    args = ap.parse_args()
    noises = [float(v) for v in args.noise.split(",")]
    jobs = [(s, form, noises[s % len(noises)], args.target, args.bootstrap, args.law)
            for form in args.forms.split(",") for s in range(args.sims)]
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        rows = list(pool.map(one, jobs))
    cap = f">{MAX_POINTS * SEEDS}"
    print(f"{'sim':>4} {'form':<6} {'log xc':>7} {'noise':>6} {'adaptive':>9} {'uniform':>8} {'nested':>7} "
          f"{'bound':>6} {'inside':>7}")
    for r in rows:
        print(f"{r['sim']:>4} {r['form']:<6} {r['log_xc']:>7.2f} {r['noise']:>6.3f} {r['adaptive'] or cap:>9} "
              f"{r['uniform'] or cap:>8} {r['nested'] or cap:>7} {r['bound']:>6.2f} {str(r['inside']):>7}")
    summary = {"bench": "refine", "target_decades": args.target, "law": args.law, "forms": {}}
    for form in args.forms.split(","):
        sub = [r for r in rows if r["form"] == form]
        done = [r for r in sub if r["adaptive"]]
        summary["forms"][form] = s = {
            "sims": len(sub), "adaptive_converged": len(done),
            "uniform_converged": sum(bool(r["uniform"]) for r in sub),
            "nested_converged": sum(bool(r["nested"]) for r in sub),
            **_hard_cases(sub),
            "median_bound": float(np.median([r["bound"] for r in sub])),
            "coverage_95": float(np.mean([r["inside"] for r in done])) if done else None,
            "coverage_95_final_all": float(np.mean([r["inside"] for r in sub])),
            "equal_budget": _equal_budget_summary(sub)}
        cover = "n/a" if s["coverage_95"] is None else f"{100 * s['coverage_95']:.0f}%"
        cover += f" of converged runs, {100 * s['coverage_95_final_all']:.0f}% of all final CIs"
        print(f"{form}: {s['needed_refinement']}/{len(sub)} needed more than the start; converged: adaptive "
              f"{len(done)}, uniform {s['uniform_converged']}, nested {s['nested_converged']}; median trials where "
              f"the start did not suffice {s['hard_median_trials']}; c-optimal bound {s['median_bound']:.2f}; "
              f"truth inside the 95% CI {cover}")
        for m, e in s["equal_budget"].items():
            print(f"  at {m * SEEDS} trials ({e['sims']} simulations): median CI half-width adaptive "
                  f"{e['median_adaptive']:.3f} vs uniform {e['median_uniform']:.3f} decades; median "
                  f"(uniform/adaptive)^2 = {e['median_trial_ratio']:.2f}x trials saved at equal precision")
        print(f"  where the start did not suffice: adaptive needed fewer trials than uniform in "
              f"{s['hard_adaptive_fewer_than_uniform']} and more in {s['hard_adaptive_more_than_uniform']} simulations; "
              f"fewer than nested in {s['hard_adaptive_fewer_than_nested']}, more in {s['hard_adaptive_more_than_nested']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
