"""``matscale server``: the MLflow tracking server, bound to 127.0.0.1 unless told otherwise.

    matscale server                                   # SQLite runs/mlflow.db, artifacts in runs/mlartifacts
    matscale server --host 10.0.1.12 --artifacts-destination s3://bucket/mlflow   # a cluster head (private IP)

The backend store is ``--backend-store-uri`` or ``$MLFLOW_BACKEND_STORE_URI`` (use the variable for a
PostgreSQL URI with a password, so it never appears in ``ps`` or in a file of the project). Artifacts are
proxied by the server (``--serve-artifacts``): workers need no credentials for the artifact store.
``--auth`` turns on MLflow's basic-auth app (users and passwords in its own database; the first admin
password comes from ``$MLFLOW_AUTH_CONFIG_PATH``'s ini, see MLflow's "Basic HTTP authentication").
Binding to a public interface (0.0.0.0, ::) needs ``--public``: the server has no TLS of its own.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
from pathlib import Path

from gnn.errors import InputError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def server_command(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, backend_store_uri: str | None = None,
                   artifacts_destination: str | None = None, auth: bool = False, public: bool = False,
                   workers: int = 2) -> list[str]:
    """The ``mlflow server`` command line (validated); the backend URI may come from the environment."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None  # a host name: resolved by the server
    if addr is not None and addr.is_unspecified and not public:
        raise InputError(f"--host {host} would accept connections on every interface, including public ones; "
                         "bind a private address (the node's internal IP) or add --public", field="host")
    if not 0 < port < 65536:
        raise InputError(f"port must be 1–65535, got {port}", field="port")
    from_env = not backend_store_uri and os.environ.get("MLFLOW_BACKEND_STORE_URI")
    backend = backend_store_uri or from_env or "sqlite:///runs/mlflow.db"
    if backend.startswith("sqlite:///"):
        Path(backend[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts_destination or "runs/mlartifacts"
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    cmd = [exe or "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers),
           "--serve-artifacts", "--artifacts-destination", artifacts]
    if not from_env:  # from the environment mlflow reads it itself, keeping a password out of the process list
        cmd += ["--backend-store-uri", backend]
    if addr is None or not addr.is_loopback:  # MLflow's Host-header check knows only private ranges by default
        cmd += ["--allowed-hosts", f"{host},{host}:{port},localhost,localhost:*,127.0.0.1,127.0.0.1:*"]
    if auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def serve(**kwargs) -> None:
    """Replace this process by the MLflow server (so signals and exit codes are the server's)."""
    cmd = server_command(**kwargs)
    print(f"MLflow tracking server on http://{kwargs.get('host', DEFAULT_HOST)}:{kwargs.get('port', DEFAULT_PORT)}"
          f" ({' '.join(cmd[1:])})", flush=True)
    os.execvp(cmd[0], cmd)
