"""Compute-optimal frontier: known answers on Chinchilla and Kaplan laws, the verdict flipping where theory says,
the cheapest allocation for a target loss, and the command line."""

import json
import subprocess
import sys

import numpy as np
import pytest

from analysis import frontier
from analysis.fit import make_curve
from analysis.laws import make_law
from analysis.scaling import fit_candidates
from gnn.errors import InputError

TRUE = {"E": 0.1, "A": 50.0, "alpha": 0.35, "B": 20.0, "beta": 0.45}
N_GRID, D_GRID = np.logspace(4, 6, 5), np.logspace(2, 4, 5)


def _chinchilla_rows(seed=0, noise=0.02, seeds=3):
    rng = np.random.default_rng(seed)
    n, d = np.meshgrid(N_GRID, D_GRID, indexing="ij")
    n, d = np.repeat(n.ravel(), seeds), np.repeat(d.ravel(), seeds)
    loss = TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]
    return n, d, loss * np.exp(rng.normal(0, noise, loss.size))


@pytest.fixture(scope="module")
def fitted():
    n, d, y = _chinchilla_rows()
    curve = make_curve(n, y, d)
    cands, _ = fit_candidates(curve, ["chinchilla"], n_boot=300, workers=1)
    return curve, cands["chinchilla"]


def _law(curve, name="chinchilla"):
    xs, x2s = curve.spans()
    return make_law(name, xs, (0.0, 0.0), x2s)


def test_frontier_exponents_of_a_chinchilla_law_are_beta_and_alpha_over_their_sum(fitted):
    curve, c = fitted
    fr = frontier.compute(_law(curve), c["params"], c["boot"], curve, frontier.parse_cost("6*N*D"))
    p = c["params"]
    s = p["alpha"] + p["beta"]
    assert fr["a"]["value"] == pytest.approx(p["beta"] / s, abs=2e-3)  # the fitted law's own closed form
    assert fr["b"]["value"] == pytest.approx(p["alpha"] / s, abs=2e-3)
    truth = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    lo, hi = fr["a"]["ci"]
    assert lo < truth < hi and hi - lo < 0.3  # the true exponent inside a CI that says something
    lo, hi = fr["b"]["ci"]
    assert lo < 1 - truth < hi


def test_frontier_allocation_equals_the_closed_form():
    curve = make_curve(N_GRID, np.ones(5), D_GRID)
    law = _law(curve)
    budgets = [1e9, 1e11, 1e13]
    fr = frontier.compute(law, TRUE, np.empty((0, 5)), curve, frontier.parse_cost("6*N*D"), budgets=budgets)
    al, be, a_, b_ = TRUE["alpha"], TRUE["beta"], TRUE["A"], TRUE["B"]
    g = (al * a_ / (be * b_)) ** (1 / (al + be))
    for p, c in zip(fr["points"], budgets):
        n_star = g * (c / 6) ** (be / (al + be))
        assert p["N"] == pytest.approx(n_star, rel=5e-3)
        assert p["D"] == pytest.approx(c / 6 / n_star, rel=5e-3)
        assert p["loss"] == pytest.approx(law.predict((n_star, c / 6 / n_star), TRUE), rel=1e-5)


def test_kaplan_frontier_exponent():
    curve = make_curve(N_GRID, np.ones(5), D_GRID)
    law = _law(curve, "kaplan")
    params = {"N_c": 1e5, "D_c": 3e3, "alpha_N": 0.2, "alpha_D": 0.4}
    fr = frontier.compute(law, params, np.empty((0, 4)), curve, frontier.parse_cost("6*N*D"))
    assert fr["a"]["value"] == pytest.approx(0.4 / 0.6, abs=2e-3)  # α_D / (α_N + α_D)
    assert fr["b"]["value"] == pytest.approx(0.2 / 0.6, abs=2e-3)


