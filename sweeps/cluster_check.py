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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gnn.errors import InputError

#: the GPU of AWS instance families (``g5.xlarge`` → ``g5``), as :data:`sweeps.resources.ACCELERATOR_GIB` names it
AWS_FAMILIES = {"g4dn": "T4", "p3": "V100", "p3dn": "V100", "g5": "A10G", "g6": "L4", "gr6": "L4", "g6e": "L40S",
                "p4d": "A100-40G", "p4de": "A100-80G", "p5": "H100", "p5e": "H200", "p5en": "H200"}
#: the GPU of GCP ``guestAccelerators[].acceleratorType`` values
GCP_ACCELERATORS = {"nvidia-tesla-t4": "T4", "nvidia-tesla-v100": "V100", "nvidia-l4": "L4",
                    "nvidia-tesla-a100": "A100-40G", "nvidia-a100-80gb": "A100-80G", "nvidia-h100-80gb": "H100",
                    "nvidia-h100-mega-80gb": "H100", "nvidia-h200-141gb": "H200"}
#: the GPU of GCP machine types that come with theirs (no guestAccelerators needed), by name prefix
GCP_MACHINES = {"g2-": "L4", "a2-highgpu-": "A100-40G", "a2-megagpu-": "A100-40G", "a2-ultragpu-": "A100-80G",
                "a3-ultragpu-": "H200", "a3-": "H100"}
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  #: where ``ray up`` leaves the cluster config on the head
COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands")
REMOTE = ("s3://", "gs://", "gcs://", "abfss://")
SETTINGS = {"--tracking-uri": "MLFLOW_TRACKING_URI", "--storage": "MATSCALE_STORAGE", "--shared": "MATSCALE_SHARED"}


@dataclass
class NodeType:
    """One entry of a launcher config's ``available_node_types``, as trials see it."""

    name: str
    cpu: float
    gpu: float
    max_workers: int  #: the most nodes of this type (the head: 1)
    accelerator: str | None  #: the GPU type: a ``accelerator_type:NAME`` resource, else the instance's, else None
    declared: str | None = None  #: the ``accelerator_type:NAME`` resource, where the config names one
    instance: str | None = None  #: the GPU type the node_config implies (instance family, guestAccelerators)
    head: bool = False


def _number(value, file, field: str, *, integer: bool = False) -> float:
    """A count of the config (≥ 0; a whole number where ``integer``), else an :class:`InputError` naming ``field``."""
    try:
        x = float(value or 0)
    except (TypeError, ValueError):
        x = -1.0
    if x < 0 or x != x or (integer and x != int(x)):
        raise InputError(f"must be a {'whole ' if integer else ''}number ≥ 0, got {value!r}", file=file, field=field)
    return int(x) if integer else x


def node_types(config: dict, file: str | Path | None = None) -> list[NodeType]:
    """The node types of a cluster-launcher config (as written, or prepared by Ray: ``~/ray_bootstrap_config.yaml``
    on the head): CPUs and GPUs from each type's ``resources``, the GPU type from an ``accelerator_type:NAME``
    resource, else from the node_config (AWS ``InstanceType`` family: :data:`AWS_FAMILIES`; GCP
    ``guestAccelerators`` or machine type: :data:`GCP_ACCELERATORS`, :data:`GCP_MACHINES`). The driver (under
    ``MATSCALE_AUTOSCALE=1``) and ``matscale cluster check`` both read them here."""
    head = config.get("head_node_type")
    cap = config.get("max_workers")  # the most workers of all types together
    out = []
    for name, t in (config.get("available_node_types") or {}).items():
        if not isinstance(t, dict):
            continue
        res = t.get("resources") or {}
        declared = next((str(k).split(":", 1)[1] for k in res if str(k).startswith("accelerator_type:")), None)
        instance = _instance_gpu(t.get("node_config") or {})
        where = f"available_node_types.{name}."
        cpu = _number(res.get("CPU", 0), file, where + "resources.CPU")
        gpu = _number(res.get("GPU", 0), file, where + "resources.GPU")
        most = _number(t.get("max_workers", 0), file, where + "max_workers", integer=True)
        cap_n = _number(cap, file, "max_workers", integer=True) if cap is not None else 1 << 30
        out.append(NodeType(name=str(name), cpu=cpu, gpu=gpu, max_workers=1 if name == head else min(most, cap_n),
                            accelerator=declared or instance, declared=declared, instance=instance,
                            head=name == head))
    return out


def _instance_gpu(node_config: dict) -> str | None:
    """The GPU type a node_config implies, or None (no GPU, or a type not in the tables)."""
    aws = node_config.get("InstanceType")
    if isinstance(aws, str):
        return AWS_FAMILIES.get(aws.split(".", 1)[0])
    for acc in node_config.get("guestAccelerators") or []:
        kind = str((acc or {}).get("acceleratorType", "")).rsplit("/", 1)[-1]  # also a full resource URL
        if kind in GCP_ACCELERATORS:
            return GCP_ACCELERATORS[kind]
    machine = str(node_config.get("machineType", "")).rsplit("/", 1)[-1]
    return next((gpu for prefix, gpu in GCP_MACHINES.items() if machine.startswith(prefix)), None)


def read_node_types(path: str | Path) -> list[NodeType]:
    """:func:`node_types` of the launcher config at ``path``; an :class:`InputError` naming it if it cannot be
    read or is not a launcher config."""
    path = Path(path).expanduser()
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError("no such cluster config", file=path) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the cluster config ({type(exc).__name__})", file=path) from None
    if not isinstance(config, dict) or not isinstance(config.get("available_node_types"), dict):
        raise InputError("not a Ray cluster-launcher config (no available_node_types)", file=path,
                         field="available_node_types")
    return node_types(config, path)


