"""What one trial asks Ray for: the spec's ``resources``, or with ``resources: auto`` (also ``{gpu: auto, cpu: N,
gpu_type: NAME}``) one CPU (or ``cpu``) and, where the cluster has GPUs, a share of one GPU sized to the model.

A trial's GPU memory is estimated (:func:`trial_need`) as

    :data:`CONTEXT_GIB` (CUDA context, cuBLAS workspace, one graph batch)
    + :data:`BYTES_PER_PARAM` × parameters (fp32 weights, gradients and AdamW's two moments: 16 B)
    + activations: max(:data:`TRAIN_PEAK` × the tensors one training forward pass keeps for backward at the
      largest batch the HPO space can draw, :data:`EVAL_PEAK` × one layer's at the evaluation batch size)
    + the spectrum head's output and its gradient (batch × 2 × points, fp32, twice)
    + the store's tensors and graphs where ``gnn.train`` keeps them on the GPU (:func:`data_gib`: when they take at
      most :data:`gnn.defaults.RESIDENT_FRACTION` of the share).

The tensors kept for backward (:func:`activation_bytes`) grow with the batch's edges and atoms, the width ``w``, the
feed-forward width ``f`` and the layers ``L`` (``w``, ``f`` from :func:`gnn.models.plan`, on the meta device):
``L·E·(a·w + b) + E·c + L·N·(d·w + e·f) + N·g + B·h·w`` (E edges, N atoms, B structures of the batch;
:data:`ACTIVATION` holds a…h per architecture). Edges and atoms per structure come from the sweep's store (mean
plus three standard errors of a batch), else :data:`DEFAULT_EDGES` and :data:`DEFAULT_ATOMS`.

**Calibration** (CPU, fp32, torch 2.x, torch_geometric's CGConv and TransformerConv; ``tests/test_resources.py``
measures it again): every storage saved for backward during one forward pass
(``torch.autograd.graph.saved_tensors_hooks``, unique storages' ``nbytes``, parameters excluded: they are in the
16 B per parameter), for ``cgc`` and ``transformer`` at 5e3, 3e4, 2e5 and 1e6 parameters (widths 8…212), 2 and 3
layers, batches of 8 and 32 structures from the synthetic demo data (5.8 atoms, 183 edges per structure at 5.5 Å)
and from Petousis (7.5 atoms, 273 edges), 64 measurements, fitted by non-negative least squares to the form above
(largest relative error 0.1 % for cgc, 0.2 % for transformer); the coefficients are rounded up. cgc keeps about
20·w + 126 B per edge and layer (the gated message's input ``[x_i, x_j, e]``, its two linear outputs, sigmoid and
softplus, the product), transformer 12·w + 46 B (query, key, value, edge projection, attention). The peak over the
kept tensors (gradients of the activations during backward, temporaries) and the peak of a no-grad evaluation
pass were measured with ``torch.profiler`` (``profile_memory``) at widths 88…212 and batches 32 and 128 (Petousis):
training peaks at 1.19× (cgc) and 1.38× (transformer) the kept tensors, parameter gradients aside; evaluation at
1.45× (cgc) and 2.4× (transformer) one layer's kept tensors at the evaluation batch (``gnn.train``'s
``eval_batch_size``, 256, so for batches below ~128 evaluation is the peak). On CUDA, runs use bf16 autocast by
default (:mod:`gnn.precision`); the same forward under CPU bf16 autocast keeps 0.56–0.83× the fp32 bytes, so the
fp32 estimate is an upper bound there. The share is the estimate over one GPU's memory, rounded *up* to eighths
(small models pack 8 to a GPU), at most one GPU; a model that does not fit one GPU is an error naming the field.

Where the GPUs are (:func:`cluster_gpus`): Ray's ``cluster_resources()`` (``GPU``, ``accelerator_type:NAME``); with
``MATSCALE_AUTOSCALE=1`` also the autoscaler's node types (``$MATSCALE_CLUSTER_CONFIG``, else
``~/ray_bootstrap_config.yaml``, which ``ray up`` writes on the head: :func:`sweeps.cluster_check.sweep_gpus`), since
GPU workers at ``min_workers: 0`` are not there when the sweep starts; ``resources.gpu_type`` overrides the type.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

from gnn.errors import InputError

SHARE = 1 / 8  #: the smallest GPU share a trial gets
CONTEXT_GIB = 1.0  #: CUDA context (~0.5 GiB), cuBLAS workspace, allocator slack and one graph batch
BYTES_PER_PARAM = 16  #: fp32 weights, gradients and AdamW's two moments
#: bytes kept for backward by one fp32 forward pass (see the module docstring), per architecture:
#: ``edge_layer`` (a·w + b per edge and layer), ``edge`` (c per edge: geometry, radial basis), ``node_layer``
#: (d·w + e·f per atom and layer), ``node`` (g per atom), ``graph`` (h·w per structure: pooling, heads)
ACTIVATION = {"cgc": {"edge_layer": (20, 128), "edge": 24, "node_layer": (14, 8), "node": 104, "graph": 30},
              "transformer": {"edge_layer": (12, 48), "edge": 152, "node_layer": (18, 8), "node": 104, "graph": 30}}
TRAIN_PEAK = {"cgc": 1.25, "transformer": 1.45}  #: a training step's activation peak over the kept bytes
EVAL_PEAK = {"cgc": 1.5, "transformer": 2.5}  #: a no-grad evaluation's peak over one layer's kept bytes
#: per structure at a 5.5 Å cutoff where the store is not there to count (measured: synthetic demo 5.8 atoms and
#: 183 edges, Petousis 7.5 and 273, the OptiMetal samples 8 and 346); edges scale with the cutoff cubed
DEFAULT_ATOMS, DEFAULT_EDGES, DEFAULT_EDGES_CUTOFF = 12, 500, 5.5
DEFAULT_BATCH_SIZE = 32  #: gnn.train.TrainConfig's, for a spec whose hpo.space has no batch_size
GPU_MEMORY_GIB = 80.0  #: one GPU's memory when nothing names the accelerator
#: memory (GiB) of the accelerator types Ray reports (``accelerator_type:NAME`` resources); the smaller variant
#: where a name covers two (A100: 40 or 80 GiB) so that a share never overfills a card
ACCELERATOR_GIB = {"H200": 141.0, "H100": 80.0, "A100-80G": 80.0, "A100-40G": 40.0, "A100": 40.0, "L40S": 48.0,
                   "L4": 24.0, "A10G": 24.0, "T4": 16.0, "V100": 16.0}


def gpu_memory_gib(cluster_resources: dict) -> float:
    """The memory of the smallest GPU type in Ray's ``cluster_resources()`` (:data:`GPU_MEMORY_GIB` if unnamed)."""
    return ACCELERATOR_GIB.get(_accelerator(cluster_resources), GPU_MEMORY_GIB)


