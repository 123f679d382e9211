"""Refinement benchmark: trials needed to pin a break to ±0.1 decade, adaptive against uniform log grids.

    python bench/refine.py [--sims 30] [--noise 0.01,0.02] [--target 0.1] [--bootstrap 200]

Ground truths are broken curves on x ∈ [10³, 10^5.3] (the paper's form, and BNSL with one break, a = 0, f = 1),
with breaks placed at random inside the range and near its edges, exponents drawn around the paper's, and
seed noise of 1–2 % (3 seeds per point). *Adaptive*: a uniform 5-point grid, then rounds of 3 points from
:func:`analysis.propose.propose` until the break's 95 % CI half-width ≤ target. *Uniform*: the smallest
uniform log grid (5…50 points) that reaches the target. Also: how often the truth lies inside the final CI.
Prints a table and one JSON line.
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
from analysis.propose import break_interval, propose  # noqa: E402

LO, HI, SEEDS, MAX_TRIALS = 3.0, 5.3, 3, 150
UNIFORM = (5, 7, 9, 12, 16, 21, 28, 37, 50)


def truth(rng: np.random.Generator):
    log_xc = rng.uniform(LO + 0.1, HI - 0.1) if rng.random() < 0.7 else rng.choice([LO + 0.15, HI - 0.15])
    a1 = rng.uniform(0.05, 0.25)
    a2 = a1 + rng.uniform(0.15, 0.35) if rng.random() < 0.7 else max(0.02, a1 - rng.uniform(0.1, 0.2))  # steepen or flatten
    if rng.random() < 0.5:
        return "broken", {"x_c": 10**log_xc, "alpha1": a1, "alpha2": a2}, log_xc
    # BNSL with one break, a = 0, f = 1:  b x^-c0 (1 + x/d)^-c1  (slope c0 below d, c0 + c1 above)
    return "bnsl:1", {"a": 0.0, "b": 10 ** (a1 * log_xc), "c0": a1, "c1": a2 - a1, "d1": 10**log_xc, "f1": 1.0}, log_xc


def measure(form, params, x, rng, noise):
    y = make_law(form, (LO, HI), (0, 0)).predict(np.asarray(x, float), params)
    return [v * (1 + noise * rng.standard_normal(SEEDS)) for v in y]


def curve(xs, ys):
    return make_curve(np.repeat(xs, SEEDS), np.concatenate(ys))


def one(args):
    sim, noise, target, n_boot = args
    rng = np.random.default_rng(1000 + sim)
    form, params, log_xc = truth(rng)
    xs = list(np.logspace(LO, HI, 5))
    ys = measure(form, params, xs, rng, noise)
    adaptive, inside, half = None, None, None
    for _ in range(40):
        c = curve(xs, ys)
        _, _, ci, half = break_interval(c, n_boot=n_boot, seed=sim)
        if half <= target:
            adaptive = len(xs) * SEEDS
            inside = bool(np.log10(ci[0]) <= log_xc <= np.log10(ci[1]))
            break
        if len(xs) * SEEDS >= MAX_TRIALS:
            break
        p = propose(c, 3, (10**LO, 10**HI), n_boot=n_boot, seed=sim, predict=False, integer=False)
        xs += p.points
        ys += measure(form, params, p.points, rng, noise)
    uniform = None
    for m in UNIFORM:
        x = list(np.logspace(LO, HI, m))
        _, _, _, h = break_interval(curve(x, measure(form, params, x, rng, noise)), n_boot=n_boot, seed=sim)
        if h <= target:
            uniform = m * SEEDS
            break
    return {"sim": sim, "form": form, "log_xc": log_xc, "noise": noise, "adaptive": adaptive, "uniform": uniform,
            "inside": inside, "final_half_width": half}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=30)
    ap.add_argument("--noise", default="0.01,0.02")
    ap.add_argument("--target", type=float, default=0.1)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    noises = [float(v) for v in args.noise.split(",")]
    jobs = [(s, noises[s % len(noises)], args.target, args.bootstrap) for s in range(args.sims)]
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        rows = list(pool.map(one, jobs))
    print(f"{'sim':>4} {'form':<7} {'log xc':>7} {'noise':>6} {'adaptive':>9} {'uniform':>8} {'inside':>7}")
    for r in rows:
        print(f"{r['sim']:>4} {r['form']:<7} {r['log_xc']:>7.2f} {r['noise']:>6.3f} {str(r['adaptive']):>9} "
              f"{str(r['uniform'] if r['uniform'] else '>150'):>8} {str(r['inside']):>7}")
    done = [r for r in rows if r["adaptive"]]
    cap = UNIFORM[-1] * SEEDS
    ratios = [(r["uniform"] or cap * 2) / r["adaptive"] for r in done]  # a uniform grid that never got there counts 2×cap
    both = [r for r in done if r["uniform"]]
    total_ratio = sum(r["uniform"] for r in both) / max(sum(r["adaptive"] for r in both), 1)
    coverage = float(np.mean([r["inside"] for r in done])) if done else float("nan")
    summary = {"bench": "refine", "sims": len(rows), "adaptive_converged": len(done),
               "uniform_converged": sum(r["uniform"] is not None for r in rows),
               "median_trials_adaptive": float(np.median([r["adaptive"] for r in done])) if done else None,
               "median_trials_uniform": float(np.median([r["uniform"] for r in both])) if both else None,
               "median_ratio": float(np.median(ratios)) if ratios else None,
               "total_ratio_where_both_converged": total_ratio, "coverage_95": coverage}
    print(f"adaptive converged in {len(done)}/{len(rows)}; uniform in {summary['uniform_converged']}/{len(rows)}; "
          f"median trials {summary['median_trials_adaptive']} vs {summary['median_trials_uniform']}; "
          f"median ratio {summary['median_ratio']:.2f}; truth inside the 95% CI in {100 * coverage:.0f}%")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
