"""Refinement: proposals on simulated curves, and a real refine round on a tiny sweep."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from analysis.fit import make_curve
from analysis.laws import make_law
from analysis.propose import propose
from sweeps import tracking


def simulate(law_name, truth, x, rng, noise=0.015, seeds=3):
    y = make_law(law_name, (3, 5), (0, 0)).predict(np.asarray(x, float), truth)
    return make_curve(np.repeat(x, seeds), np.concatenate([v * (1 + noise * rng.standard_normal(seeds)) for v in y]))


@pytest.mark.parametrize("log_xc", [4.0, 4.3, 4.6])
def test_proposals_concentrate_around_the_true_break(log_xc):
    rng = np.random.default_rng(int(log_xc * 10))
    truth = {"x_c": 10**log_xc, "alpha1": 0.12, "alpha2": 0.45}
    curve = simulate("broken", truth, np.logspace(3.3, 5.2, 6).round(), rng)
    p = propose(curve, 3, (1000, 2e5), n_boot=200, law="broken")  # the truth's form, assumed
    assert p.design == "break" and p.verdict == "break" and len(p.points) == 3
    assert p.reason.startswith("break ") and p.reason.endswith("new x that most shrink its CI")
    logs = np.log10(p.points)
    inner = logs[(logs > 3.05) & (logs < 5.25)]  # the c-optimal design also pins the slopes at the range's ends
    assert len(inner) >= 1 and np.all(np.abs(inner - log_xc) <= 0.5)  # the rest sit at the true break
    assert 0 < p.predicted_half_width < p.half_width  # the simulated future is narrower than today's CI
    honest = propose(curve, 3, (1000, 2e5), n_boot=200)  # the interval includes the choice of broken law
    assert honest.half_width >= p.half_width - 1e-9 and honest.break_ci[0] <= 10**log_xc <= honest.break_ci[1]


def test_without_a_break_nothing_is_proposed_unless_a_broken_law_is_assumed():
    rng = np.random.default_rng(3)
    curve = simulate("power", {"x0": 300.0, "alpha": 0.3}, np.logspace(3.3, 5.2, 6).round(), rng)
    p = propose(curve, 3, (1000, 2e5), n_boot=100)
    assert p.verdict == "no break" and not p.ambiguous and p.points == [] and p.break_x is None
    assert p.reason.startswith("no break: power preferred by AICc (ΔAICc ") and p.reason.endswith("nothing to propose")
    t = propose(curve, 3, (1000, 2e5), n_boot=100, law="broken")  # --law broken: test for one where the laws differ
    assert t.verdict == "no break" and t.design == "disagree" and len(t.points) == 3 and t.law == "broken"
    assert "--law broken assumes one, broken puts it at" in t.reason
    assert len({round(np.log10(x), 1) for x in t.points}) == 3  # spread, not stacked


# Simulated curves with known parameters (8 sizes on 10^3 … 10^5.3, 3 seeds, 1.5 % noise), each seed checked to be
# the case named: a clear break won by broken, one won by broken_amp, a pure power law, and a power law whose
# noise puts broken within 2 AICc (ambiguous).
STORY = {
    "broken": ("broken", {"x_c": 10**4.2, "alpha1": 0.1, "alpha2": 0.5}, 0),
    "broken_amp wins": ("broken", {"x_c": 10**4.2, "alpha1": 0.1, "alpha2": 0.5}, 2),
    "power": ("power", {"x0": 300.0, "alpha": 0.3}, 0),
    "ambiguous": ("power", {"x0": 300.0, "alpha": 0.3}, 5),
}


@pytest.mark.parametrize("case", list(STORY))
def test_analyze_and_refine_tell_one_story(case):
    """analyze (fit_curve) and refine (propose) choose the same law by the same rule; refine claims a break exactly
    when analyze's winner has one, at the same x_c with the same CI; without one it proposes nothing."""
    from analysis.scaling import fit_curve

    law, truth, seed = STORY[case]
    curve = simulate(law, truth, np.logspace(3, 5.3, 8).round(), np.random.default_rng(seed))
    r = fit_curve(curve, n_boot=200, seed=0, workers=1)
    p = propose(curve, 3, (1000, 2e5), n_boot=200, seed=0)
    choice = r["choice"]
    assert (p.winner, p.verdict, p.rival, p.ambiguous) == (r["law"], choice["verdict"], choice["rival"],
                                                           choice["ambiguous"])
    assert p.delta_aicc == pytest.approx(choice["delta_aicc"]) and p.summary == choice["summary"]
    if case.startswith("broken"):
        assert r["law"] == ("broken_amp" if case == "broken_amp wins" else "broken")
        assert choice["verdict"] == "break" and not choice["ambiguous"]
        bp = r["breakpoints"][0]
        assert abs(np.log10(bp["x"]) - 4.2) < 0.15  # the known break
        assert (p.law, p.break_x, tuple(p.break_ci), p.half_width) == (r["law"], bp["x"], tuple(bp["ci"]),
                                                                       bp["half_width"])
        assert p.design == "break" and len(p.points) == 3
    elif case == "power":
        assert r["law"] == "power" and choice["verdict"] == "no break" and not choice["ambiguous"]
        assert r["breakpoints"] == []
        assert p.law is None and p.break_x is None and p.points == [] and p.design is None
        assert p.reason == f"no break: {choice['summary']}; nothing to propose"
    else:  # within 2 AICc: both say which law won and that it is ambiguous; refine asks where they disagree
        assert choice["ambiguous"] and p.design == "disagree" and len(p.points) == 3
        if choice["verdict"] == "break":
            bp = r["breakpoints"][0]
            assert (p.break_x, tuple(p.break_ci)) == (bp["x"], tuple(bp["ci"]))
        else:
            assert p.break_x is None and r["breakpoints"] == []


