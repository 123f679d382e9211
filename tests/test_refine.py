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
