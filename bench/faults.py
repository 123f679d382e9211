"""Fault-injection benchmark: does ``matscale sweep`` keep its MLflow record whole when things go wrong?

    python bench/faults.py [--only NAME[,NAME]] [--keep] [--root DIR]

Sixteen scenarios, each run as a user would (the ``matscale`` CLI in subprocesses, on tiny specs in a temp folder
of its own; one synthetic data set built once and shared): drivers SIGKILLed (then re-run plain, with ``--resume``,
with a ``file://`` storage path, killed twice), a Ray trial worker killed, two drivers of one spec at once (on a
new and on an existing store, and one while the other runs), a re-run with nothing left to do, the tracking
server restarted mid-sweep, Ctrl-C then ``--resume``, and broken inputs (read-only tracking folder, unwritable
Ray storage, corrupt ``data.pt``, truncated ``meta.json``, garbage ``mlflow.db``) that must fail in one line
(exit 2, no traceback) and create nothing.

Counted per scenario from the MLflow record once every process has ended:

* ``runs_lost``: expected trial keys without a FINISHED trial run;
* ``runs_duplicated``: trial keys with more than one trial run (``matscale.kind`` = ``superseded`` excluded;
  each superseded run must point to an existing run that leads to a trial run);
* ``trainings_per_run_violations``: runs whose ``epoch/val_loss`` history repeats a step or skips one;
* ``params_mismatch``: FINISHED trial runs whose ``hp.lr`` / ``hp.batch_size`` differ from ``trained_with`` in
  their ``metrics.json`` artifact (a missing ``metrics.json`` counts too);
* ``orphan_parents``: sweep parent runs left RUNNING.

A scenario *survives* when all five are zero, every command exited as expected and nothing else was found wrong
(a superseded run leading to no trial run, files or runs created by a command that must fail, a "nothing to
run" re-run that starts Ray or uses over 15 s of CPU). ``--only`` takes names or numbers. Prints a table, then one
JSON line (``code``: a hash of sweeps/ and gnn/, ``OLD->NEW`` when the product changed during the run).
Progress goes to stderr; the drivers' output goes to log files in each scenario's folder (their tails are
printed when a scenario fails). Every process a scenario starts carries an environment marker; they are all
ended by process id when the scenario ends (never ``ray stop``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PY = sys.executable
MARK = "MATSCALE_FAULTS_DIR"  #: environment marker of every process a scenario starts
SYNTH = {"n": 300, "points": 21, "seed": 0}
COUNTS = ("runs_lost", "runs_duplicated", "trainings_per_run_violations", "params_mismatch", "orphan_parents")
CMD_TIMEOUT = 900  #: no single command of a scenario may take longer (s)


def log(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """A scenario could not be carried out as planned (the fault was not injected, a wait timed out...)."""


# ---------------------------------------------------------------------------------------------------------------
# processes


def _marked_pids(tag: str) -> list[int]:
    """Processes whose environment carries ``MARK=tag`` (every process a scenario started, Ray's included)."""
    needle = f"{MARK}={tag}\0".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if needle in env or env.endswith(needle[:-1]):
            pids.append(int(d.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class Cmd:
    """One command of a scenario: a subprocess in its own session, output to log files."""

    def __init__(self, sc: "Scenario", label: str, argv: list[str], env: dict | None = None, wrap: list | None = None):
        self.sc, self.label, self.argv = sc, label, argv
        self.out_path, self.err_path = sc.logs / f"{label}.out", sc.logs / f"{label}.err"
        self.t0 = time.time()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen((wrap or []) + argv, cwd=sc.dir, env=env or sc.env, start_new_session=True,
                                         stdout=out, stderr=err)
        self.seconds: float | None = None
        sc.cmds.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = CMD_TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(30)
            raise Failed(f"{self.label} did not end within {timeout:.0f} s (killed)") from None
        if self.seconds is None:
            self.seconds = time.time() - self.t0
        return rc

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    @property
    def rc(self) -> int | None:
        return self.proc.returncode

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def tail(self, n: int = 25) -> str:
        text = (self.out() + ("\n--- stderr ---\n" + self.err() if self.err().strip() else "")).splitlines()
        return "\n".join(text[-n:])


# ---------------------------------------------------------------------------------------------------------------
# the MLflow record: a side-effect-free probe (while drivers run) and the final analysis


class Probe:
    """Trial and parent runs of an experiment, read without writing anything: SQLite read-only, or HTTP."""

    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self._client = None

    def runs(self) -> list[dict]:
        """[{id, status, kind, key, spec_hash, steps, last_ts}] of the experiment's active runs ([] if none yet)."""
        try:
            return self._sql() if self.uri.startswith("sqlite:///") else self._http()
        except Exception:  # noqa: BLE001 - not created yet, locked for a moment, server restarting
            return []

    def _sql(self) -> list[dict]:
        db = Path(self.uri[len("sqlite:///"):])
        if not db.exists():
            return []
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("select r.run_uuid, r.status from runs r join experiments e on "
                               "r.experiment_id = e.experiment_id where e.name = ? and r.lifecycle_stage = 'active'",
                               (self.experiment,)).fetchall()
            runs = {rid: {"id": rid, "status": st, "kind": None, "key": None, "spec_hash": None, "steps": 0,
                          "last_ts": 0} for rid, st in rows}
            for rid, k, v in con.execute("select run_uuid, key, value from tags where key in ('matscale.kind', "
                                         "'matscale.trial_key', 'matscale.spec_hash')"):
                if rid in runs:
                    runs[rid][{"matscale.kind": "kind", "matscale.trial_key": "key",
                               "matscale.spec_hash": "spec_hash"}[k]] = v
            for rid, n, ts in con.execute("select run_uuid, count(*), max(timestamp) from metrics where key = "
                                          "'epoch/val_loss' group by run_uuid"):
                if rid in runs:
                    runs[rid].update(steps=n, last_ts=ts)
        finally:
            con.close()
        return list(runs.values())

    def _http(self) -> list[dict]:
        from mlflow.tracking import MlflowClient

        if self._client is None:
            self._client = MlflowClient(self.uri)
        c = self._client
        exp = c.get_experiment_by_name(self.experiment)
        if exp is None:
            return []
        out = []
        for r in c.search_runs([exp.experiment_id], max_results=1000):
            t = r.data.tags
            d = {"id": r.info.run_id, "status": r.info.status, "kind": t.get("matscale.kind"),
                 "key": t.get("matscale.trial_key"), "spec_hash": t.get("matscale.spec_hash"), "steps": 0,
                 "last_ts": 0}
            if d["status"] == "RUNNING" and d["kind"] == "trial":
                h = c.get_metric_history(d["id"], "epoch/val_loss")
                d.update(steps=len(h), last_ts=max((m.timestamp for m in h), default=0))
            out.append(d)
        return out

    def trials(self, spec_hash: str, status: str | None = None, min_steps: int = 0) -> list[dict]:
        return [r for r in self.runs() if r["kind"] == "trial" and r["spec_hash"] == spec_hash
                and (status is None or r["status"] == status) and r["steps"] >= min_steps]


def sql_counts(db: Path) -> dict:
    """Runs in a SQLite store (all experiments): total, and sweep parents RUNNING; {} if it cannot be read."""
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            total = con.execute("select count(*) from runs").fetchone()[0]
            running = con.execute("select count(*) from runs r join tags t on t.run_uuid = r.run_uuid where "
                                  "t.key = 'matscale.kind' and t.value = 'sweep' and r.status = 'RUNNING'"
                                  ).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return {}
    return {"runs": total, "running_parents": running}


def analyze(uri: str, experiment: str, spec_hash: str, expected_keys: list[str], scratch: Path) -> dict:
    """The five counts (and what else is wrong) from the MLflow record, once every process has ended."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    res = {k: 0 for k in COUNTS}
    res["problems"] = []
    if exp is None:
        res["runs_lost"] = len(expected_keys)
        res["problems"].append("no experiment")
        return res
    runs, token = [], None
    while True:
        page = c.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                             page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    by_id = {r.info.run_id: r for r in runs}
    kind = lambda r: r.data.tags.get("matscale.kind")  # noqa: E731
    trials = [r for r in runs if kind(r) == "trial" and r.data.tags.get("matscale.spec_hash") == spec_hash]
    superseded = [r for r in runs if kind(r) == "superseded" and r.data.tags.get("matscale.spec_hash") == spec_hash]
    parents = [r for r in runs if kind(r) == "sweep"]

    per_key: dict[str, list] = {}
    for r in trials:
        per_key.setdefault(r.data.tags.get("matscale.trial_key"), []).append(r)
    finished = {k for k, rs in per_key.items() if any(r.info.status == "FINISHED" for r in rs)}
    res["runs_lost"] = sum(k not in finished for k in expected_keys)
    res["runs_duplicated"] = sum(len(rs) > 1 for rs in per_key.values())
    unexpected = sorted(set(per_key) - set(expected_keys))
    if unexpected:
        res["problems"].append(f"unexpected trial keys {unexpected[:3]}")

    for r in trials + superseded:
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "epoch/val_loss")]
        if len(steps) != len(set(steps)) or sorted(steps) != list(range(len(steps))):
            res["trainings_per_run_violations"] += 1
            res["problems"].append(f"run {r.info.run_id[:8]} ({kind(r)} {r.data.tags.get('matscale.trial_key')}) "
                                   f"epoch steps {sorted(steps)}")

    for r in superseded:  # must lead, through superseded_by, to an existing trial run
        seen, cur = set(), r
        while cur is not None and kind(cur) == "superseded" and cur.info.run_id not in seen:
            seen.add(cur.info.run_id)
            nxt = cur.data.tags.get("matscale.superseded_by")
            cur = by_id.get(nxt) if nxt else None
        if cur is None or kind(cur) != "trial":
            res["problems"].append(f"superseded run {r.info.run_id[:8]} points to no trial run")

    for r in trials:
        if r.info.status != "FINISHED":
            continue
        p = r.data.params
        try:
            d = scratch / r.info.run_id
            d.mkdir(parents=True, exist_ok=True)
            trained = json.loads(Path(c.download_artifacts(r.info.run_id, "metrics.json", str(d))).read_text())
            tw = trained["trained_with"]
        except Exception as exc:  # noqa: BLE001 - no record of what trained: cannot be checked, counts as wrong
            res["params_mismatch"] += 1
            res["problems"].append(f"run {r.info.run_id[:8]}: no trained_with ({type(exc).__name__})")
            continue
        bad = []
        if "hp.lr" in p and float(p["hp.lr"]) != tw.get("lr"):
            bad.append(f"lr {p['hp.lr']} vs {tw.get('lr')}")
        if "hp.batch_size" in p and int(float(p["hp.batch_size"])) != tw.get("batch_size"):
            bad.append(f"batch_size {p['hp.batch_size']} vs {tw.get('batch_size')}")
        if bad:
            res["params_mismatch"] += 1
            res["problems"].append(f"run {r.info.run_id[:8]}: " + ", ".join(bad))

    restarted = {r.data.tags.get("matscale.trial_key") for r in superseded}
    if len(superseded) > len(restarted):  # not counted: superseded runs are not trials, but each costs a run
        res["extra_replacements"] = len(superseded) - len(restarted)
    res["orphan_parents"] = sum(r.info.status == "RUNNING" for r in parents)
    res["trial_runs"], res["superseded"] = len(trials), len(superseded)
    res["parents"] = sorted(r.info.status for r in parents)
    return res


# ---------------------------------------------------------------------------------------------------------------
# scenarios


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, watch: list["Cmd"] = (), poll: float = 0.5):
    """``predicate()``'s first truthy value; Failed after ``timeout`` s or when a watched command ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        for cmd in watch:
            if not cmd.alive():
                raise Failed(f"{cmd.label} ended (rc {cmd.rc}) before {what}")
        time.sleep(poll)
    raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")


def one_line_error(cmd: Cmd, must_contain: str | None = None) -> str | None:
    """Why ``cmd`` is not a clean one-line user error (exit 2, one stderr line, no traceback), or None."""
    err = cmd.err()
    lines = err.strip().splitlines()
    if cmd.rc != 2:
        return f"{cmd.label}: exit {cmd.rc}, expected 2"
    if "Traceback" in err:
        return f"{cmd.label}: traceback on stderr"
    if len(lines) != 1:
        others = [ln[:70] for ln in lines if not ln.startswith("error: ")][:2]
        return f"{cmd.label}: {len(lines)} stderr lines, expected 1 (also: {' | '.join(others)})"
    if must_contain and must_contain not in lines[0]:
        return f"{cmd.label}: stderr line lacks {must_contain!r}"
    return None


class Scenario:
    def __init__(self, number: int, name: str, root: Path, data_dir: Path):
        self.number, self.name = number, name
        self.dir = root / f"s{number:02d}"
        self.dir.mkdir(parents=True)
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.data_dir = data_dir
        self.cmds: list[Cmd] = []
        self.servers: list[Cmd] = []
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.expected_rc_ok = True
        self.analysis: dict | None = None
        self.extra: dict = {}
        (self.dir / "track").mkdir()
        rt = self.dir / "rt"  # Ray's session folder and the trials' scratch space: inside the scenario
        rt.mkdir()
        self.env = {k: v for k, v in os.environ.items()  # what a user's shell has, minus what points elsewhere
                    if not k.startswith("MLFLOW_") and k not in ("RAY_ADDRESS", "PYTHONPATH")}
        self.env.update({MARK: str(self.dir), "RAY_TMPDIR": str(rt), "TMPDIR": str(rt), "PYTHONUNBUFFERED": "1",
                         "PYTHONPATH": str(REPO)})
        self.db = self.dir / "track" / "mlflow.db"
        self.uri = f"sqlite:///{self.db}"

    # -- specs and commands

    def spec(self, label: str = "spec", experiment: str = "tiny", fractions=(0.25, 0.5, 1.0), epochs: int = 4,
             trials: int = 2, uri: str | None = None, storage: str | None = None, data_dir: Path | None = None,
             **extra) -> Path:
        raw = {
            "experiment": experiment,
            "dataset": {"synthetic": dict(SYNTH), "data_dir": str(data_dir or self.data_dir)},
            "archs": ["cgc"],
            "axes": {"data_fractions": list(fractions), "n_params": [1.0e4], "seeds": [0]},
            "budget": {"epochs": epochs, "patience": epochs + 5},
            "hpo": {"trials_per_point": trials,
                    "space": {"lr": {"log_uniform": [1.0e-3, 3.0e-3]}, "batch_size": {"choice": [16, 32]}}},
            "system_metrics": False, "num_threads": 1, "max_failures": 2,
            "tracking_uri": uri or self.uri,
            "storage_path": storage or str(self.dir / "ray"),
            **extra,
        }
        path = self.dir / f"{label}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    def sweep(self, label: str, spec: Path, *args: str, wrap: list | None = None) -> Cmd:
        return Cmd(self, label, [PY, "-m", "analysis.cli", "sweep", str(spec), *args], wrap=wrap)

    def run(self, label: str, spec: Path, *args: str, timeout: float = CMD_TIMEOUT, wrap: list | None = None) -> Cmd:
        cmd = self.sweep(label, spec, *args, wrap=wrap)
        cmd.wait(timeout)
        return cmd

    def expect_rc(self, cmd: Cmd, rc: int) -> bool:
        if cmd.rc != rc:
            self.expected_rc_ok = False
            self.problems.append(f"{cmd.label}: exit {cmd.rc}, expected {rc}")
            return False
        return True

    def kill_driver(self, cmd: Cmd) -> None:
        """SIGKILL a driver's process group, then every process of its Ray session (by pid)."""
        cmd.signal(signal.SIGKILL)
        try:
            cmd.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        self.kill_strays(keep=[c.pid for c in self.cmds + self.servers if c.alive()])

    def kill_strays(self, keep: list[int] = ()) -> list[int]:
        """Kill (SIGKILL, by pid) every process of this scenario but the commands in ``keep`` and their children."""
        keep_set = set(keep)
        for pid in list(keep_set):  # their descendants too (a live driver's Ray session)
            keep_set |= _descendants(pid)
        killed = []
        for pid in _marked_pids(str(self.dir)):
            if pid in keep_set:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        if not keep:
            subprocess.run(["pkill", "-9", "-f", str(self.dir) + "(/| |$)"], check=False)
        return killed

    def cleanup(self) -> None:
        for cmd in self.cmds + self.servers:
            if cmd.alive():
                cmd.signal(signal.SIGKILL)
        for _ in range(3):
            if not self.kill_strays():
                break
            time.sleep(1)
        time.sleep(0.5)
        left = _marked_pids(str(self.dir))
        if left:
            self.notes.append(f"{len(left)} processes survived cleanup")

    # -- checks

    def check(self, spec: Path, expected: list[str], uri: str | None = None, experiment: str = "tiny") -> dict:
        from sweeps.spec import load_spec

        h = load_spec(spec).hash
        self.analysis = analyze(uri or self.uri, experiment, h, expected, self.dir / "scratch")
        self.problems += self.analysis.pop("problems")
        return self.analysis

    def snapshot(self) -> dict:
        """Every path under the scenario folder (logs and scratch excepted) with its size and mtime."""
        out = {}
        for p in self.dir.rglob("*"):
            rel = p.relative_to(self.dir)
            if rel.parts[0] in ("logs", "scratch"):
                continue
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(rel)] = (st.st_size, st.st_mtime_ns) if p.is_file() else (None, None)
        return out


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for ch in children.get(p, []):
            if ch not in out:
                out.add(ch)
                todo.append(ch)
    return out


def expected_keys(spec_path: Path) -> list[str]:
    from sweeps.driver import check_against_store, store_location
    from sweeps.spec import load_spec

    spec = load_spec(spec_path)
    _, points = check_against_store(spec, store_location(spec))
    return [f"{p.key}-t{t}" for p in points for t in range(spec.hpo["trials_per_point"])]


def spec_hash(spec_path: Path) -> str:
    from sweeps.spec import load_spec

    return load_spec(spec_path).hash


# -- the fault scenarios (each fills sc.* and returns; exceptions become a failed row)


def _kill_mid_sweep(sc: Scenario, spec: Path, label: str, *args: str, uri: str | None = None,
                    since_ms: int = 0) -> Cmd:
    """Start a driver; SIGKILL it once some trials FINISHED and some are RUNNING (training since ``since_ms``)."""
    h = spec_hash(spec)
    probe = Probe(uri or sc.uri, "tiny")
    cmd = sc.sweep(label, spec, *args)
    base = len(probe.trials(h, "FINISHED"))
    seen = {}

    def ready():
        runs = probe.trials(h)
        done = sum(r["status"] == "FINISHED" for r in runs)
        running = [r for r in runs if r["status"] == "RUNNING" and r["steps"] >= 1 and r["last_ts"] >= since_ms]
        seen.update(done=done, running=len(running))
        return (done >= max(1, base + (1 if since_ms == 0 else 0))) and running

    wait_until(ready, 420, f"{label}: a FINISHED and a RUNNING trial", [cmd])
    sc.kill_driver(cmd)  # (a read-only probe cannot read the store now if the kill left a hot journal)
    sc.notes.append(f"{label} killed at {seen['done']} finished, {seen['running']} training")
    return cmd


def s_kill_rerun(sc: Scenario, resume: bool = False, storage: str | None = None) -> None:
    spec = sc.spec(storage=storage)
    keys = expected_keys(spec)
    _kill_mid_sweep(sc, spec, "first")
    again = sc.run("rerun", spec, *(["--resume"] if resume else []))
    sc.expect_rc(again, 0)
    if resume and "resuming" not in again.out():
        sc.notes.append("--resume restored no Ray experiment")
    sc.check(spec, keys)


def s_kill_resume(sc: Scenario) -> None:
    s_kill_rerun(sc, resume=True)


def s_kill_resume_file_uri(sc: Scenario) -> None:
    s_kill_rerun(sc, resume=True, storage=f"file://{sc.dir / 'ray'}")


def s_kill_twice(sc: Scenario) -> None:
    spec = sc.spec()
    keys = expected_keys(spec)
    _kill_mid_sweep(sc, spec, "first")
    t = int(time.time() * 1000)
    second = sc.sweep("second", spec, "--resume")
    probe = Probe(sc.uri, "tiny")
    h = spec_hash(spec)
    wait_until(lambda: [r for r in probe.trials(h, "RUNNING", min_steps=1) if r["last_ts"] >= t], 420,
               "second: a trial training", [second])
    sc.kill_driver(second)
    third = sc.run("third", spec, "--resume")
    sc.expect_rc(third, 0)
    sc.check(spec, keys)


def _trial_workers(sc: Scenario) -> list[int]:
    out = []
    for pid in _marked_pids(str(sc.dir)):
        cl = _cmdline(pid)
        if cl.startswith("ray::") and ("run_trial" in cl or "ImplicitFunc" in cl) and "IDLE" not in cl:
            out.append(pid)
    return out


def s_worker_kill(sc: Scenario) -> None:
    spec = sc.spec(fractions=(0.5, 1.0), epochs=8)
    keys = expected_keys(spec)
    h = spec_hash(spec)
    probe = Probe(sc.uri, "tiny")
    cmd = sc.sweep("sweep", spec)
    wait_until(lambda: probe.trials(h, "RUNNING", min_steps=2), 420, "a trial with 2 epochs", [cmd])
    workers = wait_until(lambda: _trial_workers(sc), 30, "a ray::run_trial process", [cmd])
    victim = workers[0]
    sc.notes.append(f"killed worker {_cmdline(victim)[:30]!r}")
    os.kill(victim, signal.SIGKILL)
    cmd.wait()
    sc.expect_rc(cmd, 0)
    sc.check(spec, keys)
    text = cmd.out() + cmd.err()
    if "RayActorError" not in text and "died" not in text and "retr" not in text.lower():
        sc.notes.append("no sign of the worker's death in the driver output")


def _twins(sc: Scenario, spec: Path) -> None:
    a, b = sc.sweep("driver_a", spec), sc.sweep("driver_b", spec)
    for cmd in (a, b):
        cmd.wait()
    rcs = sorted([a.rc, b.rc])
    if rcs != [0, 2]:
        sc.expected_rc_ok = False
        sc.problems.append(f"exit codes {a.rc}, {b.rc}: expected one 0 and one 2")
    loser = a if a.rc == 2 else b if b.rc == 2 else None
    if loser is not None:
        why = one_line_error(loser, "already running")
        if why:
            sc.expected_rc_ok = False
            sc.problems.append(why)
        else:
            sc.notes.append(f"{loser.label} refused after {loser.seconds:.0f} s")


def s_twin_new_store(sc: Scenario) -> None:
    spec = sc.spec(fractions=(0.5, 1.0))
    keys = expected_keys(spec)
    _twins(sc, spec)
    sc.check(spec, keys)


def _other_experiment(sc: Scenario) -> None:
    """A different tiny experiment first, so that the tracking store exists (as after an earlier study)."""
    other = sc.spec("other", experiment="other", fractions=(0.25,), epochs=1, trials=1)
    cmd = sc.run("other", other)
    if cmd.rc != 0:
        raise Failed(f"the preparatory experiment failed (exit {cmd.rc})")


def s_twin_existing_store(sc: Scenario) -> None:
    _other_experiment(sc)
    spec = sc.spec(fractions=(0.5, 1.0))
    keys = expected_keys(spec)
    _twins(sc, spec)
    sc.check(spec, keys)


def s_second_driver(sc: Scenario) -> None:
    spec = sc.spec(epochs=20)  # long enough (~2 min) for the second driver to get its answer while the first trains
    keys = expected_keys(spec)
    h = spec_hash(spec)
    probe = Probe(sc.uri, "tiny")
    first = sc.sweep("first", spec)
    wait_until(lambda: probe.trials(h, "RUNNING", min_steps=1), 420, "a trial training", [first])
    second = sc.run("second", spec, timeout=300)
    if not first.alive():
        raise Failed(f"bench: the first driver ended (exit {first.rc}) before the second got its answer")
    why = one_line_error(second, "already running")
    if why:
        sc.expected_rc_ok = False
        sc.problems.append(why)
    sc.notes.append(f"second refused in {second.seconds:.1f} s" if second.rc == 2 else f"second exit {second.rc}")
    first.wait()
    sc.expect_rc(first, 0)
    sc.check(spec, keys)


def s_rerun_finished(sc: Scenario) -> None:
    spec = sc.spec(fractions=(0.5, 1.0), epochs=3)
    keys = expected_keys(spec)
    first = sc.run("first", spec)
    sc.expect_rc(first, 0)
    ray_dir = sc.dir / "rt" / "ray"
    sessions = set(ray_dir.glob("session_*")) if ray_dir.exists() else set()
    import resource

    cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN))  # noqa: E731
    cpu0 = cpu()
    again = sc.run("again", spec, timeout=120)
    cpu_s = cpu() - cpu0  # the re-run's own CPU time (only child running now): what the load on the machine spares
    sc.expect_rc(again, 0)
    if "nothing to run" not in again.out():
        sc.expected_rc_ok = False
        sc.problems.append("the re-run did not say 'nothing to run'")
    new_sessions = (set(ray_dir.glob("session_*")) if ray_dir.exists() else set()) - sessions
    new_sessions = {s for s in new_sessions if s.name != "session_latest"}
    if new_sessions:
        sc.problems.append("the re-run started Ray")
        sc.expected_rc_ok = False
    sc.extra.update(rerun_s=round(again.seconds, 2), rerun_cpu_s=round(cpu_s, 2))
    sc.notes.append(f"re-run {again.seconds:.1f} s wall, {cpu_s:.1f} s CPU" + ("" if new_sessions else ", no Ray"))
    if cpu_s > 15:  # CPU, not wall time: a busy machine stretches the wall time of the imports alone
        sc.problems.append(f"re-run used {cpu_s:.1f} s CPU (> 15 s)")
        sc.expected_rc_ok = False
    sc.check(spec, keys)