def _accelerator(cluster_resources: dict) -> str | None:
    """The smallest named GPU type in ``cluster_resources`` (None: unnamed)."""
    named = [k.split(":", 1)[1] for k in cluster_resources
             if k.startswith("accelerator_type:") and k.split(":", 1)[1] in ACCELERATOR_GIB]
    return min(named, key=ACCELERATOR_GIB.get, default=None)


# --- what the spec says -----------------------------------------------------------------------------------------
def is_auto(spec) -> bool:
    """Whether the GPU share is sized here: ``resources: auto`` or ``{gpu: auto, …}``."""
    r = spec.resources
    return r == "auto" or (isinstance(r, dict) and r.get("gpu") == "auto")


def gpu_type(spec) -> str | None:
    """``resources.gpu_type``, where the spec names one."""
    return spec.resources.get("gpu_type") if isinstance(spec.resources, dict) else None


def _cpu(spec) -> float:
    return spec.resources.get("cpu", 1) if isinstance(spec.resources, dict) else 1


def largest_batch(space: dict) -> tuple[int, str]:
    """The largest batch size ``hpo.space`` can draw (a fixed value, a choice or a range), and where it comes from."""
    b = (space or {}).get("batch_size")
    if b is None:
        return DEFAULT_BATCH_SIZE, "the default batch size"
    if not isinstance(b, dict):
        return int(float(b)), "hpo.space.batch_size"
    (kind, values), = b.items()
    return int(float(max(values) if kind == "choice" else values[1])), "the largest hpo.space.batch_size"


