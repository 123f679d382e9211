"""Talking to MLflow: tracking URIs (default, credentials, redaction), opening stores safely, experiments, paged
searches and batched logging. What the runs hold is :mod:`sweeps.record`'s.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from functools import lru_cache
from pathlib import Path

from gnn.errors import InputError

DEFAULT_URI = "sqlite:///runs/mlflow.db"  #: where commands track without --tracking-uri or $MLFLOW_TRACKING_URI


@lru_cache(maxsize=8)
def client(uri: str):
    """One client per URI and process (opening a SQL store checks its schema: seconds, not milliseconds).

    A local SQLite store is opened (and, when new, created) under a file lock beside it, so two processes
    opening a new store at once cannot both run MLflow's schema migrations; a store left half-created by a
    process that did not take the lock is reported in one line with the fix.
    """
    from mlflow.tracking import MlflowClient

    def make():
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    if uri.startswith("sqlite:///"):
        return _open_sqlite(make, Path(uri[len("sqlite:///"):]))
    return make()


def _open_sqlite(make, db: Path):
    """``make()`` a client of a SQLite store and open (create or verify) the store while holding ``DB.lock``;
    errors become one line."""
    import logging

    from sweeps.file_lock import held

    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # "Creating initial tables…": noise
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with held(db.with_name(db.name + ".lock")):
            return _open_locked(make, db)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure here is about the store file, said in one line
        raise InputError(_sqlite_problem(db, exc), file=db) from None


def _open_locked(make, db: Path):
    broken = _half_created(db)
    if broken:  # before MLflow tries to migrate it further
        raise InputError(broken, file=db)
    c = make()
    c.search_experiments(max_results=1)  # MLflow creates or checks the schema on first use
    return c


def _half_created(db: Path) -> str | None:
    """A store whose creation was interrupted (tables but no schema version), said with the fix; else None."""
    import sqlite3

    if not db.exists() or db.stat().st_size == 0:
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
            versions = con.execute("select count(*) from alembic_version").fetchone()[0] \
                if "alembic_version" in tables else 0
            runs = con.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
        finally:
            con.close()
    except sqlite3.Error as err:
        return f"not a readable SQLite database ({err}); move it away and run again"
    if not tables or versions:
        return None
    if runs:
        return (f"MLflow store without a schema version holding {runs} runs; back it up, then run "
                f"'mlflow db upgrade sqlite:///{db}'")
    return (f"half-created MLflow store ({len(tables)} tables, no schema version, no runs: two processes created "
            f"it at once); delete {db} and run again")


def _sqlite_problem(db: Path, exc: Exception) -> str:
    """What is wrong with a SQLite store MLflow could not open, and the fix."""
    detail = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:160]
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        return f"the MLflow store is not writable ({detail}); make its folder writable or use another tracking URI"
    return _half_created(db) or f"cannot open the MLflow store ({type(exc).__name__}: {detail})"


def normalise_uri(uri: str) -> str:
    """Make ``sqlite:///relative/path.db`` absolute (workers may run elsewhere); creates nothing."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def use_credentials(uri: str) -> str:
    """An http(s) ``uri`` without its ``user:password@``, which become ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` of this process (and of the local Ray workers it starts) instead.

    MLflow 3 reads those variables on every request (its documented basic auth). It would also take the userinfo
    of the URL (``requests`` does), but then it prints the password: "View run at http://user:password@…" after
    every run it ends, and "API request to http://user:password@… failed" in its errors; without userinfo the URI
    is safe to pass around. Percent-escapes in the userinfo are decoded; credentials in the URI win over the
    variables. Workers on other nodes need the variables set there (as for any URI without credentials).
    """
    import urllib.parse

    if not uri.startswith(("http://", "https://")):
        return uri
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None:
        return uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = urllib.parse.unquote(parts.password)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def check_writable(uri: str, field: str = "tracking_uri", file: str | None = None) -> None:
    """A local SQLite store (created here if new) must take writes, and so must its folder (SQLite keeps its
    journal there): one line naming the store, before a sweep creates anything."""
    import sqlite3
    import tempfile

    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri[len("sqlite:///"):])
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=db.parent, prefix=".matscale-probe-").close()
        if db.exists():
            con = sqlite3.connect(db, timeout=30)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
            finally:
                con.close()
    except (OSError, sqlite3.Error) as exc:
        raise InputError(f"{db}: {_sqlite_problem(db, exc)}", file=file, field=field) from None


