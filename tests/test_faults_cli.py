"""Faults of the reading and serving commands: bad numbers for ``fit``/``analyze``, unreachable or missing tracking
stores, ``matscale server``'s exposure rules, and passwords in URIs kept out of every line printed.

Every CLI case runs once per module through ``matscale``'s main in this process, and the main ones also through
the real entry point (``python -m analysis.cli``) as subprocesses, concurrently; servers started by the slow tests are
stopped by their process id.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from gnn.errors import InputError
from waiting import free_port

SECRET = "s3cret-Pw!long"  # in URIs below: must never be printed
BIN = Path(sys.executable).parent
CURVE = ("model,axis,n,loss\n"
         + "".join(f"A,data,{n},{(n / 30) ** -0.3:.5f}\n" for n in (100, 200, 400, 800, 1600, 3200))
         + "".join(f"B,data,{n},{2 * (n / 30) ** -0.2:.5f}\n" for n in (150, 300, 600))
         + "".join(f"A,params,{n},{5 * (n / 30) ** -0.4:.5f}\n" for n in (100, 300, 900)))


def _env() -> dict:
    """This environment without MLflow settings that would change what the commands read."""
    env = dict(os.environ)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    return env


def _matscale(args: list[str], cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> dict:
    """Run the real entry point; exit code, output and wall time."""
    start = time.time()
    res = subprocess.run([sys.executable, "-m", "analysis.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env=env or _env())
    return {"rc": res.returncode, "out": res.stdout, "err": res.stderr, "s": time.time() - start}


def _in_process(args: list, cwd: Path) -> dict:
    """``matscale``'s main in this process, in ``cwd``: exit code, output (a traceback if it raised) and time."""
    from analysis.cli import main

    out, err, here, start = io.StringIO(), io.StringIO(), os.getcwd(), time.time()
    try:
        os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                rc = main([str(a) for a in args])
            except SystemExit as exc:
                rc = exc.code
            except Exception:  # noqa: BLE001 - a bug: shown as the traceback the script would print
                err.write(traceback.format_exc())
                rc = 1
    finally:
        os.chdir(here)
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue(), "s": time.time() - start}


