"""``matscale cluster check FILE…``: validate cluster configs offline, before ``ray up`` spends money.

Two kinds of file:

* Ray cluster-launcher YAMLs (``cluster/aws-gpu.yaml``, ``gcp-gpu.yaml``, ``onprem.yaml``): Ray's own schema
  through its config preparation and validation (``ray.autoscaler._private.util.prepare_config`` and
  ``validate_config``: private API, hence Ray is pinned), then matscale's rules;
* KubeRay manifests (``kind: RayCluster`` / ``RayJob``, ``cluster/kuberay/``): the fields matscale relies on.

matscale's rules, for a cluster of more than one node:

* token authentication is on for every node (``RAY_AUTH_MODE=token``, or ``authOptions`` in KubeRay);
* the MLflow tracking URI reaches every node: an ``http(s)://`` server, not a local file or SQLite path;
* Ray results and the graph store are shared: ``s3://``/``gs://`` or under a declared shared mount;
* nothing is opened to the internet: no ``0.0.0.0/0`` ingress rule, no server bound to ``0.0.0.0``, no
  LoadBalancer/NodePort service;
* with ``--spec``: a worker type can hold one trial (its CPUs, and GPUs when the spec asks for them).

The tracking URI and storage are read where matscale's configs set them: the arguments of
``cluster/node-setup.sh`` (``--tracking-uri``, ``--storage``, ``--shared``) or ``NAME=value`` assignments of
``MLFLOW_TRACKING_URI``, ``MATSCALE_STORAGE`` and ``MATSCALE_SHARED`` in the commands or container env.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from gnn.errors import InputError

COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands")
REMOTE = ("s3://", "gs://", "gcs://", "abfss://")
SETTINGS = {"--tracking-uri": "MLFLOW_TRACKING_URI", "--storage": "MATSCALE_STORAGE", "--shared": "MATSCALE_SHARED"}


def check_file(path: str | Path, spec=None) -> list[str]:
    """Validate one config; returns notes (what was checked) or raises :class:`InputError` naming the problem."""
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read it ({type(exc).__name__}: {exc.strerror or exc})"
                         if isinstance(exc, OSError) else "not a text file", file=path) from None
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML ({' '.join(str(exc).split())[:200]})", file=path) from None
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise InputError("expected a YAML mapping", file=path)
    if any("kind" in d for d in docs):
        return _check_kuberay(path, docs, spec)
    if len(docs) > 1:
        raise InputError("a cluster-launcher config is a single YAML document", file=path)
    return _check_launcher(path, docs[0], spec)


# --------------------------------------------------------------------------------------------- launcher YAMLs

def _check_launcher(path: Path, raw: dict, spec) -> list[str]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler._private.util").setLevel(logging.WARNING)  # "setting max workers …"
    if not isinstance(raw.get("provider"), dict) or "type" not in raw["provider"]:
        raise InputError("missing provider.type (aws, gcp, local, …)", file=path, field="provider")
    try:
        config = prepare_config(copy.deepcopy(raw))
        validate_config(config)
    except Exception as exc:  # jsonschema.ValidationError, ValueError, KeyError from Ray's checks
        raise InputError(f"Ray rejects the config: {_ray_message(exc)}", file=path,
                         field=_ray_field(exc)) from None
    notes = [f"Ray schema ok (provider {config['provider']['type']})"]
    types = config.get("available_node_types", {})
    head = config.get("head_node_type")
    workers = {name: t for name, t in types.items() if name != head}
    local = config["provider"]["type"] == "local"
    worker_ips = config["provider"].get("worker_ips") or []
    multi = (local and len(worker_ips) > 0) or any(t.get("max_workers", 0) > 0 for t in workers.values())
    commands = [c for key in COMMAND_KEYS for c in config.get(key, []) or []]
    for t in types.values():
        commands += [c for key in COMMAND_KEYS for c in t.get(key, []) or []]
    settings = _settings(commands)
    own = {c for key in COMMAND_KEYS for c in raw.get(key, []) or []}
    _check_exposure(path, config, commands, own)
    if multi:
        _check_multi_node(path, settings, auth=any("RAY_AUTH_MODE=token" in c or "node-setup.sh" in c
                                                   for c in commands))
        notes.append("multi-node: token auth, tracking server and shared storage ok")
    if spec is not None:
        notes.append(_check_fit(path, spec, workers, local))
    return notes


def _ray_message(exc: Exception) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return " ".join(msg.split())[:300]


def _ray_field(exc: Exception) -> str | None:
    where = list(getattr(exc, "absolute_path", []) or [])
    if not where and "Additional properties" in str(exc):
        m = re.search(r"\('([^']+)' was unexpected", str(exc))
        return m.group(1) if m else None
    return ".".join(str(p) for p in where) or None


def _settings(commands: list[str]) -> dict[str, str]:
    """Values of the tracking URI / storage / shared mount as the commands set them."""
    out: dict[str, str] = {}
    for cmd in commands:
        try:
            words = shlex.split(cmd, comments=False)
        except ValueError:
            words = cmd.split()
        for i, w in enumerate(words):
            if w in SETTINGS and i + 1 < len(words):
                out[SETTINGS[w]] = words[i + 1]
            for name in SETTINGS.values():
                if w.startswith(f"{name}="):
                    out[name] = w.split("=", 1)[1]
    return out


def _check_multi_node(path: Path, settings: dict, auth: bool) -> None:
    if not auth:
        raise InputError("more than one node but Ray token authentication is off: export RAY_AUTH_MODE=token on "
                         "every node (cluster/node-setup.sh does) and ship the token (file_mounts ~/.ray/auth_token)",
                         file=path, field="setup_commands")
    uri = settings.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise InputError("more than one node but no tracking URI is exported to them: pass --tracking-uri "
                         "http://HEAD_IP:5000 to cluster/node-setup.sh", file=path, field="setup_commands")
    if not uri.startswith(("http://", "https://")):
        raise InputError(f"tracking URI {uri!r} is a local file on a multi-node cluster: every node would write its "
                         "own store; use the tracking server (http://HEAD_IP:5000)", file=path,
                         field="MLFLOW_TRACKING_URI")
    shared = settings.get("MATSCALE_SHARED")
    storage = settings.get("MATSCALE_STORAGE") or (f"{shared}/matscale/ray" if shared else None)
    if not shared:
        raise InputError("more than one node but no shared filesystem for the graph store: pass --shared MOUNT "
                         "(and --nfs SERVER:/EXPORT) to cluster/node-setup.sh", file=path, field="MATSCALE_SHARED")
    if not (storage.startswith(REMOTE) or storage.startswith(shared.rstrip("/") + "/") or storage == shared):
        raise InputError(f"Ray results at {storage!r} are not shared between nodes: use s3://, gs:// or a path "
                         f"under the shared mount {shared}", file=path, field="MATSCALE_STORAGE")


def _check_exposure(path: Path, config: dict, commands: list[str], own: set[str]) -> None:
    for rule in (config["provider"].get("security_group") or {}).get("IpPermissions", []) or []:
        for r in rule.get("IpRanges", []) + rule.get("Ipv6Ranges", []):
            if r.get("CidrIp") == "0.0.0.0/0" or r.get("CidrIpv6") == "::/0":
                raise InputError(f"opens port {rule.get('FromPort')} to the internet; reach services through an SSH "
                                 "tunnel instead", file=path, field="provider.security_group.IpPermissions")
    for cmd in commands:
        if re.search(r"--(dashboard-host|host)[= ]+(0\.0\.0\.0|::)(\s|$)", cmd):
            if cmd not in own and any(cmd in (config.get(k) or []) for k in COMMAND_KEYS):
                raise InputError("Ray's default start commands for this provider bind the dashboard to 0.0.0.0: set "
                                 "head_start_ray_commands with --dashboard-host=127.0.0.1 (see cluster/aws-gpu.yaml)",
                                 file=path, field="head_start_ray_commands")
            raise InputError(f"binds a server to every interface ({cmd.strip()[:80]}…); bind 127.0.0.1 or the "
                             "node's private address", file=path, field="commands")


def _trial_resources(spec) -> tuple[float, float]:
    """(CPUs, GPUs) of one trial on a cluster with GPUs (``auto``: the share of an unnamed GPU its largest model
    needs)."""
    from sweeps.resources import trial_resources

    r = trial_resources(spec, gpus=1)
    return float(r["cpu"]), float(r["gpu"])


def _check_fit(path: Path, spec, workers: dict, local: bool) -> str:
    cpu, gpu = _trial_resources(spec)
    if local:
        return f"on-prem: Ray detects each machine's CPUs/GPUs at `ray start`; the spec asks {cpu:g} CPU, {gpu:g} GPU"
    fits = [n for n, t in workers.items()
            if float(t.get("resources", {}).get("CPU", 0)) >= cpu and float(t.get("resources", {}).get("GPU", 0)) >= gpu]
    if not fits:
        need = f"{gpu:g} GPU and {cpu:g} CPU" if gpu else f"{cpu:g} CPU"
        raise InputError(f"no worker type can hold one trial of {spec.path} ({need}); add a GPU worker type with "
                         "resources: {CPU: …, GPU: …}" if gpu else f"no worker type has {need}", file=path,
                         field="available_node_types")
    return f"trials ({cpu:g} CPU, {gpu:g} GPU) fit worker types {', '.join(fits)}"


# --------------------------------------------------------------------------------------------- KubeRay manifests

def _check_kuberay(path: Path, docs: list[dict], spec) -> list[str]:
    notes = []
    for i, doc in enumerate(docs):
        kind = doc.get("kind")
        where = f"{kind or 'document'} {doc.get('metadata', {}).get('name', i)}"
        if kind == "Service" and doc.get("spec", {}).get("type") in ("LoadBalancer", "NodePort"):
            raise InputError(f"service type {doc['spec']['type']} exposes the cluster outside Kubernetes; use "
                             "ClusterIP and kubectl port-forward", file=path, entry=where, field="spec.type")
        if kind not in ("RayCluster", "RayJob"):
            continue
        if not str(doc.get("apiVersion", "")).startswith("ray.io/"):
            raise InputError(f"apiVersion must be ray.io/v1, got {doc.get('apiVersion')!r}", file=path, entry=where,
                             field="apiVersion")
        cluster = doc.get("spec", {}).get("rayClusterSpec") if kind == "RayJob" else doc.get("spec")
        if not isinstance(cluster, dict) or "headGroupSpec" not in cluster:
            raise InputError("missing the Ray cluster spec (headGroupSpec)", file=path, entry=where,
                             field="spec.rayClusterSpec" if kind == "RayJob" else "spec")
        groups = [cluster["headGroupSpec"]] + list(cluster.get("workerGroupSpecs") or [])
        containers = [c for g in groups for c in g.get("template", {}).get("spec", {}).get("containers", [])]
        if not containers:
            raise InputError("no containers in the head or worker templates", file=path, entry=where,
                             field="headGroupSpec.template")
        env = {e.get("name"): e.get("value", "<from secret>") for c in containers for e in c.get("env", []) or []}
        token = (cluster.get("authOptions") or {}).get("mode") == "token" or env.get("RAY_AUTH_MODE") == "token"
        if not token:
            raise InputError("token authentication is off: set authOptions: {mode: token} (KubeRay ≥ 1.5.1) or "
                             "RAY_AUTH_MODE=token with RAY_AUTH_TOKEN from a Secret", file=path, entry=where,
                             field="authOptions")
        uri = env.get("MLFLOW_TRACKING_URI")
        if not uri or not (uri.startswith(("http://", "https://")) or uri == "<from secret>"):
            raise InputError(f"MLFLOW_TRACKING_URI must be an http(s):// tracking server, got {uri!r}", file=path,
                             entry=where, field="env.MLFLOW_TRACKING_URI")
        workers = cluster.get("workerGroupSpecs") or []
        if spec is not None:
            _, gpu = _trial_resources(spec)
            has_gpu = any(str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) not in ("0", "")
                          for g in workers for c in g.get("template", {}).get("spec", {}).get("containers", []))
            if gpu and not has_gpu:
                raise InputError(f"{spec.path} asks for GPUs but no worker group has nvidia.com/gpu limits", file=path,
                                 entry=where, field="workerGroupSpecs")
        mounts = [m.get("mountPath") for c in containers for m in c.get("volumeMounts", []) or []]
        if workers and not mounts:
            raise InputError("no shared volume for the graph store and Ray results (mount a ReadWriteMany PVC)",
                             file=path, entry=where, field="volumeMounts")
        notes.append(f"{where}: token auth, tracking server, shared volume ok")
    kinds = sorted({str(d.get("kind")) for d in docs if d.get("kind") not in ("RayCluster", "RayJob")})
    if kinds:
        notes.append(f"{', '.join(kinds)}: no public service")
    return notes


def check_files(paths: list[str], spec_path: str | None = None) -> list[tuple[str, list[str]]]:
    """Check every file; the first bad one raises."""
    spec = _load_spec_for_check(spec_path) if spec_path else None
    return [(p, check_file(p, spec)) for p in paths]


def _load_spec_for_check(spec_path: str) -> Any:
    """Load a spec whose ``${VAR}``s are set only on the cluster (placeholders stand in for them here)."""
    from sweeps.spec import load_spec

    text = Path(spec_path).read_text() if Path(spec_path).exists() else ""
    missing = {m for m in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text) if m not in os.environ}
    try:
        for k in missing:
            os.environ[k] = "http://cluster-placeholder:5000" if "URI" in k else f"/cluster-placeholder/{k}"
        return load_spec(spec_path)
    finally:
        for k in missing:
            os.environ.pop(k, None)