def _start_server(sc: Scenario, port: int, label: str) -> Cmd:
    srv = sc.dir / "server"
    srv.mkdir(exist_ok=True)
    argv = [str(Path(PY).with_name("mlflow")), "server", "--backend-store-uri", f"sqlite:///{srv / 'server.db'}",
            "--artifacts-destination", str(srv / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    cmd = Cmd(sc, label, argv)
    sc.cmds.remove(cmd)
    sc.servers.append(cmd)
    return cmd


def _healthy(uri: str) -> bool:
    try:
        return urllib.request.urlopen(uri + "/health", timeout=2).status == 200
    except Exception:  # noqa: BLE001
        return False


def s_server_restart(sc: Scenario) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(sc, port, "server1")
    wait_until(lambda: _healthy(uri), 120, "the tracking server", [server])
    spec = sc.spec(uri=uri, epochs=5)
    keys = expected_keys(spec)
    h = spec_hash(spec)
    probe = Probe(uri, "tiny")
    cmd = sc.sweep("sweep", spec)
    wait_until(lambda: probe.trials(h, "RUNNING", min_steps=1), 420, "a trial training", [cmd])
    server.signal(signal.SIGKILL)
    server.proc.wait(30)
    down = time.time()
    time.sleep(2)
    server2 = _start_server(sc, port, "server2")
    wait_until(lambda: _healthy(uri), 120, "the restarted tracking server", [server2])
    sc.notes.append(f"server down {time.time() - down:.0f} s")
    cmd.wait()
    final = cmd
    if cmd.rc != 0:
        sc.notes.append(f"sweep exit {cmd.rc}; re-ran with --resume")
        final = sc.run("resume", spec, "--resume")
    else:
        sc.notes.append("sweep rode it out")
    sc.expect_rc(final, 0)
    sc.check(spec, keys, uri=uri)


def _expect_clean_refusal(sc: Scenario, cmd: Cmd, before: dict, db: Path, runs_before: dict,
                          must_name: str | None = None, within: float | None = None) -> None:
    """An expected failure: exit 2, one line, no traceback, (in time), nothing created, no run added."""
    why = one_line_error(cmd)
    if why:
        sc.expected_rc_ok = False
        sc.problems.append(why)
    line = (cmd.err().strip().splitlines() or [""])[-1]
    sc.notes.append(f"{cmd.seconds:.1f} s: {line[:140]}")
    if must_name and must_name not in line:
        sc.expected_rc_ok = False
        sc.problems.append(f"the error line does not name {must_name}")
    if within and cmd.seconds > within:
        sc.expected_rc_ok = False
        sc.problems.append(f"took {cmd.seconds:.1f} s (> {within:.0f} s)")
    after = sc.snapshot()
    created = sorted(set(after) - set(before))
    changed = sorted(k for k in set(after) & set(before) if after[k] != before[k] and after[k][0] is not None)
    if created or changed:
        sc.problems.append(f"created {created[:4]} changed {changed[:4]}")
    runs_after = sql_counts(db)
    new_runs = runs_after.get("runs", 0) - runs_before.get("runs", 0)
    sc.analysis = {k: 0 for k in COUNTS}
    sc.analysis["orphan_parents"] = runs_after.get("running_parents", 0)
    sc.analysis["runs_duplicated"] = 0
    sc.extra.update(new_runs=new_runs, created=len(created) + len(changed))
    if new_runs:
        sc.problems.append(f"{new_runs} new runs in the store")


def s_readonly_store(sc: Scenario) -> None:
    _other_experiment(sc)
    spec = sc.spec()
    track = sc.dir / "track"
    sc.kill_strays()  # nothing of the preparatory run may write while we look
    before, runs_before = sc.snapshot(), sql_counts(sc.db)
    cmd = sc.sweep("sweep", spec, wrap=["unshare", "-m", "sh", "-c",
                                        f'mount --bind -o ro "{track}" "{track}" && exec "$0" "$@"'])
    cmd.wait(120)
    _expect_clean_refusal(sc, cmd, before, sc.db, runs_before, within=30)


def s_unwritable_ray(sc: Scenario) -> None:
    afile = sc.dir / "afile"
    afile.write_text("a regular file\n")
    spec = sc.spec(storage=str(afile / "ray"))
    before, runs_before = sc.snapshot(), sql_counts(sc.db)
    cmd = sc.run("sweep", spec, timeout=300)
    _expect_clean_refusal(sc, cmd, before, sc.db, runs_before)
    if sc.db.exists():
        sc.notes.append("mlflow.db was created")


def _private_store(sc: Scenario) -> Path:
    """A copy of the shared data (store and graphs) in the scenario's folder, to break."""
    from sweeps.driver import store_location
    from sweeps.spec import load_spec

    data = sc.dir / "data"
    shutil.copytree(sc.data_dir, data)
    spec = sc.spec(data_dir=data)
    return store_location(load_spec(spec))


def s_corrupt_data_pt(sc: Scenario) -> None:
    store = _private_store(sc)
    f = store / "data.pt"
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(size // 2)
    spec = sc.dir / "spec.yaml"
    before, runs_before = sc.snapshot(), sql_counts(sc.db)
    cmd = sc.run("sweep", spec, timeout=300)
    _expect_clean_refusal(sc, cmd, before, sc.db, runs_before, must_name="data.pt")


def s_truncated_meta(sc: Scenario) -> None:
    store = _private_store(sc)
    f = store / "meta.json"
    text = f.read_bytes()
    f.write_bytes(text[: len(text) // 2])
    spec = sc.dir / "spec.yaml"
    before, runs_before = sc.snapshot(), sql_counts(sc.db)
    cmd = sc.run("sweep", spec, timeout=300)
    _expect_clean_refusal(sc, cmd, before, sc.db, runs_before)
    if "meta.json" not in (cmd.err().strip().splitlines() or [""])[-1]:
        sc.notes.append("the line does not name meta.json")


def s_garbage_db(sc: Scenario) -> None:
    rng = random.Random(0)
    sc.db.write_bytes(b"this is not a database\n" + bytes(rng.randrange(256) for _ in range(64 * 1024)))
    spec = sc.spec()
    before, runs_before = sc.snapshot(), {}
    cmd = sc.run("sweep", spec, timeout=300)
    _expect_clean_refusal(sc, cmd, before, sc.db, runs_before)


def s_ctrl_c_resume(sc: Scenario) -> None:
    spec = sc.spec(epochs=5)
    keys = expected_keys(spec)
    h = spec_hash(spec)
    probe = Probe(sc.uri, "tiny")
    cmd = sc.sweep("first", spec)
    # a trial 2 epochs in has a checkpoint Tune registered: --resume continues its run instead of starting over
    wait_until(lambda: len(probe.trials(h, "FINISHED")) >= 1 and probe.trials(h, "RUNNING", min_steps=2), 420,
               "a FINISHED trial and one 2 epochs in", [cmd])
    t = time.time()
    cmd.signal(signal.SIGINT)
    try:
        cmd.wait(180)
    except Failed as exc:
        sc.problems.append(str(exc))
    sc.notes.append(f"Ctrl-C: exit {cmd.rc} after {time.time() - t:.0f} s")
    if cmd.rc != 130:
        sc.expected_rc_ok = False
        sc.problems.append(f"the interrupted driver exited {cmd.rc}, expected 130")
    if "--resume" not in cmd.err() + cmd.out():
        sc.notes.append("no --resume hint")
    left = sc.kill_strays()
    if left:
        sc.notes.append(f"{len(left)} processes left after Ctrl-C")
    again = sc.run("resume", spec, "--resume")
    sc.expect_rc(again, 0)
    sc.check(spec, keys)


SCENARIOS = [
    ("kill_rerun", s_kill_rerun, "driver SIGKILL mid-sweep, then the same command"),
    ("kill_resume", s_kill_resume, "driver SIGKILL mid-sweep, then --resume"),
    ("kill_resume_file_uri", s_kill_resume_file_uri, "as 2 with storage_path file:///..."),
    ("kill_twice", s_kill_twice, "driver SIGKILL, --resume SIGKILLed too, then --resume"),
    ("worker_kill", s_worker_kill, "a Ray trial worker SIGKILLed mid-training"),
    ("twin_new_store", s_twin_new_store, "two drivers at once, new store"),
    ("twin_existing_store", s_twin_existing_store, "two drivers at once, existing store"),
    ("second_driver", s_second_driver, "a second driver while the first runs"),
    ("rerun_finished", s_rerun_finished, "re-run after everything finished"),
    ("server_restart", s_server_restart, "mlflow server killed and restarted mid-sweep"),
    ("readonly_store", s_readonly_store, "read-only tracking folder"),
    ("unwritable_ray", s_unwritable_ray, "Ray storage under a regular file"),
    ("corrupt_data_pt", s_corrupt_data_pt, "truncated data.pt"),
    ("truncated_meta", s_truncated_meta, "truncated meta.json"),
    ("garbage_db", s_garbage_db, "garbage mlflow.db"),
    ("ctrl_c_resume", s_ctrl_c_resume, "Ctrl-C, then --resume"),
]


def build_data(data_dir: Path) -> None:
    from sweeps.driver import prepare_store
    from sweeps.spec import validate

    raw = {"experiment": "data", "dataset": {"synthetic": dict(SYNTH), "data_dir": str(data_dir)}, "archs": ["cgc"],
           "axes": {"data_fractions": [1.0], "n_params": [1.0e4], "seeds": [0]}, "budget": {"epochs": 1}}
    prepare_store(validate(raw, "faults"), progress=False)


def code_fingerprint() -> str:
    """A hash of the product's source (sweeps/, gnn/): a run whose code changed under it says so."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted([*REPO.glob("sweeps/**/*.py"), *REPO.glob("gnn/**/*.py")]):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def run_scenario(number: int, name: str, fn, root: Path, data_dir: Path) -> dict:
    sc = Scenario(number, name, root, data_dir)
    t0 = time.time()
    error = None
    try:
        fn(sc)
    except Failed as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a bench bug or an unexpected product failure: show it, go on
        error = f"{type(exc).__name__}: {exc}"
        sc.problems.append(traceback.format_exc(limit=4).strip().splitlines()[-1])
    finally:
        sc.cleanup()
    wall = time.time() - t0
    counts = {k: (sc.analysis or {}).get(k, 0) for k in COUNTS}
    if error:
        sc.problems.insert(0, error)
    analysed = sc.analysis is not None
    survived = analysed and not error and sc.expected_rc_ok and not any(counts.values()) and not sc.problems
    row = {"survived": survived, **counts, "wall_s": round(wall, 1),
           "note": "; ".join(sc.notes + sc.problems), **sc.extra,
           "rcs": {c.label: c.rc for c in sc.cmds}}
    for k in ("trial_runs", "superseded", "extra_replacements", "parents"):
        if analysed and k in sc.analysis:
            row[k] = sc.analysis[k]
    if analysed and sc.analysis.get("superseded"):
        extra = sc.analysis.get("extra_replacements")
        row["note"] += f"; {sc.analysis['superseded']} superseded" + (f" ({extra} more than restarted keys)"
                                                                       if extra else "")
    if not survived:
        for cmd in sc.cmds:
            print(f"----- {name}: {cmd.label} (exit {cmd.rc}) log tail -----\n{cmd.tail()}", file=sys.stderr)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated scenario names or numbers")
    ap.add_argument("--keep", action="store_true", help="keep the temp folders")
    ap.add_argument("--root", help="parent folder of the temp folder (default /tmp; keep the path short: Ray's "
                                   "socket paths live under it)")
    args = ap.parse_args()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # this process's reads only (drivers: see Scenario)

    chosen = list(enumerate(SCENARIOS, 1))
    if args.only:
        want = {w.strip() for w in args.only.split(",") if w.strip()}
        unknown = want - {n for _, (n, _, _) in chosen} - {str(i) for i, _ in chosen}
        if unknown:
            ap.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(n for n, _, _ in SCENARIOS)}")
        chosen = [(i, s) for i, s in chosen if s[0] in want or str(i) in want]

    root = Path(tempfile.mkdtemp(prefix="mf", dir=args.root or "/tmp"))
    data_dir = root / "data"
    log(f"folder {root}; building the synthetic data once")
    t = time.time()
    build_data(data_dir)
    log(f"data ready in {time.time() - t:.0f} s")

    rows = {}
    code = code_fingerprint()
    try:
        for i, (name, fn, what) in chosen:
            log(f"{i:>2} {name}: {what} ...")
            rows[name] = run_scenario(i, name, fn, root, data_dir)
            r = rows[name]
            log(f"{i:>2} {name}: {'survived' if r['survived'] else 'FAILED'} in {r['wall_s']:.0f} s  {r['note'][:200]}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"kept {root}")

    head = f"{'#':>2} {'scenario':<21} {'survived':<8} {'lost':>4} {'dup':>4} {'t/run':>5} {'params':>6} " \
           f"{'orphan':>6} {'wall s':>7}  note"
    print(head)
    print("-" * len(head))
    for i, (name, _, _) in chosen:
        r = rows[name]
        print(f"{i:>2} {name:<21} {'yes' if r['survived'] else 'NO':<8} {r['runs_lost']:>4} {r['runs_duplicated']:>4} "
              f"{r['trainings_per_run_violations']:>5} {r['params_mismatch']:>6} {r['orphan_parents']:>6} "
              f"{r['wall_s']:>7.1f}  {r['note']}")
    totals = {k: sum(r[k] for r in rows.values()) for k in COUNTS}
    code_end = code_fingerprint()
    if code_end != code:
        log(f"the product's code changed during the run ({code} -> {code_end}): rows may mix versions")
    print(json.dumps({"scenarios": len(rows), "survived": sum(r["survived"] for r in rows.values()), **totals,
                      "per_scenario": rows, "code": code if code == code_end else f"{code}->{code_end}"}))


if __name__ == "__main__":
    main()
