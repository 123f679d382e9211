"""Records you can trust: crashes, concurrent drivers, stale claims and faults never corrupt, duplicate or mislabel
a trial (fast unit tests first, then real Ray + MLflow end-to-end runs marked slow)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gnn.errors import InputError
from sweeps import record, sweep_lock, tracking
from sweeps.spec import Point, load_spec
from waiting import wait_for

from test_sweeps import write_spec  # the tiny spec of the sweep tests

CLI = [sys.executable, "-m", "analysis.cli"]


# --- hyperparameters are drawn once per trial -------------------------------------------------------------------

def test_a_rebuilt_study_never_repeats_another_trials_draw():
    """After a crash the driver rebuilds each point's study from MLflow: trial t1 must not get t0's values."""
    from sweeps.search import PointSearcher

    point = Point("cgc", 1e4, 100, 0)
    space = {"lr": {"log_uniform": [1e-4, 1e-2]}, "weight_decay": {"uniform": [0.0, 0.1]}}
    first = PointSearcher([point], 4, space)
    t0 = first.suggest("a")["hparams"]
    again = PointSearcher([point], 4, space, done={f"{point.key}-t0": (t0, 1.0)})  # t0 FINISHED, then a crash
    t1 = again.suggest("b")
    assert t1["trial_index"] == 1 and t1["hparams"] != t0
    # and the draw of a trial is a function of its key and its point's finished trials: the same after a restart
    assert PointSearcher([point], 4, space, done={f"{point.key}-t0": (t0, 1.0)}).suggest("c")["hparams"] == \
        t1["hparams"]


def test_recorded_hyperparameters_win_over_a_new_draw():
    """A trial key that already has a run keeps that run's logged values; the study learns them at the end."""
    from dataclasses import replace

    from sweeps.search import PointSearcher

    class Record:  # a run of t0 exists with lr 0.005
        def open(self, trial, suggest):
            if trial.trial_index == 0:
                return replace(trial, hparams={"lr": 0.005}, run_id="old")
            return replace(trial, hparams=suggest(), run_id="new")

    point = Point("cgc", 1e4, 100, 0)
    s = PointSearcher([point], 2, {"lr": {"log_uniform": [1e-4, 1e-2]}}, record=Record())
    c0, c1 = s.suggest("a"), s.suggest("b")
    assert c0["hparams"] == {"lr": 0.005} and c0["run_id"] == "old" and c1["run_id"] == "new"
    s.on_trial_complete("a", {"best_val_loss": 0.5})
    s.on_trial_complete("b", {"best_val_loss": 0.7})
    trials = s.studies[point.key].get_trials()
    assert sorted(t.params["lr"] for t in trials) == sorted([0.005, c1["hparams"]["lr"]])


# --- the SQLite store ---------------------------------------------------------------------------------------------

def _open(uri: str) -> None:
    tracking.client(uri)


def test_two_processes_creating_one_sqlite_store_at_once(tmp_path):
    db = tmp_path / "new" / "mlflow.db"
    uri = f"sqlite:///{db}"
    db.parent.mkdir()
    code = ("import sys, time; from sweeps import tracking; t = float(sys.argv[2]); time.sleep(max(0, t - time.time()));"
            "c = tracking.client(sys.argv[1]); c.create_experiment(sys.argv[3]); print('ok')")
    start = time.time() + 8  # all import MLflow first, then open the new store within milliseconds
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(start), f"e{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outs]
    c = tracking.client(uri)
    assert {e.name for e in c.search_experiments()} >= {"e0", "e1", "e2"}


def test_half_created_store_is_one_line_with_the_fix(tmp_path):
    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)  # what a crashed concurrent creation leaves: some tables, no schema version
    con.execute("create table experiments (experiment_id integer primary key, name text)")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="half-created MLflow store.*delete .*mlflow.db and run again") as err:
        tracking.client(f"sqlite:///{db}")
    assert "\n" not in str(err.value)


