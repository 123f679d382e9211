"""End-to-end sweep tests with real Ray and real MLflow (SQLite store and a real `mlflow server`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml

from gnn.errors import InputError
from sweeps import record, tracking
from sweeps.driver import run_sweep
from sweeps.spec import load_spec
from waiting import free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep-data")


def write_spec(folder: Path, data_dir: Path, **changes) -> Path:
    spec = {
        "experiment": "tiny",
        "dataset": {"synthetic": {"n": 300, "points": 21, "seed": 0}, "data_dir": str(data_dir)},
        "archs": ["cgc"],
        "axes": {"data_fractions": [0.5, 1.0], "n_params": [1.0e4], "seeds": [0]},
        "budget": {"epochs": 2, "patience": 5},
        "hpo": {"trials_per_point": 2, "space": {"lr": {"log_uniform": [1.0e-3, 3.0e-3]}, "batch_size": 32}},
        "system_metrics": False,
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
        "storage_path": str(folder / "ray"),
    }
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def child_runs(spec):
    c = tracking.client(tracking.normalise_uri(spec.tracking_uri))
    exp = c.get_experiment_by_name(spec.experiment)
    return c, exp, record.trial_runs(c, exp.experiment_id, spec.hash)


@pytest.fixture()
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _bad_specs():
    return [
        ({"colour": "red"}, "colour", "unknown key"),
        ({"archs": ["gat"]}, "archs", "unknown arch"),
        ({"axes": {"data_fractions": [], "n_params": [1e4]}}, "axes.data_fractions", "non-empty"),
        ({"axes": {"data_fractions": [0.5, 1.5], "n_params": [1e4]}}, "axes.data_fractions", r"\(0, 1\]"),
        ({"axes": {"n_train": [100000], "n_params": [1e4]}}, "axes.n_train", "larger than the training split"),
        ({"axes": {"n_train": [100], "n_params": [100]}}, "axes.n_params", "cannot be as small"),
        ({"tracking_uri": "http://127.0.0.1:9"}, "tracking_uri", "not reachable"),
        ({"hpo": {"space": {"momentum": 0.9}}}, "hpo.space.momentum", "unknown key"),
    ]


@pytest.mark.parametrize("change,field,message", _bad_specs(), ids=[b[1] for b in _bad_specs()])
def test_bad_specs_fail_before_any_trial(tmp_path, data_dir, change, field, message):
    path = write_spec(tmp_path, data_dir, **change)
    with pytest.raises(InputError, match=message) as err:
        run_sweep(load_spec(path), progress=False)
    assert f"field '{field}'" in str(err.value) and str(path) in str(err.value)
    assert not (tmp_path / "ray").exists()


def test_more_gpus_than_the_cluster_has(tmp_path, data_dir, local_ray):
    path = write_spec(tmp_path, data_dir, resources={"cpu": 1, "gpu": 2})
    with pytest.raises(InputError, match="field 'resources.gpu'.*largest node has 0"):
        run_sweep(load_spec(path), progress=False)


def test_cli_bad_spec_is_one_line(tmp_path, data_dir):
    path = write_spec(tmp_path, data_dir, archs=["gat"])
    res = subprocess.run([sys.executable, "-m", "analysis.cli", "sweep", str(path)], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"error: {path}: field 'archs': unknown arch 'gat'; choose from "
                                               "cgc, transformer"]


def test_dry_run_lists_every_trial_and_cost(tmp_path, data_dir):
    path = write_spec(tmp_path, data_dir, archs=["cgc", "transformer"])
    res = subprocess.run([sys.executable, "-m", "analysis.cli", "sweep", str(path), "--dry-run"], capture_output=True,
                         text=True, check=True)
    lines = [line for line in res.stdout.splitlines() if line.startswith(("cgc-", "transformer-"))]
    assert len(lines) == 2 * 2 * 2  # archs × data sizes × trials
    assert all(line.split()[5] != "?" for line in lines)  # every trial timed (tests/test_estimate.py: the details)
    assert "total cost" in res.stdout and "CPU-hours" in res.stdout and not (tmp_path / "mlflow.db").exists()


def test_tiny_sweep_tracks_every_trial_and_never_duplicates(tmp_path, data_dir, local_ray):
    spec = load_spec(write_spec(tmp_path, data_dir, save_checkpoint=True, hpo={
        "trials_per_point": 2, "space": {"lr": {"log_uniform": [1e-3, 3e-3]}, "batch_size": 32},
        "early_stopping": {"type": "asha", "grace_epochs": 1}}))
    summary = run_sweep(spec, progress=False)
    assert summary["status"] == "FINISHED" and summary["planned"] == 4
    c, exp, runs = child_runs(spec)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    parent = c.get_run(summary["parent_run_id"])
    assert parent.data.tags["matscale.stage"] == "grid" and parent.data.tags["matscale.spec_hash"] == spec.hash
    assert len(parent.data.tags["matscale.git_commit"]) >= 7
    assert "spec.yaml" in [a.path for a in c.list_artifacts(parent.info.run_id)]
    keys = set()
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.info.run_name == r.data.tags["matscale.trial_key"]
        keys.add(r.data.tags["matscale.trial_key"])
        p, m = r.data.params, r.data.metrics
        assert p["arch"] == "cgc" and float(p["n_params_target"]) == 1e4 and abs(int(p["n_params"]) - 1e4) <= 300
        assert 1e-3 <= float(p["hp.lr"]) <= 3e-3 and p["hp.batch_size"] == "32"
        assert m["n_train"] == int(p["n_train"]) and "val_loss" in m
        history = c.get_metric_history(r.info.run_id, "epoch/val_loss")
        if r.data.tags.get("matscale.early_stopped"):  # ASHA stopped it: its best epoch so far is its result
            assert m["val_loss"] == min(h.value for h in history) and m["epochs"] == len(history) < 2
            continue
        assert {"test_loss", "val_eps_sc", "test_drude_mae"} <= set(m) and len(history) == 2
        assert m["train_flops"] == m["flops_per_sample"] * m["n_train"] * 2 > 0 and m["device_hours"] > 0
        assert {"metrics.json", "learning_curve.png", "best_model.pt"} <= {a.path for a in c.list_artifacts(r.info.run_id)}
        assert not any(k.startswith(("time_", "training_iteration", "config/")) for k in m)  # no Tune bookkeeping
    assert len(keys) == 4
    from gnn.train import load_model

    full = next(r for r in runs if not r.data.tags.get("matscale.early_stopped"))
    model = load_model(c.download_artifacts(full.info.run_id, "best_model.pt", str(tmp_path)))
    assert model.n_params == int(full.data.params["n_params"]) == int(full.data.metrics["n_params"])
    # the scaling axes filter numerically, and each point is found by its tag
    big = tracking.search_all(c, [exp.experiment_id], "metrics.n_train > 200 and tags.`matscale.kind` = 'trial'")
    assert len(big) == 2 and {r.data.tags["matscale.point"] for r in big} == {"cgc-N1e4-D241-s0"}
    # re-running the same spec launches nothing
    again = run_sweep(spec, progress=False)
    assert again["planned"] == 0 and again["parent_run_id"] is None
    assert len(child_runs(spec)[2]) == 4


def test_diverging_trials_end_failed_with_a_reason_and_the_sweep_goes_on(tmp_path, data_dir, local_ray):
    spec = load_spec(write_spec(tmp_path, data_dir, hpo={"trials_per_point": 1, "space": {"lr": 1.0e30}}))
    summary = run_sweep(spec, progress=False)
    assert summary["status"] == "FAILED" and summary["failed"] == 2
    _, _, runs = child_runs(spec)
    assert len(runs) == 2 and all(r.info.status == "FAILED" for r in runs)  # both points ran
    assert all(r.data.tags["matscale.failure_reason"].startswith("diverged: loss is nan") for r in runs)


def test_sweep_against_a_real_mlflow_server(tmp_path, data_dir, local_ray):
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(uri + "/health", timeout=2).read(), 90)
        spec = load_spec(write_spec(tmp_path, data_dir, tracking_uri=uri,
                                    axes={"n_train": [100], "n_params": [1e4], "seeds": [0]}))
        summary = run_sweep(spec, progress=False)
        assert summary["status"] == "FINISHED"
        _, _, runs = child_runs(spec)
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
        assert all(r.data.metrics["n_train"] == 100 for r in runs)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path, data_dir):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address)
        spec = load_spec(write_spec(tmp_path, data_dir, budget={"epochs": 4, "patience": 5}))
        summary = run_sweep(spec, address=cluster.address, progress=False)
        assert summary["status"] == "FINISHED"
        _, _, runs = child_runs(spec)
        assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
        assert len({r.data.tags["matscale.node_id"] for r in runs}) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_worker_node_killed_mid_sweep_every_point_finishes_once(tmp_path, data_dir):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address)
        worker_id = next(n["NodeID"] for n in ray.nodes() if n["NodeManagerPort"] == worker.node_manager_port)
        spec = load_spec(write_spec(tmp_path, data_dir, budget={"epochs": 12, "patience": 20},
                                    dataset={"synthetic": {"n": 1500, "points": 21, "seed": 0},
                                             "data_dir": str(data_dir)}))
        result = {}
        thread = threading.Thread(target=lambda: result.update(run_sweep(spec, address=cluster.address,
                                                                         progress=False)))
        thread.start()
        c = tracking.client(tracking.normalise_uri(spec.tracking_uri))

        def training_on_worker():
            exp = c.get_experiment_by_name(spec.experiment)
            if exp is None:
                return False
            for r in record.trial_runs(c, exp.experiment_id, spec.hash, "RUNNING"):
                if r.data.tags.get("matscale.node_id") == worker_id and \
                        len(c.get_metric_history(r.info.run_id, "epoch/val_loss")) >= 2:
                    return r.info.run_id
            return False

        victim = wait_for(training_on_worker, 180)
        cluster.remove_node(worker, allow_graceful=False)
        thread.join(600)
        assert not thread.is_alive()
        _, _, runs = child_runs(spec)
        keys = [r.data.tags["matscale.trial_key"] for r in runs]
        assert len(keys) == 4 and len(set(keys)) == 4, "a point was duplicated"
        assert all(r.info.status == "FINISHED" for r in runs)
        retried = c.get_run(victim)  # the interrupted trial kept its run and resumed mid-way
        assert retried.info.status == "FINISHED" and retried.data.tags["matscale.node_id"] != worker_id
        history = c.get_metric_history(victim, "epoch/val_loss")
        assert sorted({m.step for m in history}) == list(range(12))
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_driver_killed_then_resume_runs_only_the_missing_points(tmp_path, data_dir):
    spec_path = write_spec(tmp_path, data_dir, budget={"epochs": 6, "patience": 20},
                           axes={"data_fractions": [0.25, 0.5, 1.0], "n_params": [1.0e4], "seeds": [0]})
    spec = load_spec(spec_path)
    cmd = [sys.executable, "-m", "analysis.cli", "sweep", str(spec_path)]
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    c = tracking.client(tracking.normalise_uri(spec.tracking_uri))

    def some_finished():
        exp = c.get_experiment_by_name(spec.experiment)
        return exp is not None and len(record.trial_runs(c, exp.experiment_id, spec.hash, "FINISHED")) >= 1

    try:
        wait_for(some_finished, 240)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        driver.wait(30)
    subprocess.run(["pkill", "-9", "-f", str(tmp_path)], check=False)  # stray Ray workers of that session
    exp_id = c.get_experiment_by_name(spec.experiment).experiment_id
    before = {r.data.tags["matscale.trial_key"]: r.info.run_id
              for r in record.trial_runs(c, exp_id, spec.hash, "FINISHED")}
    assert 1 <= len(before) < 6
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = record.trial_runs(c, exp_id, spec.hash)
    keys = [r.data.tags["matscale.trial_key"] for r in runs]
    assert len(keys) == 6 and len(set(keys)) == 6, "a point was duplicated"
    assert all(r.info.status == "FINISHED" for r in runs)
    for key, run_id in before.items():  # finished points were not run again
        run = next(r for r in runs if r.data.tags["matscale.trial_key"] == key)
        assert run.info.run_id == run_id
        assert len(c.get_metric_history(run_id, "epoch/val_loss")) == 6


def test_ctrl_c_marks_running_trials_killed(tmp_path, data_dir):
    spec_path = write_spec(tmp_path, data_dir, budget={"epochs": 40, "patience": 50},
                           dataset={"synthetic": {"n": 1500, "points": 21, "seed": 0}, "data_dir": str(data_dir)})
    spec = load_spec(spec_path)
    driver = subprocess.Popen([sys.executable, "-m", "analysis.cli", "sweep", str(spec_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    c = tracking.client(tracking.normalise_uri(spec.tracking_uri))

    def training():
        exp = c.get_experiment_by_name(spec.experiment)
        return exp is not None and any(len(c.get_metric_history(r.info.run_id, "epoch/val_loss")) >= 2
                                       for r in record.trial_runs(c, exp.experiment_id, spec.hash, "RUNNING"))

    try:
        wait_for(training, 240)
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130 and "--resume" in out
    exp_id = c.get_experiment_by_name(spec.experiment).experiment_id
    statuses = [r.info.status for r in record.trial_runs(c, exp_id, spec.hash)]
    assert "RUNNING" not in statuses and "KILLED" in statuses
    parent = tracking.search_all(c, [exp_id], "tags.`matscale.kind` = 'sweep'")
    assert [p.info.status for p in parent] == ["KILLED"]