def _one_line(res: dict) -> str:
    """The single line of stderr of a command that must fail with exit status 2 and no traceback."""
    assert res["rc"] == 2 and "Traceback" not in res["err"], res["err"][-3000:]
    lines = res["err"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ------------------------------------------------------------------------------------------ CLI cases, run once

def _cli_cases(tmp: Path) -> dict:
    """name → (arguments, working folder): every fast CLI case of this module (all of it under ``tmp``)."""
    csv = tmp / "curve.csv"
    csv.write_text(CURVE)
    fit = ["fit", csv, "--x", "n", "--y", "loss"]
    one = ["--where", "model=A", "axis=data"]
    missing = f"sqlite:///{tmp / 'nope' / 'mlflow.db'}"
    cases = {
        "fit_bootstrap_negative": (fit + one + ["--bootstrap", "-5"], tmp),
        "fit_bootstrap_too_few": (fit + one + ["--bootstrap", "5"], tmp),
        "fit_holdout_too_large": (fit + one + ["--holdout", "10", "--bootstrap", "0"], tmp),
        "fit_holdout_negative": (fit + one + ["--holdout", "-1", "--bootstrap", "0"], tmp),
        "fit_seed_negative": (fit + one + ["--seed", "-1", "--bootstrap", "0"], tmp),
        "fit_target_nan": (fit + one + ["--target", "nan", "--bootstrap", "0"], tmp),
        "fit_target_negative": (fit + one + ["--target", "-0.5", "--bootstrap", "0"], tmp),
        "fit_where_repeated": (fit + ["--where", "model=A", "--where", "axis=data", "--bootstrap", "0", "--json"],
                               tmp),
        "fit_group_repeated": (fit + ["--group", "model", "--group", "axis", "--bootstrap", "0", "--json"], tmp),
        "analyze_bootstrap_negative": (["analyze", "--experiment", "e", "--tracking-uri", missing, "--bootstrap", "-5",
                                        "--out", tmp / "out0"], tmp / "cwd0"),
        "analyze_target_inf": (["analyze", "--experiment", "e", "--tracking-uri", missing, "--target", "inf",
                                "--out", tmp / "out0"], tmp / "cwd0"),
        "analyze_missing_sqlite": (["analyze", "--experiment", "e", "--tracking-uri", missing, "--out", tmp / "out1"],
                                   tmp / "cwd1"),
        "analyze_missing_relative_sqlite": (["analyze", "--experiment", "e", "--tracking-uri",
                                             "sqlite:///runs/mlflow.db", "--out", tmp / "out2"], tmp / "cwd2"),
        "analyze_default_store_missing": (["analyze", "--experiment", "e", "--out", tmp / "out3"], tmp / "cwd3"),
        "refine_missing_sqlite": (["refine", "--experiment", "e", "--tracking-uri", missing, "--dry-run"],
                                  tmp / "cwd4"),
        "analyze_backend_without_driver": (["analyze", "--experiment", "e", "--tracking-uri",
                                            f"mysql+nosuchdriver://mlflow:{SECRET}@127.0.0.1:9/db", "--out",
                                            tmp / "out5"], tmp / "cwd5"),
        "refine_backend_without_driver": (["refine", "--experiment", "e", "--tracking-uri",
                                           f"mysql+nosuchdriver://mlflow:{SECRET}@127.0.0.1:9/db", "--dry-run"],
                                          tmp / "cwd6"),
    }
    # --port 0 is invalid too: should a host check let a case through, no server starts (the host is checked first)
    for host in ("0", "0.0.0.0", "::", "10.1", "10.1.2.3"):
        cases[f"server_host_{host}"] = (["server", "--host", host, "--port", "0"], tmp / "cwd7")
    cases["server_public_without_auth"] = (["server", "--host", "127.0.0.1", "--public", "--port", "0"], tmp / "cwd7")
    cases["server_auth_and_no_auth"] = (["server", "--auth", "--no-auth", "--port", "0"], tmp / "cwd7")
    for _, cwd in cases.values():
        cwd.mkdir(exist_ok=True)
    return cases


SCRIPT = ["fit_bootstrap_negative", "fit_holdout_too_large", "fit_where_repeated", "analyze_missing_sqlite",
          "refine_missing_sqlite", "analyze_backend_without_driver", "server_host_0", "server_public_without_auth"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> dict:
    """``{"main"|"script": (folder, {name: result})}``: every case through main, the SCRIPT ones as subprocesses."""
    folders = {mode: tmp_path_factory.mktemp(f"faults-{mode}").resolve() for mode in ("main", "script")}
    script = {name: case for name, case in _cli_cases(folders["script"]).items() if name in SCRIPT}
    with ThreadPoolExecutor(len(script)) as pool:
        running = {name: pool.submit(_matscale, *case) for name, case in script.items()}
        with pytest.MonkeyPatch.context() as mp:
            for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                mp.delenv(key, raising=False)
            main = {name: _in_process(*case) for name, case in _cli_cases(folders["main"]).items()}
        return {"main": (folders["main"], main),
                "script": (folders["script"], {name: f.result() for name, f in running.items()})}


def _runs(cli: dict, name: str) -> list[tuple[Path, dict]]:
    """(folder, result) of case ``name``: in this process, and as a subprocess where it ran as one."""
    return [(folder, results[name]) for folder, results in cli.values() if name in results]


# ------------------------------------------------------------------------------------------- A. fit / analyze

@pytest.mark.parametrize("name, flag, text", [
    ("fit_bootstrap_negative", "bootstrap", "-5"),
    ("fit_bootstrap_too_few", "bootstrap", "at least 10"),
    ("fit_holdout_negative", "holdout", "-1"),
    ("fit_seed_negative", "seed", "-1"),
    ("fit_target_nan", "target", "nan"),
    ("fit_target_negative", "target", "-0.5"),
    ("analyze_bootstrap_negative", "bootstrap", "-5"),
    ("analyze_target_inf", "target", "inf"),
])
def test_nonsense_numbers_are_one_line_naming_the_flag(cli, name, flag, text):
    for _, res in _runs(cli, name):
        line = _one_line(res)
        assert f"field '{flag}'" in line and f"--{flag}" in line and text in line, line


def test_holdout_larger_than_the_curve_names_the_flag_and_the_points(cli):
    for _, res in _runs(cli, "fit_holdout_too_large"):
        line = _one_line(res)
        assert "--holdout 10" in line and "6 distinct points" in line and "field 'holdout'" in line, line


def test_repeated_where_flags_combine_with_and(cli):
    for _, res in _runs(cli, "fit_where_repeated"):
        assert res["rc"] == 0, res["err"][-2000:]
        r = json.loads(res["out"])
        assert r["n_points"] == 6 and r["n_runs"] == 6  # model A on the data axis only


def test_repeated_group_flags_combine(cli):
    ((_, res),) = _runs(cli, "fit_group_repeated")
    assert res["rc"] == 0, res["err"][-2000:]
    assert sorted(g["group"] for g in json.loads(res["out"])) == ["model=A, axis=data", "model=A, axis=params",
                                                                   "model=B, axis=data"]


# ------------------------------------------------------------------------------- B. stores: missing, unreachable

@pytest.mark.parametrize("name, cwd, path", [
    ("analyze_missing_sqlite", "cwd1", "nope/mlflow.db"),
    ("analyze_missing_relative_sqlite", "cwd2", "cwd2/runs/mlflow.db"),
    ("analyze_default_store_missing", "cwd3", "cwd3/runs/mlflow.db"),
    ("refine_missing_sqlite", "cwd4", "nope/mlflow.db"),
])
def test_a_missing_sqlite_store_is_one_line_and_nothing_is_created(cli, name, cwd, path):
    for tmp, res in _runs(cli, name):
        line = _one_line(res)
        assert "no MLflow store" in line and str(tmp / path) in line, line
        assert not (tmp / "nope").exists()
        assert list((tmp / cwd).iterdir()) == []  # no runs/, mlruns/, mlartifacts/ nor a lock file
        assert not any(tmp.glob("out*"))


@pytest.mark.parametrize("name", ["analyze_backend_without_driver", "refine_backend_without_driver"])
def test_a_backend_that_cannot_be_opened_is_one_line_without_the_password(cli, name):
    for _, res in _runs(cli, name):
        line = _one_line(res)
        assert "mysql+nosuchdriver://mlflow:***@127.0.0.1:9/db" in line and SECRET not in line, line


@pytest.fixture(scope="module")
def startup_s() -> float:
    """Seconds ``matscale --help`` takes here (importing torch alone takes several on a loaded machine)."""
    return _matscale(["--help"])["s"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "no-such-host.invalid:5000"])
def test_an_unreachable_tracking_server_fails_fast_with_the_uri_masked(tmp_path, startup_s, monkeypatch, host):
    host = host.format(port=free_port())  # nothing listens there
    uri = f"http://alice:{SECRET}@{host}"
    res = _matscale(["analyze", "--experiment", "e", "--tracking-uri", uri, "--out", tmp_path / "out"], cwd=tmp_path,
                    timeout=120)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    refine = _in_process(["refine", "--experiment", "e", "--tracking-uri", uri, "--dry-run"], tmp_path)
    for r, limit in ((res, max(15.0, startup_s + 10.0)), (refine, 10.0)):
        line = _one_line(r)
        assert f"http://alice:***@{host}" in line and "not reachable" in line and SECRET not in line, line
        assert r["s"] < limit, (r["s"], startup_s)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------- C. server

@pytest.mark.parametrize("host, text", [("0", "every interface"), ("0.0.0.0", "every interface"),
                                        ("::", "every interface"), ("10.1", "10.0.0.1"),
                                        ("10.1.2.3", "10.1.2.3, which other machines can reach")])
def test_server_needs_public_for_any_non_loopback_host(cli, host, text):
    for _, res in _runs(cli, f"server_host_{host}"):
        line = _one_line(res)
        assert f"--host {host} " in line and text in line and "--public" in line and "field 'host'" in line, line


def test_server_public_needs_auth_or_an_explicit_no_auth(cli):
    for _, res in _runs(cli, "server_public_without_auth"):
        line = _one_line(res)
        assert "--public without --auth" in line and "--no-auth" in line, line
    ((_, res),) = _runs(cli, "server_auth_and_no_auth")
    assert "--auth and --no-auth" in _one_line(res)


def test_server_resolves_a_host_name_before_checking_it(tmp_path, monkeypatch):
    from sweeps.server import server_command

    monkeypatch.chdir(tmp_path)  # the default SQLite backend's folder is made in the working folder

    def resolve(host, *args, **kwargs):
        addr = {"mlflow-head.example": "192.0.2.7", "lab-v6.example": "2001:db8::7", "loop.example": "127.0.1.1"}[host]
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (addr, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    for host, addr in (("mlflow-head.example", "192.0.2.7"), ("lab-v6.example", "2001:db8::7")):
        with pytest.raises(InputError, match=f"--host {host} would accept connections on {addr}"):
            server_command(host=host)
        assert host in server_command(host=host, public=True)
    assert "loop.example" in server_command(host="loop.example")  # a name of a loopback address needs nothing


def test_server_rejects_zero_workers_and_accepts_localhost(tmp_path, monkeypatch):
    from sweeps.server import server_command

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="--workers must be 1 or more"):
        server_command(workers=0)
    cmd = server_command(host="localhost")
    assert cmd[cmd.index("--host") + 1] == "localhost"


def test_auth_policy_warns_for_public_no_auth():
    from sweeps.server import auth_policy

    assert auth_policy(public=False, auth=False, no_auth=False) is None
    assert auth_policy(public=True, auth=True, no_auth=False) is None
    assert "--no-auth" in auth_policy(public=True, auth=False, no_auth=True)
    with pytest.raises(InputError, match="--public without --auth"):
        auth_policy(public=True, auth=False, no_auth=False)


def test_server_prints_its_command_line_without_the_backend_password(tmp_path, monkeypatch, capsys):
    import sweeps.server

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "execvp", lambda *a: None)
    sweeps.server.serve(backend_store_uri=f"postgresql://mlflow:{SECRET}@127.0.0.1:5432/mlflow", port=free_port())
    out = capsys.readouterr().out
    assert "postgresql://mlflow:***@127.0.0.1:5432/mlflow" in out and SECRET not in out, out