_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_LOOSE_USERINFO = re.compile(r"([^:/?#@]*):([^@]*)@")  # user:password@ whose password holds an unescaped / ? or #
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pwd|secret|token|api_?key|access_?key|secret_?key)=)[^&;#]*")


def redact_uri(uri: str) -> str:
    """``uri`` with its password replaced by ``***``, user and host kept: ``http://user:***@host:5000``.

    Works on every scheme (``http(s)://``, ``postgresql://``, ``mysql+pymysql://``…), on a password holding an
    unescaped ``@``, ``/``, ``?`` or ``#`` (SQLAlchemy accepts those), on ``password=``/``token=`` query
    parameters, and on any text that embeds URIs (an exception's message), so one call makes a line safe to
    print, log or raise. Apply it to every tracking or backend store URI that reaches output.
    """
    return _URI_IN_TEXT.sub(lambda m: _redact_one(m.group(0)), str(uri))


def _redact_one(uri: str) -> str:
    """:func:`redact_uri` of one ``scheme://…`` token."""
    scheme, rest = uri.split("://", 1)
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    at = authority.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = f"{user}:***{rest[at:]}" if colon else rest
    else:
        m = _LOOSE_USERINFO.match(rest)
        if m and not re.fullmatch(r"\d*(?:[/?#].*)?", m.group(2), flags=re.S):  # not host:port/path@…
            rest = f"{m.group(1)}:***{rest[m.end() - 1:]}"
    return _SECRET_QUERY.sub(r"\1***", f"{scheme}://{rest}")


def check_reachable(uri: str, field: str = "tracking_uri", file: str | None = None) -> None:
    """Fail fast, with one line (the password masked), when the tracking server cannot be reached.

    Credentials go in a basic-auth header, as the MLflow client sends them: from the URI's userinfo
    (``http://user:password@host:5000``, percent-encoded where needed), else from ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``. MLflow 3 would take the userinfo too (``requests`` reads it from the URL), but it
    prints its URI ("View run at http://user:password@…") and repeats it in error texts: give MLflow the URI
    without userinfo and the credentials in those variables (:func:`use_credentials`).
    """
    if uri.startswith(("http://", "https://")):
        import base64
        import urllib.error
        import urllib.parse
        import urllib.request

        parts = urllib.parse.urlsplit(uri)
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")
        user, password = ((urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
                          if parts.username is not None else
                          (os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")))
        headers = {}
        if user:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        try:
            urllib.request.urlopen(urllib.request.Request(url + "/health", headers=headers), timeout=5).read()
        except urllib.error.HTTPError as exc:
            why = (f"is not healthy (HTTP {exc.code} {exc.reason})" if exc.code not in (401, 403) else
                   f"refused the credentials (HTTP {exc.code}): check the user and password" if user else
                   f"asks for credentials (HTTP {exc.code}): give user:password@ in the URI or set "
                   "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
            raise InputError(f"tracking server {redact_uri(uri)} {why}", file=file, field=field) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise InputError(f"tracking server {redact_uri(uri)} is not reachable "
                             f"({redact_uri(getattr(exc, 'reason', exc))})", file=file, field=field) from None
    elif uri.startswith("file:") or "://" not in uri:
        raise InputError(f"{redact_uri(uri)!r}: use sqlite:///PATH/mlflow.db locally or an http(s):// server (MLflow "
                         "refuses the file store)", file=file, field=field)


ARTIFACTS_DIR = "mlartifacts"  #: beside a local SQLite store: DIR/mlartifacts/<experiment>/<run id>/artifacts


def default_artifact_location(uri: str | None, name: str) -> str | None:
    """Where a new experiment ``name`` of the store ``uri`` keeps its artifacts: for a local SQLite store
    ``DIR/mlflow.db``, ``file://DIR/mlartifacts/<name>`` beside it (MLflow's own default, ``./mlruns``, is under
    whatever folder the creating process ran in); None for anything else (a tracking server decides: run it with
    ``--serve-artifacts``). A name unsafe in a path gets a hash suffix, so two names never share a folder."""
    import hashlib

    if not uri or not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):].split("?", 1)[0]).resolve()
    folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".") or "experiment"
    if folder != name:
        folder += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return (db.parent / ARTIFACTS_DIR / folder).as_uri()


def experiment_id(c, name: str, artifact_location: str | None = None, tags: dict | None = None,
                  defaults: dict | None = None) -> str:
    """Id of experiment ``name``, created on first use (on the driver), with experiment ``tags``.

    A new experiment of a local SQLite store keeps its artifacts beside the store
    (:func:`default_artifact_location` of the client's URI) unless ``artifact_location`` is given. On a new and on a
    reused experiment alike, each of ``tags`` is set when its value differs and each of ``defaults`` when it is
    absent (a user may have changed it since): idempotent, a second call writes nothing.
    """
    exp = c.get_experiment_by_name(name)
    if exp is None:
        location = artifact_location or default_artifact_location(getattr(c, "tracking_uri", None), name)
        try:
            exp = c.get_experiment(c.create_experiment(name, artifact_location=location))
        except Exception:
            exp = c.get_experiment_by_name(name)  # created concurrently by another driver
            if exp is None:
                raise
    elif exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    writes = {k: str(v) for k, v in (tags or {}).items() if exp.tags.get(k) != str(v)}
    writes.update({k: str(v) for k, v in (defaults or {}).items() if k not in exp.tags and k not in writes})
    for key, value in writes.items():
        c.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def runs_view(name: str, search_filter: str, metrics: tuple[str, ...] | list[str], order_by: str) -> str:
    """A runs-table view for the MLflow UI, the value of experiment tag ``mlflow.sharedViewState.KEY``: listed
    under *Views* as ``name`` and opened by ``…/#/experiments/ID/runs?viewStateShareKey=KEY``; it shows the runs
    matching ``search_filter`` (flat, not nested under their parents), sorted by metric ``order_by`` ascending,
    with ``metrics`` as the first columns. This is the format the UI writes when a view is saved (MLflow 3; the
    state may be plain JSON); anything it does not name keeps the UI's default."""
    import json

    columns = [f"metrics.`{m}`" for m in metrics]
    state = {"searchFilter": search_filter, "orderByKey": f"metrics.`{order_by}`", "orderByAsc": True,
             "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
             "selectedColumns": columns, "columnOrder": columns, "runsHiddenMode": "SHOW_ALL"}
    now = int(time.time() * 1000)
    return json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)})