def test_garbage_store_is_one_line(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database" * 100)
    res = subprocess.run(CLI + ["sweep", str(write_spec(tmp_path, tmp_path / "data", tracking_uri=f"sqlite:///{db}")),
                                ], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(res.stderr.strip().splitlines()) == 1 and str(db) in res.stderr


# --- one driver per sweep: claims, heartbeats, stale parents --------------------------------------------------

@pytest.fixture()
def store(tmp_path):
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return c, c.create_experiment("claims")


def _parent(c, exp, spec_hash="h", **tags):
    run = c.create_run(exp, tags={"matscale.kind": "sweep", "matscale.spec_hash": spec_hash,
                                  **sweep_lock.claim_tags(), **tags})
    return run.info.run_id


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_dead_drivers_parent_and_trials_end_killed_with_a_reason(store):
    c, exp = store
    parent = _parent(c, exp, **{"matscale.pid": str(_dead_pid())})
    child = c.create_run(exp, tags={"mlflow.parentRunId": parent, "matscale.kind": "trial"}).info.run_id
    scheduled = c.create_run(exp, tags={"mlflow.parentRunId": parent, "matscale.kind": "trial"}).info.run_id
    c.update_run(scheduled, status="SCHEDULED")
    alive = _parent(c, exp)  # this process: alive
    assert sweep_lock.expire_stale(c, exp, "h") == [parent]
    run = c.get_run(parent)
    assert run.info.status == "KILLED" and run.data.tags["matscale.end_reason"].startswith("stale: driver pid")
    assert c.get_run(child).info.status == "KILLED" and c.get_run(scheduled).info.status == "KILLED"
    assert c.get_run(alive).info.status == "RUNNING"


def test_a_remote_driver_expires_when_its_heartbeat_stops(store, monkeypatch):
    c, exp = store
    old = str(int(time.time() * 1000) - 10 * 60 * 1000)
    gone = _parent(c, exp, **{"matscale.host": "node-7", "matscale.heartbeat": old})
    beating = _parent(c, exp, **{"matscale.host": "node-8"})
    assert sweep_lock.expire_stale(c, exp, "h") == [gone]
    assert "no heartbeat from node-7" in c.get_run(gone).data.tags["matscale.end_reason"]
    assert c.get_run(beating).info.status == "RUNNING"


def test_the_later_claim_refuses_naming_the_running_sweep(store, monkeypatch):
    monkeypatch.setattr(sweep_lock, "SETTLE_S", 0.0)
    c, exp = store
    first = _parent(c, exp, **{"matscale.host": "node-8"})
    time.sleep(0.01)
    second = _parent(c, exp)
    sweep_lock.claim(c, exp, "h", first)  # the earlier claim holds
    with pytest.raises(InputError, match="already running .*node-8"):  # a later driver refuses before Ray starts
        sweep_lock.check_free(c, exp, "h")
    with pytest.raises(InputError, match=r"already running \(host node-8, pid \d+, since .*parent run " + first):
        sweep_lock.claim(c, exp, "h", second)
    assert c.get_run(second).info.lifecycle_stage == "deleted"  # a refused claim leaves nothing behind
    other_spec = _parent(c, exp, spec_hash="other")
    sweep_lock.claim(c, exp, "other", other_spec)  # another spec in the same experiment runs alongside


def test_heartbeat_refreshes_the_claim(store, monkeypatch):
    monkeypatch.setattr(sweep_lock, "HEARTBEAT_S", 0.2)
    c, exp = store
    parent = _parent(c, exp)
    before = int(c.get_run(parent).data.tags["matscale.heartbeat"])
    with sweep_lock.Heartbeat(c, parent):
        time.sleep(1.0)
    assert int(c.get_run(parent).data.tags["matscale.heartbeat"]) > before


# --- preflight: nothing is created before every check passed ---------------------------------------------------

def _one_line_exit_2(res) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_unwritable_ray_storage_creates_no_parent_run(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = write_spec(tmp_path, tmp_path / "data", storage_path=str(blocker / "ray"))
    res = subprocess.run(CLI + ["sweep", str(path)], capture_output=True, text=True, timeout=300)
    line = _one_line_exit_2(res)
    assert "field 'storage_path'" in line and "not writable" in line
    if (tmp_path / "mlflow.db").exists():  # the store may exist; it holds no run
        c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert not tracking.search_all(c, [e.experiment_id for e in c.search_experiments()])


def _read_only(folder: Path, cmd: list[str]) -> list[str]:
    """``cmd`` run with ``folder`` mounted read-only in a private mount namespace (root ignores file modes)."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a mount namespace here (unshare -m): read-only folders untestable as root")
    import shlex

    return ["unshare", "-m", "sh", "-c",
            f"mount --bind -o ro {shlex.quote(str(folder))} {shlex.quote(str(folder))} && exec {shlex.join(cmd)}"]


def test_read_only_tracking_folder_is_one_line_and_fast(tmp_path):
    db_dir = tmp_path / "store"
    db_dir.mkdir()
    tracking.client(f"sqlite:///{db_dir / 'mlflow.db'}").create_experiment("tiny")
    path = write_spec(tmp_path, tmp_path / "data", tracking_uri=f"sqlite:///{db_dir / 'mlflow.db'}")
    t = time.time()
    res = subprocess.run(_read_only(db_dir, CLI + ["sweep", str(path)]), capture_output=True, text=True, timeout=300)
    line = _one_line_exit_2(res)
    assert "not writable" in line and "field 'tracking_uri'" in line and time.time() - t < 60
    assert not (tmp_path / "ray").exists()


# --- end to end: crashes and concurrent drivers (real Ray, real MLflow) -----------------------------------------

def _runs(spec):
    c = tracking.client(tracking.normalise_uri(spec.tracking_uri))
    exp = c.get_experiment_by_name(spec.experiment)
    every = tracking.search_all(c, [exp.experiment_id])
    return c, exp.experiment_id, every


def _check_records(spec, n_trials: int, epochs: int) -> list:
    """Every trial once, FINISHED, one training per run, and logged hyperparameters = what the optimiser used."""
    c, exp_id, every = _runs(spec)
    trials = [r for r in every if r.data.tags.get("matscale.kind") == "trial"]
    keys = [r.data.tags["matscale.trial_key"] for r in trials]
    assert len(keys) == n_trials and len(set(keys)) == n_trials, sorted(keys)
    assert all(r.info.status == "FINISHED" for r in trials)
    lrs = {}
    for r in trials:
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "epoch/val_loss")]
        assert sorted(steps) == list(range(len(steps))) and len(steps) <= epochs, (r.info.run_name, steps)
        if r.data.tags.get("matscale.early_stopped"):
            continue
        used = json.loads(Path(c.download_artifacts(r.info.run_id, "metrics.json")).read_text())["trained_with"]
        assert float(r.data.params["hp.lr"]) == used["lr"] and int(r.data.params["hp.batch_size"]) == \
            used["batch_size"], r.info.run_name
        lrs.setdefault(r.data.tags["matscale.point"], []).append(r.data.params["hp.lr"])
    assert all(len(set(v)) == len(v) for v in lrs.values()), lrs  # no trial trained with another trial's draw
    for r in every:
        if r.data.tags.get("matscale.kind") == "superseded":  # a restarted trial's old run points to its new one
            assert r.info.status != "RUNNING" and c.get_run(r.data.tags["matscale.superseded_by"]).data.tags[
                "matscale.trial_key"] == r.data.tags["matscale.trial_key"]
    parents = [r for r in every if r.data.tags.get("matscale.kind") == "sweep"]
    assert not [p for p in parents if p.info.status == "RUNNING"], "an orphan parent"
    return every


def _kill_mid_sweep(spec_path: Path, spec, tmp_path: Path) -> dict:
    """Start a sweep, SIGKILL its driver once a trial FINISHED and another has trained an epoch; the runs then."""
    driver = subprocess.Popen(CLI + ["sweep", str(spec_path)], stdout=open(tmp_path / "first.log", "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    c = tracking.client(tracking.normalise_uri(spec.tracking_uri))

    def finished_and_running():
        exp = c.get_experiment_by_name(spec.experiment)
        if exp is None:
            return False
        runs = record.trial_runs(c, exp.experiment_id, spec.hash)
        return any(r.info.status == "FINISHED" for r in runs) and any(
            r.info.status == "RUNNING" and "epoch/val_loss" in r.data.metrics for r in runs)

    try:
        wait_for(finished_and_running, 300)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
        subprocess.run(["pkill", "-9", "-f", str(tmp_path)], check=False)  # stray Ray workers of that session
    exp_id = c.get_experiment_by_name(spec.experiment).experiment_id
    return {r.data.tags["matscale.trial_key"]: r.data.params for r in record.trial_runs(c, exp_id, spec.hash)}


@pytest.mark.slow
@pytest.mark.parametrize("again", [[], ["--resume"], ["--resume", "file"]], ids=["rerun", "resume", "resume-file-uri"])
def test_driver_killed_then_run_again_trains_the_logged_hyperparameters(tmp_path, again):
    storage = f"file://{tmp_path / 'ray'}" if "file" in again else str(tmp_path / "ray")
    epochs = 6
    spec_path = write_spec(tmp_path, tmp_path.parent / "shared-data", storage_path=storage,
                           budget={"epochs": epochs, "patience": 20},
                           hpo={"trials_per_point": 2, "space": {"lr": {"log_uniform": [1e-3, 3e-3]},
                                                                 "batch_size": {"choice": [16, 32]}}},
                           axes={"data_fractions": [0.5, 1.0], "n_params": [1.0e4], "seeds": [0]})
    spec = load_spec(spec_path)
    before = _kill_mid_sweep(spec_path, spec, tmp_path)
    res = subprocess.run(CLI + ["sweep", str(spec_path)] + [a for a in again if a != "file"], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    every = _check_records(spec, 4, epochs)
    after = {r.data.tags["matscale.trial_key"]: r.data.params for r in every if r.data.tags["matscale.kind"] == "trial"}
    for key, params in before.items():  # hyperparameters fixed at the first suggestion, whatever happened since
        assert {k: v for k, v in params.items() if k.startswith("hp.")} == \
            {k: v for k, v in after[key].items() if k.startswith("hp.")}, key
    killed = [r for r in every if r.data.tags.get("matscale.kind") == "sweep" and r.info.status == "KILLED"]
    if not again:  # the dead driver's parent is ended, with the reason
        assert killed and killed[0].data.tags["matscale.end_reason"].startswith("stale: driver pid")
    # nothing left: says so at once, without starting Ray
    t = time.time()
    res = subprocess.run(CLI + ["sweep", str(spec_path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "nothing to run" in res.stdout and time.time() - t < 45
    assert "Ray" not in res.stdout + res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("store_exists", [False, True], ids=["new-store", "existing-store"])
def test_two_identical_drivers_at_once_train_each_trial_once(tmp_path, store_exists):
    spec_path = write_spec(tmp_path, tmp_path.parent / "shared-data", budget={"epochs": 2, "patience": 5})
    spec = load_spec(spec_path)
    if store_exists:
        tracking.client(tracking.normalise_uri(spec.tracking_uri)).create_experiment("something-else")
    procs = [subprocess.Popen(CLI + ["sweep", str(spec_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [o[1][-2000:] for o in outs]
    refused = next(o for p, o in zip(procs, outs) if p.returncode == 2)[1]
    errors = [line for line in refused.splitlines() if line.startswith("error:")]  # (besides data progress bars)
    assert "Traceback" not in refused and len(errors) == 1, refused[-3000:]
    assert "already running (host" in errors[0] and "pid" in errors[0] and "since" in errors[0], errors
    every = _check_records(spec, 4, 2)
    parents = [r for r in every if r.data.tags.get("matscale.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
               for r in every if r.data.tags.get("matscale.kind") == "trial")


# --- security -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_local_ray_listens_on_loopback_only():
    code = """
import ipaddress, psutil, ray
from sweeps.driver import _ray_init
_ray_init("local")
me = psutil.Process()
pids = {p.pid for p in me.children(recursive=True)} | {me.pid}
bound = {c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids}
print(ray.util.get_node_ip_address(), sorted(bound))
ray.shutdown()
assert bound and all(ipaddress.ip_address(a.removeprefix("::ffff:")).is_loopback for a in bound), bound
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.startswith("127.0.0.1 ")
