"""``matscale server``: the MLflow tracking server, bound to 127.0.0.1 unless told otherwise.

    matscale server                                   # SQLite runs/mlflow.db, artifacts in runs/mlartifacts beside it
    matscale server --host 10.0.1.12 --public --auth --artifacts-destination s3://bucket/mlflow   # a cluster head

The backend store is ``--backend-store-uri`` or ``$MLFLOW_BACKEND_STORE_URI`` (use the variable for a
PostgreSQL URI with a password, so it never appears in ``ps`` or in a file of the project). Artifacts are
proxied by the server (``--serve-artifacts``): workers need no credentials for the artifact store.
``--auth`` turns on MLflow's basic-auth app (users and passwords in its own database; the first admin
password comes from ``$MLFLOW_AUTH_CONFIG_PATH``'s ini, see MLflow's "Basic HTTP authentication").
Binding anything but loopback needs ``--public`` (the server has no TLS of its own): the host is resolved first,
so ``0``, ``0.0.0.0``, ``::``, a private or public IP and a name of one all count; MLflow's Host-header check is
no defence (a client sends ``Host: localhost``). ``--public`` also needs ``--auth``, or ``--no-auth`` said out
loud (an authenticating proxy in front), which prints a warning. ``--auth`` needs ``mlflow[auth]`` and
``$MLFLOW_FLASK_SERVER_SECRET_KEY``. Printed command lines and URIs have their passwords masked.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import sys
from pathlib import Path

from gnn.errors import InputError
from sweeps import tracking

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def server_command(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, backend_store_uri: str | None = None,
                   artifacts_destination: str | None = None, auth: bool = False, public: bool = False,
                   workers: int = 2) -> list[str]:
    """The ``mlflow server`` command line (validated); the backend URI may come from the environment."""
    exposed = [a for a in bind_addresses(host) if not (getattr(a, "ipv4_mapped", None) or a).is_loopback]
    if exposed and not public:
        where = ("every interface, including public ones" if any(a.is_unspecified for a in exposed) else
                 f"{exposed[0]}, which other machines can reach")
        raise InputError(f"--host {host} would accept connections on {where}; the server has no TLS: keep the "
                         "default 127.0.0.1 (reach it through an SSH tunnel) or add --public with --auth", field="host")
    if not 0 < port < 65536:
        raise InputError(f"port must be 1–65535, got {port}", field="port")
    if workers < 1:
        raise InputError(f"--workers must be 1 or more, got {workers}", field="workers")
    if auth:
        _check_auth_setup()
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None  # a host name: MLflow's Host-header check must be told it
    from_env = not backend_store_uri and os.environ.get("MLFLOW_BACKEND_STORE_URI")
    backend = backend_store_uri or from_env or tracking.DEFAULT_URI
    if backend.startswith("sqlite:///"):
        Path(backend[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    local = backend.startswith("sqlite:///")  # artifacts beside the store, as for sweeps (tracking.py)
    artifacts = artifacts_destination or (str(Path(backend[len("sqlite:///"):]).resolve().parent / "mlartifacts")
                                          if local else "mlartifacts")
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


def bind_addresses(host: str) -> list:
    """Every address a server bound to ``host`` listens on (a name resolved as the server will resolve it)."""
    if host in ("", "*"):  # what uvicorn and gunicorn take for every interface
        return [ipaddress.ip_address("0.0.0.0")]
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise InputError(f"--host {host} does not resolve ({exc})", field="host") from None
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def auth_policy(public: bool, auth: bool, no_auth: bool) -> str | None:
    """``--public`` needs ``--auth`` or an explicit ``--no-auth``; returns the warning to print for the latter."""
    if auth and no_auth:
        raise InputError("--auth and --no-auth contradict each other", field="auth")
    if not public or auth:
        return None
    if not no_auth:
        raise InputError("--public without --auth lets anyone who reaches the port read, change and delete every "
                         "run; add --auth (MLflow basic auth), or --no-auth when an authenticating proxy is in front",
                         field="auth")
    return ("--public --no-auth: the tracking server accepts anyone who can reach it, without a password or TLS; "
            "keep an authenticating proxy in front of it")


def _check_auth_setup() -> None:
    """What MLflow's basic-auth app needs before it starts (without it, the server dies with a traceback)."""
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        raise InputError("--auth needs MLflow's auth extras: pip install 'mlflow[auth]'", field="auth")
    if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        raise InputError("--auth needs $MLFLOW_FLASK_SERVER_SECRET_KEY (CSRF protection): a random string, the same "
                         "for every server of the store, e.g. from `openssl rand -hex 32`", field="auth")


def serve(*, no_auth: bool = False, **kwargs) -> None:
    """Replace this process by the MLflow server (so signals and exit codes are the server's)."""
    from sweeps.tracking import redact_uri

    warning = auth_policy(kwargs.get("public", False), kwargs.get("auth", False), no_auth)
    cmd = server_command(**kwargs)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    print(redact_uri(f"MLflow tracking server on http://{kwargs.get('host', DEFAULT_HOST)}:"
                     f"{kwargs.get('port', DEFAULT_PORT)} ({' '.join(cmd[1:])})"), flush=True)
    os.execvp(cmd[0], cmd)