def experiment_note(description: str, metric: str = "val_loss", view: str = "matscale trials") -> str:
    """An experiment's description for the MLflow UI (markdown): the spec's ``description``, then how to read its
    runs (``metric``: the final validation loss's name; ``view``: the name of the :func:`runs_view`)."""
    how = (f"**How to read it.** In *Model training* mode (top left; a URL with `?workflowType=machine_learning`), "
           f"**Views** ▸ *{view}* lists every trial with its `{metric}` and its axes (`n_params`, `n_train`, "
           f"`seed`) as columns. Otherwise: one `grid-…` (or `refine-…`) run per `matscale sweep`, its trials "
           f"nested under it (expand it), named `ARCH-N<parameters>-D<training structures>-s<seed>-t<HPO trial>`; a "
           f"finished trial's *Description* gives its `{metric}`; **Columns** ▸ Metrics adds any metric. Each "
           f"`analysis-…` run holds the fitted scaling laws: open `report.html` under *Artifacts*.")
    text = redact_uri(description.strip()) if description and description.strip() else ""
    return f"{text}\n\n{how}" if text else how


def trial_note(metrics: dict, metric: str = "val_loss") -> str:
    """A finished trial's description for the MLflow UI, one line (the runs table's *Description* column):
    ``val_loss 0.4321 · N 10,104 params · D 300 · seed 0 · 12 epochs``."""
    def num(key: str, fmt: str) -> str:
        v = metrics.get(key)
        return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"

    parts = [f"{metric} {num(metric, '.4g')}", f"N {num('n_params', ',.0f')} params", f"D {num('n_train', ',.0f')}"]
    if "seed" in metrics:
        parts.append(f"seed {num('seed', '.0f')}")
    if "epochs" in metrics:
        parts.append(f"{num('epochs', '.0f')} epochs")
    return " · ".join(parts)


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


def default_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_URI`."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
