"""Transfer and coverage sweeps end to end: real Ray, real MLflow (SQLite), then their analyses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from gnn.errors import InputError
from sweeps import record, tracking
from sweeps.driver import run_sweep, store_location
from sweeps.spec import load_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("variant-data")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _write(folder: Path, spec: dict) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _common(folder: Path, data_dir: Path) -> dict:
    return {"archs": ["cgc"], "budget": {"epochs": 2, "patience": 5},
            "hpo": {"trials_per_point": 1, "space": {"lr": 2.0e-3, "batch_size": 16}}, "system_metrics": False,
            "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "storage_path": str(folder / "ray")}


def _trial_runs(spec):
    c = tracking.client(tracking.normalise_uri(spec.tracking_uri))
    exp = c.get_experiment_by_name(spec.experiment)
    return c, record.trial_runs(c, exp.experiment_id, spec.hash)


def test_transfer_sweep_links_baselines_tracks_both_stages_and_fits_the_law(tmp_path, data_dir, local_ray):
    from analysis.experiment import analyze_experiment

    spec_dict = {"experiment": "transfer", **_common(tmp_path, data_dir),
                 "dataset": {"synthetic": {"n": 150, "points": 11, "seed": 5, "noise": 0.1,
                                           "gap": {"shift_ev": 0.4, "broaden": 1.5}}, "data_dir": str(data_dir)},
                 "transfer": {"source": {"synthetic": {"n": 300, "points": 11, "seed": 0}},
                              "strategy": "freeze:1", "pretrain": {"epochs": 2, "batch_size": 16}},
                 "axes": {"source_n": [40, 80, 160, 230], "target_n": [40], "n_params": [1.0e4], "seeds": [0]}}
    spec = load_spec(_write(tmp_path, spec_dict))
    summary = run_sweep(spec, progress=False)
    assert summary["status"] == record.FINISHED
    c, runs = _trial_runs(spec)
    assert len(runs) == 5 and {r.info.status for r in runs} == {record.FINISHED}
    by_kind = {}
    for r in runs:
        by_kind.setdefault(r.data.tags["matscale.transfer"], []).append(r)
    (baseline,), pretrained = by_kind["baseline"], by_kind["pretrained"]
    assert baseline.data.metrics["source_n"] == 0 and baseline.data.params["strategy"] == "none"
    assert not any(k.startswith("pretrain") for k in baseline.data.metrics)
    assert sorted(r.data.metrics["source_n"] for r in pretrained) == [40, 80, 160, 230]
    for r in pretrained:  # linked to the baseline, both stages in the one run
        assert r.data.tags["matscale.baseline_point"] == baseline.data.tags["matscale.point"]
        assert r.data.params["strategy"] == "freeze:1" and r.data.params["source_store"] == str(
            store_location(spec, source=True))
        assert len(c.get_metric_history(r.info.run_id, "pretrain/epoch/val_loss")) == 2
        assert len(c.get_metric_history(r.info.run_id, "epoch/val_loss")) >= 1
        assert r.data.metrics["pretrain_n_train"] == r.data.metrics["source_n"]
        assert r.data.metrics["n_trainable"] < r.data.metrics["n_params"]

    res = analyze_experiment("transfer", spec.tracking_uri, axis="transfer", out=tmp_path / "an", n_boot=100,
                             target=0.5, verbose=False)
    (group,) = res["groups"]
    assert group["fitted"] and set(group["params"]) == {"alpha", "C", "D"} and group["params"]["C"] >= 0
    assert group["baseline"]["loss"] == pytest.approx(baseline.data.metrics["val_loss"])
    assert [e["source_n"] for e in group["equivalent"]] == [40, 80, 160, 230]
    assert (tmp_path / "an" / "report.md").read_text().count("L = D n^-alpha + C") >= 1
    run = c.get_run(res["run_id"])
    assert run.data.tags["matscale.axis"] == "transfer" and any(k.endswith("/alpha") for k in run.data.metrics)

    too_big = load_spec(_write(tmp_path, {**spec_dict, "axes": {**spec_dict["axes"], "source_n": [5000]}}))
    with pytest.raises(InputError, match="field 'axes.source_n'.*larger than the source's training split"):
        run_sweep(too_big, progress=False)


def test_coverage_sweep_trains_on_the_promised_subsets_and_reports_per_strategy(tmp_path, data_dir, local_ray):
    from analysis.experiment import analyze_experiment
    from gnn import subsets
    from gnn.splits import grouped_split
    from gnn.store import Store

    strategies = ["random", "exclude:contains:Fe", "diverse"]
    spec = load_spec(_write(tmp_path, {
        "experiment": "coverage", **_common(tmp_path, data_dir),
        "dataset": {"synthetic": {"n": 300, "points": 11, "seed": 0}, "data_dir": str(data_dir)},
        "axes": {"n_train": [40, 80], "n_params": [1.0e4], "seeds": [0, 1], "subset": strategies}}))
    assert run_sweep(spec, progress=False)["status"] == record.FINISHED
    c, runs = _trial_runs(spec)
    assert len(runs) == 12
    store = Store(store_location(spec))
    train = grouped_split(store.formulas)["train"]
    for r in runs:
        subset, n = r.data.params["subset"], int(r.data.metrics["n_train"])
        assert r.data.tags["matscale.subset"] == subset and subset in strategies
        expected = subsets.select(store, train, subset, n_train=n)  # what the strategy promises
        assert r.data.params["subset_sha"] == subsets.subset_sha(store, expected)
        assert np.isfinite(r.data.metrics["subset_diversity"])

    res = analyze_experiment("coverage", spec.tracking_uri, axis="coverage", out=tmp_path / "an", n_boot=100,
                             verbose=False)
    (group,) = res["groups"]
    assert sorted({row["subset"] for row in group["table"]}) == sorted(strategies)
    assert all(row["seeds"] == 2 for row in group["table"]) and len(group["table"]) == 6
    div = {(row["subset"], row["n_train"]): row["diversity"] for row in group["table"]}
    assert div[("diverse", 40)] > div[("random", 40)]  # farthest-point sampling is what it says
    assert (tmp_path / "an" / "plots" / group["plot"]).exists() and "FLAG" in (tmp_path / "an" / "report.md").read_text() \
        or "No strategy or size raised the loss" in (tmp_path / "an" / "report.md").read_text()
    with pytest.raises(InputError, match="subset=diverse: .*too few distinct points"):  # one curve per strategy
        analyze_experiment("coverage", spec.tracking_uri, axis="data", out=tmp_path / "an2", n_boot=50, verbose=False)