# --- the data ---------------------------------------------------------------------------------------------------
@dataclass
class Structures:
    """Atoms and edges per structure (mean and standard deviation) of the data a sweep trains on."""

    atoms: float = DEFAULT_ATOMS
    edges: float = DEFAULT_EDGES
    atoms_sd: float = 0.0
    edges_sd: float = 0.0
    where: str = "default"  #: "default", or the store they were counted in

    def per_batch(self, batch: int) -> tuple[float, float]:
        """(atoms, edges) of a batch of ``batch`` structures: the mean plus three standard errors, per structure."""
        k = 3 / math.sqrt(max(batch, 1))
        return batch * (self.atoms + k * self.atoms_sd), batch * (self.edges + k * self.edges_sd)

    def describe(self) -> str:
        return (f"{self.edges:.0f} edges and {self.atoms:.3g} atoms per structure "
                + ("(default)" if self.where == "default" else f"(counted in {self.where})"))


def structures(store: str | Path | None = None, cutoff: float = DEFAULT_EDGES_CUTOFF) -> Structures:
    """Atoms and edges per structure of ``store``'s graphs for ``cutoff`` (memory-mapped: cheap), or the defaults
    (:data:`DEFAULT_ATOMS`, :data:`DEFAULT_EDGES` scaled by the cutoff cubed) where they are not built."""
    default = Structures(edges=DEFAULT_EDGES * (float(cutoff) / DEFAULT_EDGES_CUTOFF) ** 3)
    if store is None:
        return default
    from gnn.store import graph_path, load_tensors, read_graph_file, read_meta

    try:
        meta = read_meta(store)
        path = graph_path(store, cutoff, meta)
        if not path.exists():
            return default
        edge_ptr = read_graph_file(path, meta["n"])["edge_ptr"].double()
        node_ptr = load_tensors(Path(store), meta)["node_ptr"].double()
    except (InputError, OSError):
        return default
    atoms, edges = node_ptr.diff(), edge_ptr.diff()
    if len(atoms) == 0:
        return default
    sd = (lambda x: float(x.std()) if len(x) > 1 else 0.0)
    return Structures(float(atoms.mean()), float(edges.mean()), sd(atoms), sd(edges), str(store))


def _store_of(spec, store: str | Path | None) -> str | Path | None:
    """``store``, else the spec's own ``dataset.store`` where it is built (a store the spec names needs no
    ``prepare_store`` to be counted)."""
    named = (spec.dataset or {}).get("store")
    if store is None and named and (Path(named) / "meta.json").exists():
        return named
    return store


def _targets_points(spec, store: str | Path | None) -> tuple[list[str], int | None]:
    """The targets and spectrum points a trial's model is planned for: the store's where it is built, else the
    spec's (synthetic and OptiMetal data have the spectrum)."""
    ds = spec.dataset or {}
    targets, points = spec.targets, None
    if store is not None and (Path(store) / "meta.json").exists():
        from gnn.store import Store

        s = Store(store)
        targets = targets or sorted(s.targets)
        points = None if s.omega_ev is None else len(s.omega_ev)
        return list(targets), points
    if "synthetic" in ds:
        return list(targets or ["eps", "drude"]), int(ds["synthetic"]["points"])
    if "import" in ds and ds["import"].get("kind") == "optimetal":
        return list(targets or ["eps", "drude"]), int(ds["import"].get("points") or 2001)
    targets = list(targets or ["y"])
    return targets, (2001 if "eps" in targets else None)


# --- the estimate -----------------------------------------------------------------------------------------------
def activation_bytes(arch: str, width: int, ffn_width: int, num_layers: int, graphs: float, atoms: float,
                     edges: float) -> float:
    """Bytes one fp32 forward pass keeps for backward (parameters aside) for a batch of ``graphs`` structures
    with ``atoms`` atoms and ``edges`` edges in all (:data:`ACTIVATION`, calibrated as the module docstring says)."""
    c = ACTIVATION[arch]
    (a, b), (d, e) = c["edge_layer"], c["node_layer"]
    return (num_layers * edges * (a * width + b) + edges * c["edge"]
            + num_layers * atoms * (d * width + e * ffn_width) + atoms * c["node"] + graphs * c["graph"] * width)


@functools.lru_cache(maxsize=512)
def _plan(arch: str, n_params: float, targets: tuple, n_points: int | None, layers: int) -> tuple[int, int, float]:
    """(width, feed-forward width, parameters) of :func:`gnn.models.plan` (on the meta device: allocates nothing)."""
    import torch

    from gnn.models import CrystalGNN, count_params, plan

    cfg = plan(arch, n_params, list(targets), n_points, num_layers=layers)
    with torch.device("meta"):
        return cfg.width, cfg.ffn_width, float(count_params(CrystalGNN(cfg)))