# --------------------------------------------------------------------------------------------- D. secrets

@pytest.mark.parametrize("uri, redacted", [
    ("http://user:pw@host:5000", "http://user:***@host:5000"),
    ("https://user:pw@host", "https://user:***@host"),
    ("http://host:5000", "http://host:5000"),
    ("http://user@host:5000", "http://user@host:5000"),
    ("http://user:@host", "http://user:***@host"),
    ("http://u:p%40ss@host/path", "http://u:***@host/path"),
    ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
    ("postgresql://user:p@ss@host:5432/db", "postgresql://user:***@host:5432/db"),
    ("postgresql://user:p/ss@host/db", "postgresql://user:***@host/db"),
    ("postgresql://user:pa?ss@host/db", "postgresql://user:***@host/db"),
    ("mysql+pymysql://u:pw@h:3306/db?charset=utf8", "mysql+pymysql://u:***@h:3306/db?charset=utf8"),
    ("postgresql://h/db?user=u&password=pw&sslmode=require", "postgresql://h/db?user=u&password=***&sslmode=require"),
    ("http://u:pw@[::1]:5000/", "http://u:***@[::1]:5000/"),
    ("http://host:5000/path@x", "http://host:5000/path@x"),
    ("sqlite:////tmp/a/mlflow.db", "sqlite:////tmp/a/mlflow.db"),
    ("s3://bucket/key@v1", "s3://bucket/key@v1"),
    ("runs/mlflow.db", "runs/mlflow.db"),
    ("API request to http://a:b@h:1/api failed; retry 'https://c:d@h2'",
     "API request to http://a:***@h:1/api failed; retry 'https://c:***@h2'"),
])
def test_redact_uri(uri, redacted):
    from sweeps.tracking import redact_uri

    assert redact_uri(uri) == redacted