@pytest.mark.slow
def test_refine_round_on_a_tiny_sweep_adds_refine_runs_and_never_repeats(tmp_path):
    import ray

    from analysis.runs import aggregate, load_runs
    from sweeps.driver import run_sweep
    from analysis.refine import refine_experiment
    from sweeps.spec import load_spec

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "experiment": "refined",
        "dataset": {"synthetic": {"n": 500, "points": 21, "seed": 0}, "data_dir": str(tmp_path / "data")},
        "archs": ["cgc"],
        "axes": {"data_fractions": [0.1, 0.2, 0.4, 0.7, 1.0], "n_params": [1.0e4], "seeds": [0, 1]},
        "budget": {"epochs": 2, "patience": 5},
        "hpo": {"trials_per_point": 1, "space": {"lr": 2.0e-3}},
        "system_metrics": False,
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "storage_path": str(tmp_path / "ray"),
    }))
    spec = load_spec(spec_path)
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        assert run_sweep(spec, progress=False)["status"] == "FINISHED"
        said = []  # --law broken: a round is proposed whatever AICc says about a break (it tests for one)
        dry = refine_experiment(spec.experiment, spec.tracking_uri, points=2, max_rounds=1, until_ci=0.0,
                                n_boot=100, law="broken", dry_run=True, progress=False, out=said.append)
        assert dry["status"] == "dry_run" and dry["trials"] == 4  # 2 points × 2 seeds × 1 HPO trial
        assert dry["estimate"]["seconds"] > 0
        assert said[-1].startswith("dry run: would launch 4 trials (2 new axis values × 2 seeds × 1 HPO trial per")
        assert "times: from 10 finished runs of this experiment" in said[-1]  # the dry run's estimator
        assert len(load_runs(spec.tracking_uri, spec.experiment)[0]) == 10  # nothing launched
        res = refine_experiment(spec.experiment, spec.tracking_uri, points=2, max_rounds=1, until_ci=0.0,
                                n_boot=100, law="broken", progress=False, out=lambda *a: None)
        assert [r["round"] for r in res["rounds"]] == [1]
        df, exp_id = load_runs(spec.tracking_uri, spec.experiment)
        refine_runs = df[df["stage"] == "refine"]
        assert len(refine_runs) == 4 and set(refine_runs["status"]) == {"FINISHED"}  # 2 points × 2 seeds
        new_sizes = set(refine_runs["n_train"])
        _, points, _ = aggregate(df)
        assert new_sizes <= set(points["n_train"])  # the refit uses them
        c = tracking.client(tracking.normalise_uri(spec.tracking_uri))
        rounds = tracking.search_all(c, [exp_id], "tags.`matscale.kind` = 'analysis' and tags.`matscale.stage` = 'refine'")
        assert [r.data.tags["matscale.round"] for r in rounds] == ["1"]
        assert "proposal.json" in {a.path for a in c.list_artifacts(rounds[0].info.run_id)}
        tagged = tracking.search_all(c, [exp_id], "tags.`matscale.stage` = 'refine' and tags.`matscale.kind` = 'trial'")
        assert all(r.data.tags["matscale.round"] == "1" for r in tagged)
        again = refine_experiment(spec.experiment, spec.tracking_uri, points=2, max_rounds=1, until_ci=0.0,
                                  n_boot=100, law="broken", progress=False, out=lambda *a: None)
        assert again["status"] == "max_rounds" and again["rounds"] == []
        assert len(load_runs(spec.tracking_uri, spec.experiment)[0]) == len(df)
    finally:
        ray.shutdown()


