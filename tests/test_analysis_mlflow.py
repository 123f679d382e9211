"""The analysis reads what a real (tiny) sweep wrote to MLflow and writes its results back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from sweeps import tracking

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    import ray

    from sweeps.driver import run_sweep
    from sweeps.spec import load_spec

    folder = tmp_path_factory.mktemp("swept")
    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "experiment": "analysed",
        "dataset": {"synthetic": {"n": 400, "points": 21, "seed": 0}, "data_dir": str(folder / "data")},
        "archs": ["cgc"],
        "axes": {"data_fractions": [0.25, 0.5, 0.75, 1.0], "n_params": [1.0e4], "seeds": [0, 1]},
        "budget": {"epochs": 3, "patience": 5},
        "hpo": {"trials_per_point": 1, "space": {"lr": 2.0e-3}},
        "system_metrics": False,
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
        "storage_path": str(folder / "ray"),
    }))
    spec = load_spec(spec_path)
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        summary = run_sweep(spec, progress=False)
    finally:
        ray.shutdown()
    assert summary["status"] == "FINISHED"
    return spec, folder


def test_load_and_aggregate_a_real_sweep(swept):
    from analysis.runs import aggregate, load_runs

    spec, _ = swept
    df, _ = load_runs(spec.tracking_uri, spec.experiment)
    assert len(df) == 8 and set(df["status"]) == {"FINISHED"}
    best, points, problems = aggregate(df)
    assert len(best) == 8 and len(points) == 4 and problems.empty
    assert (points["seeds"] == 2).all() and points["n_train"].is_monotonic_increasing


def test_analyze_writes_outputs_and_an_analysis_run(swept, tmp_path):
    spec, _ = swept
    out = tmp_path / "analysis"
    res = subprocess.run([sys.executable, "-m", "analysis.cli", "analyze", "--experiment", spec.experiment,
                          "--tracking-uri", spec.tracking_uri, "--out", str(out), "--bootstrap", "100", "--json"],
                         capture_output=True, text=True, check=True)
    r = json.loads(res.stdout)
    (group,) = r["groups"]
    assert group["n_points"] == 4 and group["n_runs"] == 8 and group["law"] in ("power", "floor", "broken")
    assert (out / "fits.json").exists() and (out / "report.md").exists()
    assert len(list((out / "plots").glob("*.png"))) == 1
    assert "cgc N=1e4" in (out / "report.md").read_text()
    c = tracking.client(tracking.normalise_uri(spec.tracking_uri))
    run = c.get_run(r["run_id"])
    assert run.data.tags["matscale.kind"] == "analysis" and run.info.status == "FINISHED"
    assert run.data.params["cgc_N1e4.law"] == group["law"]
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"fits.json", "report.md", "plots"} <= arts
