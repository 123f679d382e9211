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
    assert p.reason == "break: largest expected CI reduction" and len(p.points) == 3
    logs = np.log10(p.points)
    inner = logs[(logs > 3.05) & (logs < 5.25)]  # the c-optimal design also pins the slopes at the range's ends
    assert len(inner) >= 1 and np.all(np.abs(inner - log_xc) <= 0.5)  # the rest sit at the true break
    assert 0 < p.predicted_half_width < p.half_width  # the simulated future is narrower than today's CI
    honest = propose(curve, 3, (1000, 2e5), n_boot=200)  # the interval includes the choice of broken law
    assert honest.half_width >= p.half_width - 1e-9 and honest.break_ci[0] <= 10**log_xc <= honest.break_ci[1]


def test_without_a_clear_break_points_go_where_the_laws_disagree():
    rng = np.random.default_rng(3)
    curve = simulate("power", {"x0": 300.0, "alpha": 0.3}, np.logspace(3.3, 5.2, 6).round(), rng)
    p = propose(curve, 3, (1000, 2e5), n_boot=100)
    assert p.reason == "laws disagree" and len(p.points) == 3
    assert len({round(np.log10(x), 1) for x in p.points}) == 3  # spread, not stacked


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
        res = refine_experiment(spec.experiment, spec.tracking_uri, points=2, max_rounds=1, until_ci=0.0,
                                n_boot=100, progress=False, out=lambda *a: None)
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
                                  n_boot=100, progress=False, out=lambda *a: None)
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