def test_integer_proposals_never_repeat_a_measured_value():
    rng = np.random.default_rng(5)
    x = np.arange(100, 131).astype(float)  # every integer up to 130 is measured
    curve = simulate("broken", {"x_c": 115.0, "alpha1": 0.1, "alpha2": 0.6}, x, rng, noise=0.01)
    p = propose(curve, 4, (100, 134), n_boot=100, predict=False)
    assert len(set(p.points)) == len(p.points) and not set(p.points) & set(x.tolist())
    assert set(p.points) <= {131.0, 132.0, 133.0, 134.0}


def _bench():
    """bench/refine.py as a module (it is a script, not a package member)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "refine.py"
    spec = importlib.util.spec_from_file_location("bench_refine", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_design_serves_every_broken_law_of_the_interval():
    """The reported interval mixes the resamples of broken and broken_amp (each resample keeps its own AICc
    winner's x_c), so the design weighs each law by its share of the resamples × the spread of its x_c draws: the
    wide law steers it. With one weight at zero it is exactly that law's single-law design."""
    from analysis.propose import _break_bootstrap, _interval_laws, _optimal_design
    from analysis.scaling import fit_candidates

    rng = np.random.default_rng(0)
    truth = {"x_c": 10**4.37, "alpha1": 0.14, "alpha2": 0.40}
    curve = simulate("broken", truth, np.logspace(3, 5.3, 15), rng, noise=0.01)
    cands, _ = fit_candidates(curve, ["broken", "broken_amp"], n_boot=200, seed=0, workers=1)
    _, samples, _, _, _ = _break_bootstrap(curve, 200, 0, cands=cands, law="broken")
    fits, draws, weights = _interval_laws(cands, "broken", ("broken", "broken_amp"), samples)
    assert [f.law.name for f in fits] == ["broken", "broken_amp"]
    shares = [np.mean(np.isclose(samples, np.log10(cands[n]["boot"][:, 0]))) for n in ("broken", "broken_amp")]
    assert 0.95 <= sum(shares) <= 1.0 + 1e-9  # every resample counted once (a few may have no refit)
    spread = [np.diff(np.percentile(np.log10(d[:, 0]), [16, 84]))[0] / 2 for d in draws]
    assert weights == pytest.approx([max(s, 0.05) * w**2 for s, w in zip(shares, spread)])
    assert spread[1] > 2 * spread[0]  # x_c from the curvature alone (broken_amp) is the wider one
    grid, taken = np.linspace(3, 5.3, 200), np.log10(curve.x)
    alone = [_optimal_design(f, curve, d, 4, grid, taken, 3, 0.02) for f, d in zip(fits, draws)]
    assert alone[0] != alone[1]  # the two laws want different points
    assert _optimal_design(fits, curve, draws, 4, grid, taken, 3, 0.02, weights=[1.0, 0.0]) == alone[0]
    assert _optimal_design(fits, curve, draws, 4, grid, taken, 3, 0.02, weights=[0.0, 1.0]) == alone[1]


def test_refine_benchmark_measures_without_stopping_when_lucky():
    """The benchmark's efficiency: uniform grids are independent noise draws of the same truth, the trial ratio at
    equal precision is mean(uniform²)/adaptive² at fixed budgets, and a simulation's ratio is their geometric mean."""
    b = _bench()
    a, u = b.Sim(3, "bnsl", 0.02), b.Sim(3, "bnsl", 0.02, stream=1)
    assert (a.law, a.params, a.log_xc) == (u.law, u.params, u.log_xc)  # the same truth ...
    x = np.logspace(b.LO, b.HI, 5)
    assert not np.allclose(np.concatenate(a.measure(x)), np.concatenate(u.measure(x)))  # ... other noise
    again = b.Sim(3, "bnsl", 0.02, stream=1)
    assert np.allclose(np.concatenate(again.measure(x)), np.concatenate(b.Sim(3, "bnsl", 0.02, stream=1).measure(x)))
    assert b.trial_ratio({19: {"ratio": 4.0}, 31: {"ratio": 1.0}}) == pytest.approx(2.0)
    assert b.trial_ratio({19: {"ratio": float("nan")}, 31: {"ratio": 9.0}}) == pytest.approx(9.0)
    assert np.isnan(b.trial_ratio({}))
    assert 1.5 < b.bound(a) < 4  # the c-optimal design beats a uniform grid, by a bounded factor
