"""``matscale ui``: the MLflow UI on a study's store, opened on an experiment's runs.

For a local SQLite store it starts ``mlflow ui`` on 127.0.0.1 and a free port (this process becomes the UI
server: Ctrl-C stops it) and prints the address that opens the experiment's runs table; for a tracking server it
prints that address on the server. Nothing is created: a store that does not exist is one line.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from gnn.errors import InputError
from sweeps import record, tracking

HOST = "127.0.0.1"


def experiment_url(base: str, experiment_id: str | None) -> str:
    """The UI address of an experiment's runs table in matscale's saved view (the UI's root without one).

    MLflow 3.17's UI opens an experiment on its GenAI overview in a new browser whatever the experiment's kind tag
    says; ``workflowType=machine_learning`` in the address opens the runs (checked in Chromium).
    """
    base = base.rstrip("/")
    if not experiment_id:
        return f"{base}/"
    return (f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={record.TRIALS_VIEW}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _experiment_id(uri: str, experiment: str | None) -> str | None:
    if not experiment:
        return None
    try:
        exp = tracking.client(uri).get_experiment_by_name(experiment)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the store could not be read
        raise InputError(tracking.redact_uri(f"cannot read {uri} ({type(exc).__name__}: {exc})"[:300]),
                         field="tracking_uri") from None
    if exp is None:
        raise InputError(f"no experiment named {experiment!r} at {tracking.redact_uri(uri)}", field="experiment")
    return exp.experiment_id


def ui_command(db: Path, port: int) -> list[str]:
    """``mlflow ui`` on the SQLite store ``db``, loopback only, artifacts of new experiments beside the store."""
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    return [exe or "mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}", "--host", HOST, "--port", str(port),
            "--artifacts-destination", str(db.parent / "mlartifacts")]


def open_ui(tracking_uri: str | None = None, experiment: str | None = None, port: int | None = None) -> None:
    """Start (a local store) or point to (a server) the MLflow UI on ``experiment``'s runs (see the module)."""
    uri = tracking.default_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        tracking.check_reachable(uri)
        uri = tracking.use_credentials(uri)
        print(f"MLflow UI: {experiment_url(uri, _experiment_id(uri, experiment))}")
        return
    if not uri.startswith("sqlite:///"):
        raise InputError(f"{tracking.redact_uri(uri)!r}: matscale ui opens sqlite:///PATH/mlflow.db stores and "
                         "http(s):// tracking servers", field="tracking_uri")
    db = Path(uri[len("sqlite:///"):].split("?", 1)[0]).resolve()
    if not db.is_file():
        raise InputError(f"there is no MLflow store at {db} (run a sweep first, or give --tracking-uri)",
                         field="tracking_uri")
    exp_id = _experiment_id(tracking.normalise_uri(uri), experiment)
    if port is not None and not 0 < port < 65536:
        raise InputError(f"--port must be 1–65535, got {port}", field="port")
    port = port or free_port()
    cmd = ui_command(db, port)
    print(f"MLflow UI: {experiment_url(f'http://{HOST}:{port}', exp_id)}   (starting; Ctrl-C stops it)", flush=True)
    os.execv(cmd[0], cmd)
