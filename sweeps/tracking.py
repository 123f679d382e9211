"""MLflow bookkeeping for sweeps: experiments, parent and trial runs, and the lookups that keep re-runs idempotent.

Conventions (the analysis reads these):

* one experiment per study; a parent run per sweep invocation (tag ``matscale.stage``: ``grid``, ``refine``…);
* one child run per trial, tagged ``mlflow.parentRunId``, ``matscale.sweep_id``, ``matscale.spec_hash``,
  ``matscale.point`` (arch, n_params target, n_train, seed) and ``matscale.trial_key`` (point + HPO index);
* params: the flattened trial config; metrics: the scaling axes (so they filter numerically), per-epoch
  curves under ``epoch/…`` and the final ``val_*`` / ``test_*`` metrics of the best-validation model.
"""

from __future__ import annotations

import os
import subprocess
import time
from functools import lru_cache
from pathlib import Path

from gnn.errors import InputError

TAG = "matscale."
FINISHED, RUNNING, FAILED, KILLED = "FINISHED", "RUNNING", "FAILED", "KILLED"


@lru_cache(maxsize=8)
def client(uri: str):
    """One client per URI and process (opening a SQL store checks its schema: seconds, not milliseconds)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def normalise_uri(uri: str) -> str:
    """Make ``sqlite:///relative/path.db`` absolute (workers may run elsewhere) and create its folder."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith("sqlite:////"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def check_reachable(uri: str, field: str = "tracking_uri", file: str | None = None) -> None:
    """Fail fast, with one line, when the tracking server cannot be reached."""
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise InputError(f"tracking server {uri} is not reachable ({getattr(exc, 'reason', exc)})",
                             file=file, field=field) from None
    elif uri.startswith("file:") or "://" not in uri:
        raise InputError(f"{uri!r}: use sqlite:///PATH/mlflow.db locally or an http(s):// server (MLflow refuses "
                         "the file store)", file=file, field=field)


def experiment_id(c, name: str, artifact_location: str | None = None) -> str:
    """Id of experiment ``name``, created on first use (on the driver)."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created concurrently by another driver
        return c.get_experiment_by_name(name).experiment_id


def search_all(c, experiment_ids: list[str], filter_string: str = "", run_view: str = "ACTIVE_ONLY") -> list:
    """All runs matching a filter, following pagination."""
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = c.search_runs(experiment_ids, filter_string=filter_string, run_view_type=getattr(ViewType, run_view),
                             max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def trial_runs(c, exp_id: str, spec_hash: str, status: str | None = None) -> list:
    """Trial runs of a spec (any sweep invocation), optionally with one status."""
    f = f"tags.`{TAG}spec_hash` = '{spec_hash}' and tags.`{TAG}kind` = 'trial'"
    if status:
        f += f" and attributes.status = '{status}'"
    return search_all(c, [exp_id], f)


def find_trial_run(c, exp_id: str, spec_hash: str, trial_key: str):
    """The run of one trial (same spec), preferring a FINISHED one; None if it never started."""
    runs = search_all(c, [exp_id], f"tags.`{TAG}spec_hash` = '{spec_hash}' and tags.`{TAG}trial_key` = '{trial_key}'")
    runs.sort(key=lambda r: (r.info.status != FINISHED, -r.info.start_time))
    return runs[0] if runs else None


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_batch(c, run_id: str, metrics: dict | None = None, params: dict | None = None, step: int = 0,
              tags: dict | None = None) -> None:
    """One HTTP call for many metrics/params/tags (MLflow caps a batch at 1000 metrics, 100 params)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if isinstance(v, (int, float))]
    ps = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    while ms or ps or ts:  # limits per call: 1000 metrics, 100 params, 100 tags, 1000 entries in all
        (bm, ms), (bp, ps), (bt, ts) = (ms[:800], ms[800:]), (ps[:100], ps[100:]), (ts[:100], ts[100:])
        c.log_batch(run_id, metrics=bm, params=bp, tags=bt)


def count_missing(c, exp_id: str, spec, points: list) -> int:
    """How many trials of a spec have no FINISHED run yet (failed ones count as missing)."""
    done = {r.data.tags.get(f"{TAG}trial_key") for r in trial_runs(c, exp_id, spec.hash, FINISHED)}
    return sum(f"{p.key}-t{t}" not in done for p in points for t in range(spec.hpo["trials_per_point"]))


def mark_unfinished(c, exp_id: str, parent_run_id: str, status: str = KILLED) -> int:
    """Set every still-RUNNING child run of a parent to ``status``; returns how many."""
    runs = search_all(c, [exp_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'")
    for r in runs:
        c.set_terminated(r.info.run_id, status)
    return len(runs)


def env_tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI")