@dataclass
class Need:
    """The estimated GPU memory of one trial of a model."""

    arch: str
    n_params: float
    width: int
    batch: int
    gib: float  #: all of it
    fixed_gib: float  #: context and parameters (what a batch of one cannot go below)
    activations_gib: float  #: the larger of the training and evaluation peaks (and the spectrum head)
    train_gib: float = 0.0  #: the training peak (about proportional to the batch)
    eval_gib: float = 0.0  #: the evaluation peak (at gnn.train's evaluation batch, whatever the training batch)


def trial_need(arch: str, n_params: float, *, targets: list[str], n_points: int | None, batch: int,
               data: Structures, num_layers: int | None = None) -> Need:
    """:class:`Need` of a trial of ``arch`` at ``n_params`` trained at ``batch`` (see the module docstring)."""
    from gnn.defaults import DEFAULT_NUM_LAYERS
    from gnn.train import TrainConfig

    layers = num_layers or DEFAULT_NUM_LAYERS
    width, ffn_width, real_params = _plan(arch, float(n_params), tuple(targets), n_points, layers)
    eval_batch = TrainConfig.eval_batch_size
    atoms, edges = data.per_batch(batch)
    train = TRAIN_PEAK[arch] * activation_bytes(arch, width, ffn_width, layers, batch, atoms, edges)
    e_atoms, e_edges = data.per_batch(eval_batch)
    evaluation = EVAL_PEAK[arch] * activation_bytes(arch, width, ffn_width, 1, eval_batch, e_atoms, e_edges)
    head = 2 * 4 * batch * 2 * (n_points or 0)
    fixed = CONTEXT_GIB + BYTES_PER_PARAM * real_params / 2**30
    act = (max(train, evaluation) + head) / 2**30
    return Need(arch, float(n_params), width, batch, fixed + act, fixed, act, (train + head) / 2**30,
                evaluation / 2**30)


def share_of(gib: float, gpu_memory: float) -> float:
    """``gib`` over ``gpu_memory`` rounded up to eighths (at least one)."""
    return min(1.0, SHARE * max(1, math.ceil(gib / gpu_memory / SHARE - 1e-9)))


def needs(spec, data: Structures | None = None, store: str | Path | None = None,
          n_params: list[float] | None = None) -> list[Need]:
    """:class:`Need` of every model (arch × n_params, default the spec's) of ``spec`` at the largest batch its HPO
    space can draw, on ``data`` (default: counted in ``store``, else the defaults)."""
    store = _store_of(spec, store)
    targets, points = _targets_points(spec, store)
    data = data or structures(store, spec.dataset.get("cutoff", DEFAULT_EDGES_CUTOFF))
    batch, _ = largest_batch(spec.hpo["space"])
    out = []
    for arch in spec.archs:
        for n in n_params or spec.n_params:
            try:
                out.append(trial_need(arch, n, targets=targets, n_points=points, batch=batch, data=data))
            except InputError as exc:
                raise InputError(str(exc).split(": ", 1)[-1], file=spec.path, field="axes.n_params") from None
    return out


def check_fits(spec, need: Need, gpu_memory: float, name: str | None = None) -> None:
    """An :class:`InputError` naming ``axes.n_params`` (the model alone does not fit) or ``hpo.space.batch_size``
    when ``need`` is more than one GPU's memory."""
    if need.gib <= gpu_memory:
        return
    gpu = f"one {name} GPU ({gpu_memory:g} GiB)" if name else f"one GPU ({gpu_memory:g} GiB)"
    what = f"{need.arch} at {need.n_params:.3g} parameters (width {need.width}) needs about {need.gib:.1f} GiB"
    if need.fixed_gib + max(need.eval_gib, need.train_gib / max(need.batch, 1)) > gpu_memory:
        raise InputError(f"{what}, more than {gpu}; fewer parameters, or a GPU with more memory "
                         "(resources.gpu_type)", file=spec.path, field="axes.n_params")
    fits = int(need.batch * (gpu_memory - need.fixed_gib) / max(need.train_gib, 1e-9))
    raise InputError(f"{what} at batch size {need.batch}, more than {gpu}; a batch size of at most ~{max(fits, 1)} "
                     "fits", file=spec.path, field="hpo.space.batch_size")