def test_verdict_flips_where_theory_says(fitted):
    """With C ∝ N·D, parameters buy more per unit of cost exactly where α·A·N^−α > β·B·D^−β."""
    curve, c = fitted
    law = _law(curve)

    def verdict(n, d):
        return frontier.compute(law, c["params"], c["boot"], curve, frontier.parse_cost("6*N*D"),
                                at=(n, d))["verdict"]

    def theory_ratio(n, d):
        return TRUE["alpha"] * TRUE["A"] * n ** -TRUE["alpha"] / (TRUE["beta"] * TRUE["B"] * d ** -TRUE["beta"])

    model, data = verdict(1e4, 1e4), verdict(1e6, 1e2)
    assert theory_ratio(1e4, 1e4) > 1 and model["verdict"] == "model-limited"
    assert theory_ratio(1e6, 1e2) < 1 and data["verdict"] == "data-limited"
    assert model["ratio"]["value"] == pytest.approx(theory_ratio(1e4, 1e4), rel=0.3)
    # on the theoretical line the ratio is 1 and the data cannot tell
    d_line = (TRUE["beta"] * TRUE["B"] / (TRUE["alpha"] * TRUE["A"] * 1e5 ** -TRUE["alpha"])) ** (1 / TRUE["beta"])
    assert verdict(1e5, d_line)["verdict"] == "undecided at this precision"
    # the best measured point by default: the lowest mean loss, the largest N and D, here close to the line
    best = frontier.compute(law, c["params"], c["boot"], curve, frontier.parse_cost("6*N*D"))["verdict"]
    assert (best["N"], best["D"]) == (1e6, 1e4) and 0.9 < theory_ratio(1e6, 1e4) < 1.1
    assert best["verdict"] == "undecided at this precision"


def test_target_loss_cheapest_allocation_and_unreachable_floor():
    curve = make_curve(N_GRID, np.ones(5), D_GRID)
    law, cost = _law(curve), frontier.parse_cost("6*N*D")
    t = frontier.compute(law, TRUE, np.empty((0, 5)), curve, cost, target_loss=0.5)["target"]
    assert t["reachable"]
    assert law.predict((t["N"], t["D"]), TRUE) == pytest.approx(0.5, rel=1e-2)
    assert cost(t["N"], t["D"]) == pytest.approx(t["C"], rel=1e-2)
    cheaper = frontier.compute(law, TRUE, np.empty((0, 5)), curve, cost, budgets=[0.9 * t["C"]])["points"][0]
    assert cheaper["loss"] > 0.5  # no allocation of 90 % of that cost reaches the target
    below = frontier.compute(law, TRUE, np.empty((0, 5)), curve, cost, target_loss=0.09)["target"]
    assert not below["reachable"] and "floor" in below["why"] and below["C"] == "inf"


