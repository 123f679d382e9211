"""cluster/: shipped configs validate, broken ones are rejected; the tracking server binds loopback; and a real
multi-node run (two `ray start` nodes with token auth, a real MLflow server, `ray job submit`)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from analysis.cli import main as matscale
from sweeps.cluster_check import check_file
from sweeps.server import server_command
from waiting import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "cluster").glob("*.yaml")) + sorted((ROOT / "cluster" / "kuberay").glob("*.yaml"))
PAPER_SPEC = ROOT / "sweeps" / "specs" / "dielectric-paper.yaml"
BIN = Path(sys.executable).parent


def test_there_are_configs_for_every_target():
    names = {p.relative_to(ROOT / "cluster").as_posix() for p in CONFIGS}
    assert {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path, capsys):
    assert matscale(["cluster", "check", str(path), "--spec", str(PAPER_SPEC)]) == 0
    assert "ok" in capsys.readouterr().out


def test_every_shipped_spec_loads(monkeypatch):
    from sweeps.spec import load_spec

    monkeypatch.setenv("MATSCALE_SHARED", "/mnt/shared")
    monkeypatch.setenv("MATSCALE_STORAGE", "s3://bucket/ray")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://10.0.0.5:5000")
    for path in sorted((ROOT / "sweeps" / "specs").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.experiment and spec.n_params and spec.seeds, path


def test_an_unset_variable_in_a_spec_is_named(monkeypatch, capsys):
    monkeypatch.delenv("MATSCALE_STORAGE", raising=False)
    monkeypatch.setenv("MATSCALE_SHARED", "/mnt/shared")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://10.0.0.5:5000")
    assert matscale(["sweep", str(PAPER_SPEC), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "storage_path" in err and "MATSCALE_STORAGE is not set" in err and "Traceback" not in err


def _aws() -> dict:
    return yaml.safe_load((ROOT / "cluster" / "aws-gpu.yaml").read_text())


def _rejected(tmp_path, config: dict, capsys, spec: Path | None = PAPER_SPEC) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["cluster", "check", str(path)] + (["--spec", str(spec)] if spec else [])
    assert matscale(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}") and "\n" not in err and "Traceback" not in err
    return err


def test_unknown_key_is_rejected_by_rays_schema(tmp_path, capsys):
    config = _aws()
    config["max_wrokers"] = 3
    err = _rejected(tmp_path, config, capsys)
    assert "Ray rejects the config" in err and "max_wrokers" in err


def test_no_gpu_worker_type_for_a_gpu_spec_is_rejected(tmp_path, capsys):
    config = _aws()
    config["available_node_types"]["gpu_worker"]["resources"] = {"CPU": 8}
    err = _rejected(tmp_path, config, capsys)
    assert "no worker type can hold one trial" in err and "GPU" in err


def test_local_tracking_file_on_a_multi_node_cluster_is_rejected(tmp_path, capsys):
    config = _aws()
    config["setup_commands"] = [c.replace("--tracking-uri http://HEAD_IP:5000", "--tracking-uri sqlite:///runs/mlflow.db")
                                for c in config["setup_commands"]]
    err = _rejected(tmp_path, config, capsys)
    assert "local file on a multi-node cluster" in err and "MLFLOW_TRACKING_URI" in err


def test_unshared_storage_missing_token_and_public_ports_are_rejected(tmp_path, capsys):
    config = _aws()
    config["setup_commands"] = [c.replace("--storage s3://my-matscale-bucket/ray", "--storage /home/ubuntu/ray")
                                for c in config["setup_commands"]]
    assert "not shared between nodes" in _rejected(tmp_path, config, capsys)

    config = yaml.safe_load((ROOT / "cluster" / "onprem.yaml").read_text())
    config["setup_commands"] = ["pip install -e ~/matscale && echo export MLFLOW_TRACKING_URI=http://HEAD_IP:5000"]
    assert "token authentication is off" in _rejected(tmp_path, config, capsys, spec=None)

    config = _aws()
    config["provider"]["security_group"] = {"IpPermissions": [
        {"FromPort": 5000, "ToPort": 5000, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}
    assert "opens port 5000 to the internet" in _rejected(tmp_path, config, capsys)

    config = _aws()
    config["head_start_ray_commands"][-1] += " --dashboard-host=0.0.0.0"
    assert "binds a server to every interface" in _rejected(tmp_path, config, capsys)


def test_kuberay_without_token_or_with_a_public_service_is_rejected(tmp_path, capsys):
    docs = list(yaml.safe_load_all((ROOT / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    del cluster["spec"]["authOptions"]
    path = tmp_path / "rc.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    assert matscale(["cluster", "check", str(path)]) == 2
    assert "token authentication is off" in capsys.readouterr().err

    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow"},
                                    "spec": {"type": "LoadBalancer", "ports": [{"port": 5000}]}}))
    with pytest.raises(ValueError, match="LoadBalancer exposes the cluster"):
        check_file(path)


def test_server_refuses_every_interface_unless_told(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default SQLite store's folder (runs/) is made in the working folder
    with pytest.raises(ValueError, match="every interface"):
        server_command(host="0.0.0.0")
    assert "0.0.0.0" in server_command(host="0.0.0.0", public=True)
    assert server_command()[server_command().index("--host") + 1] == "127.0.0.1"


def _non_loopback_address() -> str | None:
    """An address of this machine other than loopback (the one its default route uses), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: UDP connect only picks the route
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def _answers(url: str) -> bool:
    """The server answered at all (401 included: token auth refuses a request without the token)."""
    try:
        urllib.request.urlopen(url, timeout=2).read()
    except urllib.error.HTTPError:
        pass
    return True