def data_gib(store: str | Path | None, cutoff: float = DEFAULT_EDGES_CUTOFF) -> float | None:
    """GiB of ``store``'s tensors and its graphs for ``cutoff`` (an upper bound of what ``gnn.train`` keeps on the
    GPU when they fit); None where the store or its graphs are not built."""
    if store is None:
        return None
    from gnn.store import graph_path, read_meta

    try:
        meta = read_meta(store)
        files = [p for p in Path(store).iterdir() if p.is_file()] + [graph_path(store, cutoff, meta)]
        return sum(p.stat().st_size for p in files) / 2**30
    except (InputError, OSError):
        return None


def _with_resident_data(shares_of, data: float | None, gpu_memory: float) -> float:
    """The share ``shares_of(extra_gib)`` gives, with room for the data where ``gnn.train`` would keep them on the
    GPU (at most :data:`gnn.defaults.RESIDENT_FRACTION` of the share's memory)."""
    from gnn.defaults import RESIDENT_FRACTION

    share = shares_of(0.0)
    if data is not None and data <= RESIDENT_FRACTION * share * gpu_memory:
        share = shares_of(data)
    return share


def trial_resources(spec, *, gpus: float, n_params: float | None = None, gpu_memory: float = GPU_MEMORY_GIB,
                    data: Structures | None = None, store: str | Path | None = None,
                    gpu_name: str | None = None) -> dict:
    """``{"cpu": …, "gpu": …}`` of one trial of ``spec``.

    Args:
        gpus: GPUs in the cluster, or that its autoscaler may add (0: CPU trials). n_params: size the share for
            this parameter count (default: the share of the spec's largest need, over its archs and n_params, so
            that every trial of the sweep fits). gpu_memory: one GPU's memory in GiB. data, store: the structures
            trials train on (:func:`structures`; default: counted in ``store``, else the defaults).
    """
    if not is_auto(spec):
        return {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]}
    if not gpus:
        return {"cpu": _cpu(spec), "gpu": 0}
    all_needs = needs(spec, data, store, None if n_params is None else [n_params])
    for need in all_needs:
        check_fits(spec, need, gpu_memory, gpu_name)
    resident = data_gib(_store_of(spec, store), spec.dataset.get("cutoff", DEFAULT_EDGES_CUTOFF))
    share = _with_resident_data(lambda extra: max(share_of(n.gib + extra, gpu_memory) for n in all_needs),
                                resident, gpu_memory)
    return {"cpu": _cpu(spec), "gpu": share}


def slots(spec, resources: dict, *, cpus: float, gpus: float) -> int:
    """How many trials asking ``resources`` run at once on ``cpus`` and ``gpus`` (and ``spec.max_concurrent``)."""
    n = cpus / max(resources["cpu"], 1e-9)
    if resources["gpu"]:
        n = min(n, max(gpus, 1) / resources["gpu"])
    if spec.max_concurrent:
        n = min(n, spec.max_concurrent)
    return max(1, int(n))


# --- where the GPUs are -----------------------------------------------------------------------------------------
@dataclass
class GPUs:
    """The GPUs trials of a sweep may use."""

    count: float  #: GPUs now, or the most the autoscaler may add (0: none)
    memory_gib: float  #: one GPU's (the smallest type's)
    name: str | None  #: its type (None: not named)
    where: str  #: where count and type come from, in words
    cpus: float | None = None  #: the most CPUs the autoscaler may add (None: not known, what Ray says now)


def autoscaling() -> bool:
    """``MATSCALE_AUTOSCALE=1``: GPU workers may start later (``min_workers: 0``)."""
    return os.environ.get("MATSCALE_AUTOSCALE") == "1"