def test_cost_formulas_are_checked_and_fitted_from_counted_flops():
    assert frontier.parse_cost("6 * N * D + 1e3*D")(2.0, 3.0) == pytest.approx(36 + 3e3)
    for bad in ("__import__('os')", "N*D*x", "6*N*", "-N*D", "N/D", "exp(N)"):
        with pytest.raises(InputError, match="cost"):
            frontier.parse_cost(bad)
    rng = np.random.default_rng(1)
    n, d, e = rng.uniform(1e3, 1e5, 30), rng.uniform(1e2, 1e4, 30), rng.integers(5, 20, 30)
    cost = frontier.fit_cost(n, d, 7.0 * n * d * e * np.exp(rng.normal(0, 0.05, 30)), e)
    assert cost.k == pytest.approx(7.0, rel=0.05) and cost.epochs == np.median(e)
    assert cost(1e4, 1e3) == pytest.approx(cost.k * cost.epochs * 1e7)
    with pytest.raises(InputError, match="train_flops"):
        frontier.fit_cost(n, d, np.zeros(30))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "analysis.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_fit_frontier_command(tmp_path):
    n, d, y = _chinchilla_rows(seed=2)
    rows = ["N,D,loss,train_flops,epochs"] + [f"{a},{b},{c},{4.0 * a * b * 10},10" for a, b, c in zip(n, d, y)]
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    base = ["fit", str(tmp_path / "runs.csv"), "--x", "N", "--x2", "D", "--y", "loss", "--law", "chinchilla",
            "--bootstrap", "100"]
    r = _cli(*base, "--frontier", "--budget", "1e10", "1e12", "--target-loss", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    fr = json.loads(r.stdout)["frontier"]
    assert fr["cost"]["source"] == "train_flops" and fr["cost"]["k"] == pytest.approx(4.0)
    assert {"value", "ci"} <= set(fr["a"]) and {"value", "ci"} <= set(fr["b"])
    assert [p["C"] for p in fr["points"]] == [1e10, 1e12]
    assert fr["verdict"]["verdict"] in ("data-limited", "model-limited", "undecided at this precision")
    assert fr["target"]["reachable"]
    text = _cli(*base, "--frontier", "--cost", "6*N*D")
    assert text.returncode == 0 and "compute-optimal frontier, cost 6*N*D: N* ∝ C^" in text.stdout
    for extra, flag in ((["--frontier", "--cost", "N**"], "cost"), (["--frontier", "--budget", "-1"], "budget"),
                        (["--cost", "6*N*D"], "cost"), (["--frontier", "--target-loss", "nan"], "target_loss")):
        bad = _cli(*base, *extra)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, (extra, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1 and flag in bad.stderr, bad.stderr
    one_d = _cli("fit", str(tmp_path / "runs.csv"), "--x", "D", "--y", "loss", "--frontier")
    assert one_d.returncode == 2 and "--x2" in one_d.stderr


def _log_trials(uri: str, experiment: str, artifacts, flops: bool = True) -> None:
    """Trial runs as a sweep records them (tags, the axes as metrics), losses from the Chinchilla law ``TRUE`` with
    2 % noise and counted FLOPs of exactly 3·N·D·epochs."""
    from mlflow.entities import Metric, Param, RunTag

    from sweeps import record, tracking

    c = tracking.client(uri)
    exp = c.create_experiment(experiment, artifact_location=artifacts.as_uri())
    n, d, y = _chinchilla_rows(seed=3, seeds=2)
    for i, (a, b, loss) in enumerate(zip(n, d, y)):
        seed = i % 2
        key = f"cgc-N{a:.0f}-D{b:.0f}-s{seed}-t0"
        run = c.create_run(exp, tags={record.KIND: record.KIND_TRIAL, record.TRIAL_KEY: key})
        metrics = {"n_params": a, "n_params_target": a, "n_train": b, "seed": seed, "val_loss": loss, "epochs": 10}
        if flops:
            metrics["train_flops"] = 3.0 * a * b * 10
        c.log_batch(run.info.run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                    params=[Param("arch", "cgc")], tags=[RunTag("x", "y")])
        c.set_terminated(run.info.run_id, "FINISHED")


def test_analyze_axis_compute(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    _log_trials(uri, "chin", tmp_path / "artifacts")
    out = tmp_path / "out"
    r = _cli("analyze", "--experiment", "chin", "--tracking-uri", uri, "--axis", "compute", "--law", "chinchilla",
             "--bootstrap", "200", "--holdout", "0", "--target-loss", "0.5", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    (group,) = json.loads(r.stdout)["groups"]
    fr = group["frontier"]
    assert group["name"] == "cgc joint" and group["law"] == "chinchilla"
    assert fr["cost"]["source"] == "train_flops" and fr["cost"]["k"] == pytest.approx(3.0)
    assert fr["cost"]["epochs"] == 10 and fr["cost"]["rms_log10_residual"] == pytest.approx(0, abs=1e-9)
    truth = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert fr["a"]["ci"][0] < truth < fr["a"]["ci"][1]
    assert fr["target"]["reachable"]
    report = (out / "report.md").read_text()
    assert "compute-optimal frontier, cost 30·N·D·epochs" not in report  # k is printed as fitted, at its epochs
    assert "Compute-optimal allocation" in report and "→ " + fr["verdict"]["verdict"] in report
    assert (out / "plots" / "joint-cgc_joint.png").is_file()
    from sweeps import tracking

    run = tracking.client(uri).get_run(json.loads(r.stdout)["run_id"])
    assert run.data.params["cgc_joint.verdict"] == fr["verdict"]["verdict"]
    assert run.data.metrics["cgc_joint/frontier_a"] == pytest.approx(fr["a"]["value"])
    other = _cli("analyze", "--experiment", "chin", "--tracking-uri", uri, "--cost", "6*N*D", "--out", str(out))
    assert other.returncode == 2 and "--axis compute" in other.stderr


def test_analyze_axis_compute_without_counted_flops_says_what_to_do(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    _log_trials(uri, "old", tmp_path / "artifacts", flops=False)
    base = ["analyze", "--experiment", "old", "--tracking-uri", uri, "--axis", "compute", "--law", "chinchilla",
            "--bootstrap", "0", "--out", str(tmp_path / "o")]
    r = _cli(*base)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--cost" in r.stderr, r.stderr
    ok = _cli(*base, "--cost", "6*N*D", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["groups"][0]["frontier"]["cost"]["source"] == "formula"