def _start_server(tmp_path, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "matscale"), "server", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--artifacts-destination", str(tmp_path / "artifacts"), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, 9)


@pytest.mark.slow
def test_default_server_is_not_reachable_on_a_non_loopback_address(tmp_path):
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address to probe")
    port = free_port()
    server = _start_server(tmp_path, port)
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read() == b"OK", 90)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((addr, port), timeout=5).close()
    finally:
        _stop(server)


@pytest.mark.slow
def _stop_ray(temp: Path) -> None:
    """End the Ray processes started with ``--temp-dir temp`` (their command lines name it) and their children
    (workers rename themselves ``ray::…``), by process id."""
    import psutil

    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid not in me and any(str(temp) in arg for arg in proc.info["cmdline"] or []):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    procs = {p.pid: p for root in roots for p in [root, *_children(root)]}.values()
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs), timeout=20)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _children(proc) -> list:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_multi_node_run_with_token_auth_and_ray_job_submit(tmp_path):
    """Head + worker started with `ray start` on loopback (token auth), `matscale server` with SQLite, a tiny sweep
    submitted with `ray job submit`: trials on both nodes, every run in the server; a wrong token is refused."""
    import mlflow

    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash, mport = 26000 + secrets.randbelow(2000), 28000 + secrets.randbelow(2000), free_port()
    ray = str(BIN / "ray")
    temp = Path("/tmp") / f"matscale-ray-{secrets.token_hex(3)}"  # short: Ray's socket paths have a length limit
    server = _start_server(tmp_path, mport)
    try:
        subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
                        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "1",
                        "--temp-dir", str(temp), "--disable-usage-stats"], env=env, check=True,
                       capture_output=True, timeout=180)
        subprocess.run([ray, "start", "--address", f"127.0.0.1:{gcs}", "--node-ip-address", "127.0.0.1",
                        "--num-cpus", "1"], env=env, check=True, capture_output=True, timeout=180)
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{mport}/health", timeout=2).read() == b"OK", 90)
        uri = f"http://127.0.0.1:{mport}"
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump({
            "experiment": "multinode", "archs": ["cgc"],
            "dataset": {"synthetic": {"n": 300, "points": 21, "seed": 0}, "data_dir": str(tmp_path / "data")},
            "axes": {"n_train": [100, 200], "n_params": [1.0e4], "seeds": [0, 1]},
            "budget": {"epochs": 3, "patience": 5}, "hpo": {"trials_per_point": 1, "space": {"lr": 2.0e-3}},
            "system_metrics": False, "tracking_uri": uri, "storage_path": str(tmp_path / "ray")}))
        address = f"http://127.0.0.1:{dash}"
        wait_for(lambda: _answers(f"{address}/api/version"), 60)
        bad = subprocess.run([ray, "job", "submit", "--address", address, "--", "echo", "hi"],
                             env={**env, "RAY_AUTH_TOKEN": "0" * 32}, capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "token" in (bad.stdout + bad.stderr).lower()
        for _ in range(24):  # the head's job agent starts after its dashboard; a busy machine delays it
            job = subprocess.run([ray, "job", "submit", "--address", address, "--", sys.executable,
                                  str(ROOT / "sweeps" / "run.py"), "--spec", str(spec)],
                                 env=env, capture_output=True, text=True, timeout=500)
            if "No available agent to submit job" not in job.stdout + job.stderr:
                break
            time.sleep(5)
        assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
        assert "succeeded" in job.stdout + job.stderr
        c = mlflow.MlflowClient(uri)
        exp = c.get_experiment_by_name("multinode")
        runs = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("matscale.kind") == "trial"]
        assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
        assert len({r.data.tags["matscale.node_id"] for r in runs}) == 2  # both nodes ran trials
    finally:
        _stop_ray(temp)  # this cluster's processes only: `ray stop` would end every Ray on the machine
        _stop(server)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow  # the dry run builds the demo's store and times its models
def test_run_script_finds_a_relative_spec_in_the_checkout(tmp_path):
    """`ray submit CLUSTER.yaml sweeps/run.py -- --spec sweeps/specs/X.yaml` runs the script from the home directory."""
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), "--spec", "sweeps/specs/demo.yaml",
                          "--dry-run", "--address", "local"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "total cost" in out.stdout


def test_rays_default_start_commands_are_caught_binding_the_dashboard_publicly(tmp_path, capsys):
    config = _aws()
    del config["head_start_ray_commands"]  # Ray's AWS defaults start the dashboard with --dashboard-host=0.0.0.0
    assert "Ray's default start commands" in _rejected(tmp_path, config, capsys)
    assert matscale(["cluster", "check", str(tmp_path)]) == 2  # a folder, not a file: one line, no traceback
    assert "cannot read it" in capsys.readouterr().err