def cluster_gpus(spec, cluster_resources: dict, *, autoscale: bool = False, node_types: list | None = None,
                 config: str | Path | None = None, memory_gib: float | None = None, planning: bool = False) -> GPUs:
    """The GPUs trials of ``spec`` may use: Ray's ``cluster_resources`` (``GPU``, ``accelerator_type:NAME``) and,
    ``autoscale``, the most the autoscaler may add by the cluster config's ``node_types``
    (:func:`sweeps.cluster_check.node_types` of the file ``config``); ``resources.gpu_type`` names the type
    whatever they say; ``memory_gib``: measured (this machine's GPUs). Errors naming the field where ``auto`` would
    run GPU-sized trials on CPUs: autoscaling with no GPU anywhere, or ``gpu_type`` where there are no GPUs (unless
    ``planning``: a dry run plans for the named GPU)."""
    count = float(cluster_resources.get("GPU", 0) or 0)
    name = _accelerator(cluster_resources)
    where = "the Ray cluster"
    cpus = None
    if autoscale and node_types is not None:
        gpu_types = [t for t in node_types if t.gpu]
        cpus = sum(t.cpu * t.max_workers for t in node_types)
        most = sum(t.gpu * t.max_workers for t in gpu_types)
        if most > count:
            count, where = most, f"the cluster config {config}"
        named = [t.accelerator for t in gpu_types if t.accelerator in ACCELERATOR_GIB]
        if name is None and named:
            name, where = min(named, key=ACCELERATOR_GIB.get), f"the cluster config {config}"
    spec_type = gpu_type(spec)
    if spec_type:
        name, memory_gib = spec_type, None
        where += ", the type from resources.gpu_type"
    if is_auto(spec) and not count:
        if autoscale and not spec_type:
            raise InputError("resources: auto on an autoscaling cluster (MATSCALE_AUTOSCALE=1) that has no GPUs now "
                             + (f"and no GPU worker type in {config}" if node_types is not None else
                                f"and no cluster config ({config or 'MATSCALE_CLUSTER_CONFIG'} not found)")
                             + ": name the GPU (resources: {gpu: auto, gpu_type: A10G}), point "
                             "MATSCALE_CLUSTER_CONFIG at the cluster config, or ask for CPUs only (resources: "
                             "{cpu: 1, gpu: 0})", file=spec.path, field="resources")
        if spec_type and not autoscale and not planning:
            raise InputError(f"asks for {spec_type} GPUs (gpu: auto, gpu_type) but the cluster has none (set "
                             "MATSCALE_AUTOSCALE=1 where GPU workers start later)", file=spec.path,
                             field="resources.gpu")
        if spec_type:
            count, where = 1.0, "resources.gpu_type" + (" (the autoscaler adds the GPUs)" if autoscale else "")
    memory = memory_gib or (ACCELERATOR_GIB[name] if name in ACCELERATOR_GIB else gpu_memory_gib(cluster_resources))
    return GPUs(count, memory, name, where, cpus)


def _sci(x: float) -> str:
    """``2.8e5`` (as :func:`sweeps.spec.sci`, which this module cannot import: spec checks resources here)."""
    m, e = f"{x:.2g}".split("e") if "e" in f"{x:.2g}" else (f"{x:g}", None)
    return m if e is None else f"{m}e{int(e)}"


def packing_lines(spec, resources: dict, gpus: GPUs, data: Structures | None = None,
                  store: str | Path | None = None) -> list[str]:
    """What ``--dry-run`` and ``matscale cluster check --spec`` say of the GPU memory: per model (arch, n_params)
    the estimated GiB, its share and trials per GPU, and the share every trial of the sweep asks for. Nothing
    where trials ask for no GPU."""
    if not resources.get("gpu"):
        return []
    store = _store_of(spec, store)
    data = data or structures(store, spec.dataset.get("cutoff", DEFAULT_EDGES_CUTOFF))
    batch, batch_from = largest_batch(spec.hpo["space"])
    rows = needs(spec, data, store)
    memory = gpus.memory_gib
    lines = [f"GPU packing on {gpus.name or 'an unnamed GPU'} ({memory:g} GiB, from {gpus.where}): batch {batch} "
             f"({batch_from}), {data.describe()}",
             f"{'arch':<12} {'n_params':>9} {'width':>6} {'est. GiB':>9} {'share':>6} {'trials/GPU':>10}"]
    for n in rows:
        share = share_of(n.gib, memory)
        over = n.gib > memory
        lines.append(f"{n.arch:<12} {_sci(n.n_params):>9} {n.width:>6} {n.gib:>9.1f} "
                     f"{'-' if over else f'{share:g}':>6} {'too big' if over else int(1 / share + 1e-9):>10}")
    sweep_share = float(resources["gpu"])
    per_gpu = int(1 / sweep_share + 1e-9) if sweep_share <= 1 else 0
    if is_auto(spec):
        lines.append(f"every trial asks {resources['cpu']:g} CPU + {sweep_share:g} GPU (its largest model's share: "
                     f"one share for the whole sweep), {per_gpu} trial{'s' if per_gpu != 1 else ''} per GPU")
    else:
        tight = [n for n in rows if n.gib > sweep_share * memory]
        lines.append(f"every trial asks {resources['cpu']:g} CPU + {sweep_share:g} GPU (resources)"
                     + (f"; estimated above that share for {', '.join(f'{n.arch} {_sci(n.n_params)}' for n in tight)}"
                        if tight else ""))
    return lines