def cluster_config_path() -> tuple[Path, bool]:
    """The autoscaler's config: ``$MATSCALE_CLUSTER_CONFIG`` (True: named explicitly), else
    :data:`BOOTSTRAP_CONFIG` (``ray up`` writes it on the head)."""
    env = os.environ.get("MATSCALE_CLUSTER_CONFIG")
    return Path(env or BOOTSTRAP_CONFIG).expanduser(), bool(env)


def autoscaler_node_types() -> tuple[Path, list[NodeType] | None]:
    """The autoscaler's config (:func:`cluster_config_path`) and its node types (None: no config here)."""
    path, explicit = cluster_config_path()
    return path, (read_node_types(path) if explicit or path.exists() else None)


def sweep_gpus(spec, cluster_resources: dict | None = None):
    """The GPUs trials of ``spec`` may use (:func:`sweeps.resources.cluster_gpus`): Ray's ``cluster_resources``, or
    this machine's GPUs (torch) where there is no Ray cluster (a dry run, which plans for ``resources.gpu_type``
    whether there are GPUs or not); with ``MATSCALE_AUTOSCALE=1`` also the autoscaler's node types
    (:func:`cluster_config_path`: a missing file named by ``MATSCALE_CLUSTER_CONFIG`` is an error, a missing
    bootstrap config is no config)."""
    from sweeps import resources

    memory = None
    if cluster_resources is None:
        cluster_resources = {}
        if resources.is_auto(spec) or (isinstance(spec.resources, dict) and spec.resources.get("gpu")):
            import torch

            if torch.cuda.is_available() and torch.cuda.device_count():
                n = torch.cuda.device_count()
                cluster_resources["GPU"] = n
                memory = min(torch.cuda.get_device_properties(i).total_memory for i in range(n)) / 2**30
    planning = not cluster_resources  # a dry run: gpu_type names GPUs to plan for, there or not
    autoscale = resources.autoscaling()
    path, types = autoscaler_node_types() if autoscale else (None, None)
    gpus = resources.cluster_gpus(spec, cluster_resources, autoscale=autoscale, node_types=types, config=path,
                                  memory_gib=memory, planning=planning)
    if planning:
        gpus.where = gpus.where.replace("the Ray cluster", "this machine")
    return gpus


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
    types = node_types(config, path)
    _check_accelerators(path, types)
    if spec is not None:
        notes.append(_check_fit(path, spec, workers, local, types))
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


def _check_accelerators(path: Path, types: list[NodeType]) -> None:
    """A node type's ``accelerator_type:NAME`` must be a known GPU and the one its instance has (a changed
    InstanceType whose resource was left behind would size GPU shares for the wrong card)."""
    from sweeps.resources import ACCELERATOR_GIB

    for t in types:
        if t.declared and t.gpu and t.declared not in ACCELERATOR_GIB:
            raise InputError(f"unknown GPU type accelerator_type:{t.declared} (known: {', '.join(ACCELERATOR_GIB)})",
                             file=path, field=f"available_node_types.{t.name}.resources")
        if t.declared and t.instance and t.declared != t.instance:
            raise InputError(f"resources name accelerator_type:{t.declared} but the node_config's instance has "
                             f"{t.instance} GPUs: change one to match", file=path,
                             field=f"available_node_types.{t.name}.resources")


def _check_fit(path: Path, spec, workers: dict, local: bool, types: list[NodeType] | None = None) -> str:
    """A worker type holds one trial; with GPU workers, the packing of the spec's models on their GPU."""
    from sweeps import resources

    if local:
        cpu, gpu = _trial_resources(spec)
        return f"on-prem: Ray detects each machine's CPUs/GPUs at `ray start`; the spec asks {cpu:g} CPU, {gpu:g} GPU"
    types = [t for t in types or [] if t.name in workers]
    gpu_types = [t for t in types if t.gpu]
    if gpu_types or resources.gpu_type(spec):
        gpus = resources.cluster_gpus(spec, {}, autoscale=True, node_types=types, config=path)
        if gpu_types and not resources.gpu_type(spec):
            gpus.where = "worker type " + ", ".join(t.name for t in gpu_types)
    else:
        gpus = resources.GPUs(0, resources.GPU_MEMORY_GIB, None, "")
    res = resources.trial_resources(spec, gpus=gpus.count, gpu_memory=gpus.memory_gib, gpu_name=gpus.name)
    cpu, gpu = float(res["cpu"]), float(res["gpu"])
    fits = [n for n, t in workers.items()
            if float(t.get("resources", {}).get("CPU", 0)) >= cpu and float(t.get("resources", {}).get("GPU", 0)) >= gpu]
    if not fits:
        need = f"{gpu:g} GPU and {cpu:g} CPU" if gpu else f"{cpu:g} CPU"
        raise InputError(f"no worker type can hold one trial of {spec.path} ({need}); add a GPU worker type with "
                         "resources: {CPU: …, GPU: …}" if gpu else f"no worker type has {need}", file=path,
                         field="available_node_types")
    note = f"trials ({cpu:g} CPU, {gpu:g} GPU) fit worker types {', '.join(fits)}"
    packing = resources.packing_lines(spec, res, gpus) if gpu and gpu_types else []
    return note + "".join("\n  " + line for line in packing)


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