class _AuthHealth(BaseHTTPRequestHandler):
    """``/health`` behind basic auth (alice / SECRET), like a server behind an authenticating proxy."""

    def do_GET(self):  # noqa: N802 - http.server's name
        good = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
        ok = self.path == "/health" and self.headers.get("Authorization") == good
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"OK" if ok else b"no")

    def log_message(self, *args):
        pass


@pytest.fixture
def auth_health():
    server = HTTPServer(("127.0.0.1", 0), _AuthHealth)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_check_reachable_sends_the_uris_credentials(auth_health, monkeypatch):
    from sweeps.tracking import check_reachable

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    check_reachable(f"http://alice:{SECRET.replace('!', '%21')}@127.0.0.1:{auth_health}")
    with pytest.raises(InputError) as err:
        check_reachable(f"http://alice:wrong-{SECRET}@127.0.0.1:{auth_health}/")
    assert "http://alice:***@127.0.0.1" in str(err.value) and SECRET not in str(err.value)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    check_reachable(f"http://127.0.0.1:{auth_health}")  # the variables MLflow reads, for a URI without them


def test_credentials_move_from_the_uri_to_mlflows_variables(monkeypatch):
    from sweeps.tracking import use_credentials

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "old")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "old")
    assert use_credentials("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "old"
    assert use_credentials(f"https://bob:{SECRET.replace('!', '%21')}@mlflow.lab:443/x") == "https://mlflow.lab:443/x"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("bob", SECRET)
    assert use_credentials("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


# -------------------------------------------------------------------------------------- slow: real stores/servers

def _fill(uri: str, sizes=(100, 200, 400, 800, 1600, 3200), seeds=(0, 1)) -> None:
    """FINISHED trial runs of one curve in experiment ``faults``, as a sweep would have logged them."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    c = MlflowClient(uri)
    exp = c.create_experiment("faults")
    for n in sizes:
        for seed in seeds:
            run = c.create_run(exp, tags={"matscale.kind": "trial", "matscale.trial_key": f"cgc-N1e4-D{n}-s{seed}-t0"})
            values = {"n_params_target": 1e4, "n_params": 10100, "n_train": n, "seed": seed, "trial_index": 0,
                      "val_loss": (n / 30.0) ** -0.3 * (1 + 0.01 * seed)}
            c.log_batch(run.info.run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in values.items()],
                        params=[Param("arch", "cgc")])
            c.set_terminated(run.info.run_id, "FINISHED")


def _as_unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` such that file modes bind it: as root, without the capabilities that override them."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: a read-only folder cannot be made to bind")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *cmd]


@pytest.mark.slow
def test_reading_commands_work_on_a_store_in_a_read_only_folder(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    _fill(uri)
    before = sorted(p.name for p in store.iterdir())
    (store / "mlflow.db").chmod(0o444)
    store.chmod(0o555)
    try:
        out = tmp_path / "out"
        res = subprocess.run(_as_unprivileged([sys.executable, "-m", "analysis.cli", "analyze", "--experiment", "faults",
                                               "--tracking-uri", uri, "--out", str(out), "--bootstrap", "100"]),
                             capture_output=True, text=True, timeout=600, env=_env())
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
        assert res.stderr.strip().splitlines() == [line for line in res.stderr.strip().splitlines()
                                                   if line.startswith("warning: ")]
        assert len(res.stderr.strip().splitlines()) == 1 and "read-only" in res.stderr, res.stderr
        assert (out / "fits.json").exists() and "cgc N=1e4" in res.stdout
        res = subprocess.run(_as_unprivileged([sys.executable, "-m", "analysis.cli", "refine", "--experiment", "faults",
                                               "--tracking-uri", uri, "--dry-run"]),
                             capture_output=True, text=True, timeout=600, env=_env())
        assert "no grid sweep" in _one_line({"rc": res.returncode, "err": res.stderr})
        assert sorted(p.name for p in store.iterdir()) == before
    finally:
        store.chmod(0o755)


def _start_server(tmp_path: Path, port: int, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """``matscale server`` on 127.0.0.1:port with a SQLite store in ``tmp_path``; its stderr goes to server.err."""
    with open(tmp_path / "server.out", "w") as out, open(tmp_path / "server.err", "w") as err:
        return subprocess.Popen([str(BIN / "matscale"), "server", "--port", str(port), "--workers", "1",
                                 "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                                 "--artifacts-destination", str(tmp_path / "artifacts"), *extra],
                                cwd=tmp_path, stdout=out, stderr=err, start_new_session=True, env=env or _env())


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server started by this module: its process group, by its id."""
    try:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(30)


def _wait_up(proc: subprocess.Popen, port: int, folder: Path, timeout: float = 120) -> None:
    """Until the server answers /health; its stderr when it exits or does not answer in time."""
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read() == b"OK":
                return
        except OSError:
            pass
        assert proc.poll() is None and time.time() < deadline, (folder / "server.err").read_text()[-3000:]
        time.sleep(0.5)


@pytest.mark.slow
def test_credentialed_uri_works_against_a_basic_auth_server_and_is_never_printed(tmp_path, monkeypatch):
    pytest.importorskip("flask_wtf", reason="MLflow's basic auth needs mlflow[auth]")
    ini = tmp_path / "auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path / 'auth.db'}\n"
                   f"admin_username = admin\nadmin_password = {SECRET}\nauth_cache_ttl_seconds = 300\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    server = _start_server(tmp_path, port, "--auth", env={**_env(), "MLFLOW_AUTH_CONFIG_PATH": str(ini),
                                                          "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-" + SECRET[::-1]})
    try:
        _wait_up(server, port, tmp_path)
        plain, secret = f"http://127.0.0.1:{port}", f"http://admin:{SECRET.replace('!', '%21')}@127.0.0.1:{port}"
        from sweeps.tracking import check_reachable

        check_reachable(secret)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
        monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        _fill(plain, sizes=(100, 200, 400, 800), seeds=(0,))  # few requests: each checks a password hash
        res = _matscale(["analyze", "--experiment", "faults", "--tracking-uri", secret, "--out", tmp_path / "out",
                         "--bootstrap", "100", "--json"], cwd=tmp_path)
        assert res["rc"] == 0, res["err"][-3000:]
        assert SECRET not in res["out"] + res["err"] and "%21" not in res["out"] + res["err"]
        r = json.loads(res["out"])  # nothing but the JSON on stdout
        assert r["groups"][0]["n_points"] == 4 and r["run_id"]
        from mlflow import MlflowClient

        run = MlflowClient(plain).get_run(r["run_id"])
        assert run.data.tags["matscale.kind"] == "analysis" and SECRET not in json.dumps(run.data.to_dictionary())
        res = _matscale(["analyze", "--experiment", "faults", "--tracking-uri",
                         f"http://admin:wrong-{SECRET}@127.0.0.1:{port}", "--out", tmp_path / "out2"], cwd=tmp_path)
        line = _one_line(res)
        assert "http://admin:***@127.0.0.1" in line and "401" in line and SECRET not in line, line
    finally:
        _stop(server)


@pytest.mark.slow
def test_public_no_auth_server_starts_with_a_warning(tmp_path):
    port = free_port()
    server = _start_server(tmp_path, port, "--host", "127.0.0.1", "--public", "--no-auth")
    try:
        _wait_up(server, port, tmp_path)
    finally:
        _stop(server)
    err = (tmp_path / "server.err").read_text()
    assert err.startswith("warning: --public --no-auth"), err[:2000]
