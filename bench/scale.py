"""Scale benchmark: the real sweep machinery with simulated trials on a many-node Ray cluster and an MLflow server.

    python bench/scale.py [--trials 200] [--workers 8] [--nodes 2] [--epochs 3] [--epoch-s 0.5]
                          [--backend postgres|sqlite] [--kill-at 0.6] [--out /tmp/matscale-bench-scale]

The driver is ``matscale sweep`` (spec → PointSearcher → Ray Tune → MLflow parent and child runs) with a spec whose
``simulate`` section (:mod:`sweeps.simulate`) makes every trial sleep ``epoch_s`` per epoch and report a known law,
logging to MLflow exactly as a real trial does. The cluster is ``ray.cluster_utils.Cluster`` on this machine: a
head with no CPUs and ``--nodes`` nodes sharing ``--workers`` trial slots (a trial takes one CPU). MLflow is a real
``matscale server`` over HTTP, backed by PostgreSQL (a throw-away cluster made with ``initdb`` in the output folder;
as root it runs as the ``postgres`` user) or, with ``--backend sqlite`` or where PostgreSQL or psycopg is missing
(the reason is printed), by SQLite.

The grid is 4 model sizes × 4 data sizes × seeds × 4 HPO trials per point (the seeds chosen to reach ``--trials``).
The driver is killed (SIGKILL, its process group) once ``--kill-at`` of the trials are FINISHED, then run again with
``--resume`` to the end. Measured:

* ``trials_per_min``: FINISHED trials per minute of driver time (both invocations);
* ``overhead_s_per_trial``: wall time beyond the simulated work per trial and worker slot, before the kill:
  (wall × workers − trials × epochs × epoch_s) / trials;
* ``driver_rss_mb`` (peak of either invocation, VmHWM) and ``driver_cpu_s_per_trial``;
* ``mlflow_p95_ms``: the 95th percentile over trials of a trial's mean time per batched MLflow call;
* ``skip_check_s``: the query for the spec's FINISHED trials (what a re-run asks first), timed at the end;
* ``resume_s``: from starting ``--resume`` to the first trial it finishes, less that trial's simulated work;
* ``lost`` and ``duplicated``: trial keys without a FINISHED run, and with more than one.

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_PARAMS = [1.0e4, 2.0e4, 4.0e4, 8.0e4]
N_TRAIN = [50, 100, 200, 400]
TPP = 4


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout: float, what: str, every: float = 0.5):
    end = time.time() + timeout
    while time.time() < end:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def _postgres(folder: Path) -> tuple[str | None, str, list]:
    """A throw-away PostgreSQL cluster: (URI or None, what was used or why not, processes to stop)."""
    try:
        import psycopg  # noqa: F401 - SQLAlchemy's driver for postgresql:// URIs
    except ImportError:
        return None, "psycopg is not installed (pip install 'psycopg[binary]')", []
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        return None, "PostgreSQL (initdb, pg_ctl) is not installed", []
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, sock = folder / "pg", folder / "pg-socket"
    data.mkdir(parents=True)
    sock.mkdir()
    if as_user:
        shutil.chown(folder, "postgres")
        shutil.chown(data, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    try:
        subprocess.run(as_user + [initdb, "-D", str(data), "-U", "mlflow", "--auth=trust"], check=True,
                       capture_output=True, text=True, timeout=300)
        subprocess.run(as_user + [pg_ctl, "-D", str(data), "-l", str(folder / "pg.log"), "-w", "-o",
                                  f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=400", "start"],
                       check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return None, f"PostgreSQL did not start ({' '.join(str(getattr(exc, 'stderr', exc)).split())[:200]})", []
    stop = ["pg_ctl", as_user + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"]]
    return f"postgresql://mlflow@127.0.0.1:{port}/postgres", f"PostgreSQL on port {port}", [stop]


def _server(out: Path, backend: str) -> tuple[str, subprocess.Popen]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "analysis.cli", "server", "--backend-store-uri", backend, "--port",
                             str(port), "--workers", "4"], cwd=out, stdout=open(out / "server.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def up():
        import urllib.request

        if proc.poll() is not None:
            raise SystemExit(f"the MLflow server exited: {(out / 'server.log').read_text()[-600:]}")
        try:
            return urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200
        except OSError:
            return False

    _wait(up, 180, "the MLflow server")
    return uri, proc


def _spec(out: Path, args, uri: str, seeds: int) -> Path:
    import yaml

    spec = {"experiment": "scale", "description": f"bench/scale.py: {args.trials} simulated trials",
            "dataset": {"synthetic": {"n": 800, "points": 21, "seed": 0}, "data_dir": str(out / "data")},
            "archs": ["cgc"], "axes": {"n_train": N_TRAIN, "n_params": N_PARAMS, "seeds": list(range(seeds))},
            "budget": {"epochs": args.epochs, "patience": args.epochs},
            "hpo": {"trials_per_point": TPP, "space": {"lr": {"log_uniform": [1e-4, 1e-2]}, "batch_size": 32}},
            "simulate": {"epoch_s": args.epoch_s}, "resources": {"cpu": 1, "gpu": 0}, "system_metrics": False,
            "max_failures": 3, "tracking_uri": uri, "storage_path": str(out / "ray")}
    path = out / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of a live process and its threads, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return hwm / 1024, cpu
    except (OSError, StopIteration, IndexError, ValueError):
        return 0.0, 0.0


def _finished(c, exp_name: str) -> list:
    from sweeps import record, tracking

    exp = c.get_experiment_by_name(exp_name)
    if exp is None:
        return []
    return tracking.search_all(c, [exp.experiment_id], record.runs_filter(record.KIND_TRIAL, status=record.FINISHED))


def _drive(cmd: list[str], out: Path, name: str, c, total: int, stop_at: int | None, work_s: float) -> dict:
    """Run one driver invocation; kill it (SIGKILL, its group) once ``stop_at`` trials are FINISHED."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=out, stdout=open(out / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    rss = cpu = 0.0
    first = None
    before = len(_finished(c, "scale"))
    done = shown = before
    said = 0.0
    every = max(1.0, total / 500)  # listing the FINISHED runs loads the server too: less often for big sweeps
    while proc.poll() is None:
        time.sleep(every)
        r, u = _proc_stats(proc.pid)
        rss, cpu = max(rss, r), max(cpu, u)
        done = len(_finished(c, "scale"))
        if first is None and done > before:
            first = time.time() - t0 - work_s
        if done != shown or time.time() - said > 30:  # a line when the count moves, else every 30 s
            print(f"  {name}: {done}/{total} trials FINISHED after {time.time() - t0:.0f} s", file=sys.stderr,
                  flush=True)
            shown, said = done, time.time()
        if stop_at is not None and done >= stop_at:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
    return {"wall_s": time.time() - t0, "rss_mb": rss, "cpu_s": cpu, "finished_before": before,
            "finished_after": len(_finished(c, "scale")), "first_finish_s": first, "returncode": proc.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--epoch-s", type=float, default=0.5)
    ap.add_argument("--backend", default="postgres", choices=["postgres", "sqlite"])
    ap.add_argument("--kill-at", type=float, default=0.6, help="kill the driver at this fraction FINISHED (0: never)")
    ap.add_argument("--out", default="/tmp/matscale-bench-scale")
    args = ap.parse_args()

    from ray.cluster_utils import Cluster

    from sweeps import record, tracking

    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    seeds = max(1, round(args.trials / (len(N_PARAMS) * len(N_TRAIN) * TPP)))
    trials = len(N_PARAMS) * len(N_TRAIN) * TPP * seeds
    stoppers: list = []
    backend, used = None, "SQLite (asked for)"
    if args.backend == "postgres":
        backend, used, stoppers = _postgres(out)
        if backend is None:
            print(f"PostgreSQL skipped: {used}; using SQLite", file=sys.stderr)
            used = f"SQLite (PostgreSQL skipped: {used})"
    backend = backend or f"sqlite:///{out / 'mlflow.db'}"
    cluster = None
    server = None
    try:
        uri, server = _server(out, backend)
        per_node = -(-args.workers // args.nodes)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for i in range(args.nodes):
            cluster.add_node(num_cpus=min(per_node, args.workers - i * per_node))
        spec = _spec(out, args, uri, seeds)
        c = tracking.client(uri)
        cmd = [sys.executable, "-m", "analysis.cli", "sweep", str(spec), "--address", cluster.address]
        work = args.epochs * args.epoch_s
        stop_at = int(args.kill_at * trials) if args.kill_at else None
        first = _drive(cmd, out, "driver", c, trials, stop_at, work)
        second = _drive(cmd + ["--resume"], out, "resume", c, trials, None, work) if stop_at else None
        runs = _finished(c, "scale")
        exp = c.get_experiment_by_name("scale")
        t = time.perf_counter()
        spec_hash = runs[0].data.tags[record.SPEC_HASH] if runs else ""
        record.trial_runs(c, exp.experiment_id, spec_hash, record.FINISHED)
        skip_check_s = time.perf_counter() - t
    finally:
        if cluster is not None:
            cluster.shutdown()
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        for _, cmd in stoppers:
            subprocess.run(cmd, capture_output=True, timeout=120)
    keys = [r.data.tags[record.TRIAL_KEY] for r in runs]
    counts = {k: keys.count(k) for k in set(keys)}
    lost, duplicated = trials - len(counts), sum(n > 1 for n in counts.values())
    legs = [first] + ([second] if second else [])
    driver_s = sum(leg["wall_s"] for leg in legs)
    done_first = first["finished_after"] - first["finished_before"]
    overhead = (first["wall_s"] * args.workers - done_first * work) / max(done_first, 1)
    mlflow_ms = [1000 * r.data.metrics["mlflow_s_per_report"] for r in runs if "mlflow_s_per_report" in r.data.metrics]
    row = {"trials": trials, "workers": args.workers, "nodes": args.nodes, "backend": used,
           "finished": len(runs), "lost": lost, "duplicated": duplicated,
           "trials_per_min": 60 * len(runs) / driver_s, "overhead_s_per_trial": overhead,
           "driver_rss_mb": max(leg["rss_mb"] for leg in legs),
           "driver_cpu_s_per_trial": sum(leg["cpu_s"] for leg in legs) / max(len(runs), 1),
           "mlflow_p95_ms": float(np.percentile(mlflow_ms, 95)) if mlflow_ms else None,
           "skip_check_s": skip_check_s, "resume_s": second["first_finish_s"] if second else None,
           "killed_at_finished": first["finished_after"] if stop_at else None,
           "epochs": args.epochs, "epoch_s": args.epoch_s, "driver_s": driver_s}
    print(f"{'trials':>6} {'workers':>7} {'done':>5} {'lost':>4} {'dup':>4} {'trials/min':>10} {'overhead s':>10} "
          f"{'RSS MB':>7} {'CPU s/trial':>11} {'MLflow p95 ms':>13} {'skip check s':>12} {'resume s':>8}")
    fmt = (lambda v, f: format(v, f) if isinstance(v, (int, float)) else "–")
    print(f"{trials:>6} {args.workers:>7} {len(runs):>5} {lost:>4} {duplicated:>4} {row['trials_per_min']:>10.1f} "
          f"{overhead:>10.2f} {row['driver_rss_mb']:>7.0f} {row['driver_cpu_s_per_trial']:>11.3f} "
          f"{fmt(row['mlflow_p95_ms'], '>13.1f')} {skip_check_s:>12.2f} {fmt(row['resume_s'], '>8.1f')}")
    print(f"MLflow backend: {used}")
    print(json.dumps({"bench": "scale", **row}))


if __name__ == "__main__":
    main()
