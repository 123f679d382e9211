"""Sweep specs: a YAML file validated in full before anything starts.

A spec names the study (MLflow experiment), the data, the targets, the architectures, the scaling axes, the
training budget, the HPO search (Optuna, one study per scaling point) and the resources::

    experiment: matscale-demo
    dataset:
      synthetic: {n: 2000, points: 41, seed: 0, noise: 0.05}   # or  store: PATH  or  import: {kind: petousis, src: PATH}
      cutoff: 5.5
    targets: [eps, drude]
    loss_weights: {drude: 1.0}
    archs: [cgc, transformer]
    axes:                                        # a mapping, or a list of them (the union of their grids)
      data_fractions: [0.125, 0.25, 0.5, 1.0]   # or  n_train: [250, 500, 1000]
      n_params: [1.0e4, 3.0e4]
      seeds: [0]
    budget: {epochs: 8, patience: 4}
    hpo:
      trials_per_point: 2
      space: {lr: {log_uniform: [3.0e-4, 3.0e-3]}, batch_size: {choice: [16, 32]}}
      early_stopping: {type: asha, grace_epochs: 2}              # or median, or none
    resources: {cpu: 1, gpu: 0}                                   # or auto
    tracking_uri: sqlite:///runs/demo/mlflow.db
    storage_path: runs/demo/ray

Two more kinds of study use the same file:

* **coverage**: an axis ``subset: [random, stratified, exclude:rich:Fe, diverse]`` picks *which* training
  structures each data size gets (see :mod:`gnn.subsets`); the default is ``[random]``.
* **transfer** (Sim2Real): a ``transfer`` section names the pretraining data and how to fine-tune, and the axes
  take ``source_n`` (pretraining set sizes) and optionally ``target_n`` (target training sizes, the same as
  ``n_train``; default: the whole target training split). ``dataset`` and ``targets`` are the *target*'s. A
  no-pretraining baseline (``source_n: 0``) is added at every target size::

    transfer:
      source: {synthetic: {n: 4000, points: 41, seed: 0, noise: 0.05}}   # a dataset block, as above
      source_targets: [eps, drude]     # default: every target of the source data
      strategy: full                   # full | heads | freeze:K
      pretrain: {epochs: 10, lr: 2.0e-3, batch_size: 32, patience: 4}
    axes: {source_n: [250, 1000, 4000], target_n: [50, 100, 200], n_params: [2.0e4], seeds: [0, 1]}

Relative paths are relative to the working directory; ``${VAR}`` is expanded from the environment.
A *point* is (arch, n_params target, n_train, seed[, subset][, source_n]); each point gets ``trials_per_point``
HPO trials.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gnn.errors import InputError
from gnn.models import ARCHS

TOP_KEYS = {"experiment", "dataset", "targets", "loss_weights", "archs", "axes", "budget", "hpo", "resources",
            "tracking_uri", "storage_path", "max_concurrent", "max_failures", "save_checkpoint", "system_metrics",
            "num_threads", "description", "transfer"}
DATASET_KEYS = {"synthetic", "store", "import", "cutoff", "data_dir"}
SYNTH_KEYS = {"n", "points", "seed", "noise", "gap"}
IMPORT_KEYS = {"kind", "src", "targets", "points"}
AXES_KEYS = {"n_train", "target_n", "data_fractions", "n_params", "seeds", "subset", "source_n"}
TRANSFER_KEYS = {"source", "source_targets", "strategy", "pretrain"}
PRETRAIN_KEYS = {"epochs", "lr", "batch_size", "weight_decay", "patience"}
BUDGET_KEYS = {"epochs", "max_steps", "patience"}
HPO_KEYS = {"trials_per_point", "space", "early_stopping", "sampler"}
STOP_KEYS = {"type", "grace_epochs", "reduction_factor", "min_trials"}
RESOURCE_KEYS = {"cpu", "gpu"}
SEARCHABLE = {"lr": float, "weight_decay": float, "batch_size": int, "warmup_frac": float, "grad_clip": float}
DISTRIBUTIONS = {"log_uniform", "uniform", "int", "log_int", "choice"}
#: fields that change what a trial computes; the spec hash covers exactly these
HASHED = ("dataset", "targets", "loss_weights", "archs", "axes", "budget", "hpo", "transfer")


@dataclass
class Point:
    """One scaling point: the unit that is measured ``trials_per_point`` times (HPO) and then aggregated."""

    arch: str
    n_params: float
    n_train: int
    seed: int
    fraction: float | None = None
    subset: str = "random"  #: coverage strategy (gnn.subsets)
    source_n: int | None = None  #: pretraining set size of a transfer point (0: the no-pretraining baseline)

    @property
    def key(self) -> str:
        """Readable, unique id, e.g. ``cgc-N1.2e6-D20000-s42`` (``D0.25f`` while n_train is still unknown), with
        ``-S<source_n>`` for transfer points and ``-<subset>`` for a strategy other than random."""
        data = f"{self.fraction:g}f" if not self.n_train and self.fraction else str(self.n_train)
        source = "" if self.source_n is None else f"-S{self.source_n}"
        subset = "" if self.subset == "random" else f"-{self.subset}"
        return f"{self.arch}-N{sci(self.n_params)}-D{data}{source}-s{self.seed}{subset}"


def sci(x: float) -> str:
    """Compact scientific notation: 1.2e6, 3e4."""
    if x == 0:
        return "0"
    e = int(math.floor(math.log10(abs(x))))
    m = round(x / 10**e, 2)
    if abs(m) >= 10:
        m, e = m / 10, e + 1
    return f"{m:g}e{e}"


@dataclass
class Spec:
    """A validated sweep spec (see the module docstring for the file format)."""

    experiment: str
    dataset: dict
    targets: list[str] | None
    archs: list[str]
    axes: list[dict]  #: one or more blocks; the points are the union of their grids
    budget: dict
    hpo: dict
    loss_weights: dict[str, float] = field(default_factory=dict)
    resources: dict | str = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    tracking_uri: str = "sqlite:///runs/mlflow.db"
    storage_path: str = "runs/ray"
    max_concurrent: int | None = None
    max_failures: int = 2
    save_checkpoint: bool = False
    system_metrics: bool = True
    num_threads: int | None = None
    description: str = ""
    transfer: dict | None = None  #: source dataset, source_targets, strategy, pretrain (see the module docstring)
    path: str = ""

    @property
    def hash(self) -> str:
        """Hash of everything that changes what trials compute (not where they run or are tracked)."""
        fields = {k: getattr(self, k) for k in HASHED}
        if fields["transfer"] is None:  # keys that did not exist before keep old specs' hashes (and their runs)
            fields.pop("transfer")
        fields["axes"] = [{k: v for k, v in b.items() if not (k == "subset" and v == ["random"])} for b in self.axes]
        payload = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("path")
        return d

    @staticmethod
    def data_sizes(block: dict, train_size: int | None) -> list[tuple[int, float | None]]:
        """(n_train, fraction) pairs of an axes block; fractions give n_train = ⌈f·train_size⌉."""
        if "n_train" in block:
            return [(int(n), None) for n in block["n_train"]]
        return [(math.ceil(f * train_size) if train_size else 0, float(f)) for f in block["data_fractions"]]

    def estimated_train_size(self) -> int | None:
        synth = self.dataset.get("synthetic")
        return math.ceil(0.8 * synth["n"]) if synth else None

    @property
    def n_params(self) -> list[float]:
        return sorted({float(n) for b in self.axes for n in b["n_params"]})

    @property
    def seeds(self) -> list[int]:
        return sorted({int(s) for b in self.axes for s in b["seeds"]})

    def points(self, train_size: int | None = None) -> list[Point]:
        """Every scaling point (the union over axes blocks), in the order trials are scheduled."""
        size = train_size if train_size is not None else self.estimated_train_size()
        seen, out = set(), []
        for block in self.axes:
            sources = block.get("source_n", [None])
            for arch in self.archs:
                for n in block["n_params"]:
                    for n_train, frac in self.data_sizes(block, size):
                        for subset in block["subset"]:
                            for source_n in sources:
                                for seed in block["seeds"]:
                                    p = Point(arch, float(n), n_train, int(seed), frac, subset, source_n)
                                    if p.key not in seen:
                                        seen.add(p.key)
                                        out.append(p)
        return out


def _where(path: str, key: str) -> dict:
    return {"file": path, "field": key}


def _check_keys(d: Any, allowed: set, path: str, prefix: str) -> dict:
    if not isinstance(d, dict):
        raise InputError(f"expected a mapping, got {type(d).__name__}", **_where(path, prefix.rstrip(".")))
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise InputError(f"unknown key (allowed: {', '.join(sorted(allowed))})", **_where(path, prefix + unknown[0]))
    return d


def _number_list(values: Any, path: str, key: str, *, kind=float, positive=True) -> list:
    if not isinstance(values, list) or not values:
        raise InputError("must be a non-empty list", **_where(path, key))
    out = []
    for v in values:
        try:
            x = kind(v) if kind is float else int(v)
        except (TypeError, ValueError):
            raise InputError(f"not a number: {v!r}", **_where(path, key)) from None
        if kind is int and isinstance(v, float) and v != int(v):
            raise InputError(f"not an integer: {v!r}", **_where(path, key))
        if positive and not x > 0:
            raise InputError(f"must be positive, got {v!r}", **_where(path, key))
        out.append(x)
    if len(set(out)) != len(out):
        raise InputError("has repeated values", **_where(path, key))
    return out


def _expand(obj: Any, path: str | Path | None = None, key: str = "") -> Any:
    """``${VAR}`` from the environment; a variable that is not set is an error (not a literal path)."""
    if isinstance(obj, str):
        out = os.path.expandvars(obj)
        left = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", out)
        if left:
            raise InputError(f"environment variable {left.group(1)} is not set", **_where(path, key or None))
        return out
    if isinstance(obj, list):
        return [_expand(x, path, key) for x in obj]
    if isinstance(obj, dict):
        return {k: _expand(v, path, f"{key}.{k}" if key else str(k)) for k, v in obj.items()}
    return obj


def _check_space(space: Any, path: str) -> dict:
    space = _check_keys(space or {}, set(SEARCHABLE), path, "hpo.space.")
    for name, dist in space.items():
        key = f"hpo.space.{name}"
        if not isinstance(dist, dict):  # a fixed value
            try:
                SEARCHABLE[name](dist)
            except (TypeError, ValueError):
                raise InputError(f"not a valid value: {dist!r}", **_where(path, key)) from None
            continue
        if len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise InputError(f"expected one of {', '.join(sorted(DISTRIBUTIONS))} or a fixed value",
                             **_where(path, key))
        kind, args = next(iter(dist.items()))
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise InputError("choice needs a non-empty list", **_where(path, key))
            continue
        if not isinstance(args, list) or len(args) != 2:
            raise InputError(f"{kind} needs [low, high]", **_where(path, key))
        lo, hi = (float(a) for a in args)
        if not lo < hi or (kind.startswith("log") and lo <= 0):
            raise InputError(f"{kind} needs 0 < low < high (log) or low < high, got {args}", **_where(path, key))
    return space


def _check_axes(axes: Any, path: str, prefix: str, transfer: bool) -> dict:
    from gnn.subsets import parse

    axes = dict(_check_keys(axes, AXES_KEYS, path, prefix))
    if "target_n" in axes:
        if not transfer:
            raise InputError("target_n needs a transfer section (use n_train otherwise)",
                             **_where(path, prefix + "target_n"))
        if "n_train" in axes:
            raise InputError("give target_n or n_train, not both", **_where(path, prefix + "target_n"))
        axes["n_train"] = _number_list(axes.pop("target_n"), path, prefix + "target_n", kind=int)
    if transfer:
        if "source_n" not in axes:
            raise InputError("missing (a transfer sweep needs pretraining set sizes)",
                             **_where(path, prefix + "source_n"))
        if "n_train" not in axes and "data_fractions" not in axes:
            axes["data_fractions"] = [1.0]  # the whole target training split
        sizes = _number_list(axes["source_n"], path, prefix + "source_n", kind=int, positive=False)
        if min(sizes) < 0:
            raise InputError("sizes must be ≥ 0", **_where(path, prefix + "source_n"))
        axes["source_n"] = [0] + sorted(set(sizes) - {0})  # the no-pretraining baseline comes with every sweep
    elif "source_n" in axes:
        raise InputError("source_n needs a transfer section (what to pretrain on)", **_where(path, prefix + "source_n"))
    subsets = axes.get("subset", ["random"])
    if not isinstance(subsets, list) or not subsets or len(set(map(str, subsets))) != len(subsets):
        raise InputError("must be a non-empty list of distinct strategies", **_where(path, prefix + "subset"))
    for v in subsets:
        parse(str(v), **_where(path, prefix + "subset"))
    axes["subset"] = [str(v) for v in subsets]
    if ("n_train" in axes) == ("data_fractions" in axes):
        raise InputError("give exactly one of n_train and data_fractions", **_where(path, prefix.rstrip(".")))
    if "n_train" in axes:
        axes["n_train"] = _number_list(axes["n_train"], path, prefix + "n_train", kind=int)
    else:
        fr = _number_list(axes["data_fractions"], path, prefix + "data_fractions")
        bad = [f for f in fr if not 0 < f <= 1]
        if bad:
            raise InputError(f"fractions must be in (0, 1], got {bad[0]}", **_where(path, prefix + "data_fractions"))
        axes["data_fractions"] = fr
    if "n_params" not in axes:
        raise InputError("missing", **_where(path, prefix + "n_params"))
    axes["n_params"] = _number_list(axes["n_params"], path, prefix + "n_params")
    axes["seeds"] = _number_list(axes.get("seeds", [0]), path, prefix + "seeds", kind=int, positive=False)
    return axes


def _check_dataset(ds: Any, path: str, key: str) -> dict:
    """A ``dataset`` block (also the ``transfer.source`` block): one of synthetic, store, import."""
    from gnn.synth import check_gap

    ds = dict(_check_keys(ds, DATASET_KEYS, path, key + "."))
    sources = [k for k in ("synthetic", "store", "import") if k in ds]
    if len(sources) != 1:
        raise InputError("give exactly one of synthetic, store, import", **_where(path, key))
    if "synthetic" in ds:
        synth = _check_keys(ds["synthetic"] or {}, SYNTH_KEYS, path, f"{key}.synthetic.")
        if int(synth.get("n", 0)) < 10:
            raise InputError("n must be ≥ 10", **_where(path, f"{key}.synthetic.n"))
        ds["synthetic"] = {"n": int(synth["n"]), "points": int(synth.get("points", 101)),
                           "seed": int(synth.get("seed", 0)), "noise": float(synth.get("noise", 0.05))}
        if synth.get("gap"):
            try:
                ds["synthetic"]["gap"] = check_gap(synth["gap"])
            except InputError as exc:
                raise InputError(str(exc).split(": ", 1)[-1], **_where(path, f"{key}.synthetic.gap")) from None
    if "import" in ds:
        imp = _check_keys(ds["import"], IMPORT_KEYS, path, f"{key}.import.")
        for k in ("kind", "src"):
            if k not in imp:
                raise InputError("missing", **_where(path, f"{key}.import.{k}"))
    ds["cutoff"] = float(ds.get("cutoff", 5.5))
    if not ds["cutoff"] > 0:
        raise InputError("must be positive", **_where(path, f"{key}.cutoff"))
    return ds


def _check_transfer(tr: Any, path: str) -> dict | None:
    """The ``transfer`` section, with defaults (None when the spec has none)."""
    from gnn.transfer import parse_strategy

    if tr is None:
        return None
    tr = _check_keys(tr, TRANSFER_KEYS, path, "transfer.")
    if "source" not in tr:
        raise InputError("missing (the pretraining data, a dataset block)", **_where(path, "transfer.source"))
    source = _check_dataset(tr["source"], path, "transfer.source")
    targets = tr.get("source_targets")
    if targets is not None and (not isinstance(targets, list) or not targets):
        raise InputError("must be a non-empty list", **_where(path, "transfer.source_targets"))
    strategy = str(tr.get("strategy", "full"))
    parse_strategy(strategy, **_where(path, "transfer.strategy"))
    pre = dict(_check_keys(tr.get("pretrain") or {}, PRETRAIN_KEYS, path, "transfer.pretrain."))
    try:
        pre = {"epochs": int(pre.get("epochs", 10)), "lr": float(pre.get("lr", 1e-3)),
               "batch_size": int(pre.get("batch_size", 32)), "weight_decay": float(pre.get("weight_decay", 1e-2)),
               "patience": None if pre.get("patience") is None else int(pre["patience"])}
    except (TypeError, ValueError):
        raise InputError("epochs, batch_size, patience must be integers; lr, weight_decay numbers",
                         **_where(path, "transfer.pretrain")) from None
    if pre["epochs"] < 1 or pre["batch_size"] < 1 or pre["lr"] <= 0:
        raise InputError("epochs and batch_size must be ≥ 1, lr > 0", **_where(path, "transfer.pretrain"))
    return {"source": source, "source_targets": targets, "strategy": strategy, "pretrain": pre}


def load_spec(path: str | Path, overrides: dict | None = None) -> Spec:
    """Read and validate a spec; every problem is an :class:`InputError` naming the file and the field."""
    path = str(path)
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise InputError("no such spec file", file=path) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML ({' '.join(str(exc).split())})", file=path) from None
    raw = _expand(_check_keys(raw, TOP_KEYS, path, ""), path)
    raw.update(overrides or {})
    return validate(raw, path)


def validate(raw: dict, path: str = "<spec>") -> Spec:
    """Validate a spec given as a dict (see :func:`load_spec`)."""
    raw = dict(_check_keys(raw, TOP_KEYS, path, ""))
    for key in ("experiment", "dataset", "archs", "axes", "budget"):
        if key not in raw:
            raise InputError("missing", **_where(path, key))
    if not isinstance(raw["experiment"], str) or not re.fullmatch(r"[\w.\-]+", raw["experiment"]):
        raise InputError("experiment must be a name of letters, digits, '_', '-', '.'", **_where(path, "experiment"))

    ds = _check_dataset(raw["dataset"], path, "dataset")

    archs = raw["archs"]
    if not isinstance(archs, list) or not archs:
        raise InputError("must be a non-empty list", **_where(path, "archs"))
    for a in archs:
        if a not in ARCHS:
            raise InputError(f"unknown arch {a!r}; choose from {', '.join(ARCHS)}", **_where(path, "archs"))

    blocks = raw["axes"] if isinstance(raw["axes"], list) else [raw["axes"]]
    if not blocks:
        raise InputError("must be a mapping or a non-empty list of mappings", **_where(path, "axes"))
    transfer = _check_transfer(raw.get("transfer"), path)
    axes = [_check_axes(b, path, "axes." if len(blocks) == 1 else f"axes[{i}].", transfer is not None)
            for i, b in enumerate(blocks)]

    budget = _check_keys(raw["budget"], BUDGET_KEYS, path, "budget.")
    if int(budget.get("epochs", 0)) < 1:
        raise InputError("must be ≥ 1", **_where(path, "budget.epochs"))
    budget = {"epochs": int(budget["epochs"]), "max_steps": budget.get("max_steps"),
              "patience": budget.get("patience", 10)}

    hpo = _check_keys(raw.get("hpo") or {}, HPO_KEYS, path, "hpo.")
    tpp = hpo.get("trials_per_point", 1)
    if not isinstance(tpp, int) or tpp < 1:
        raise InputError("must be an integer ≥ 1", **_where(path, "hpo.trials_per_point"))
    stop = _check_keys(hpo.get("early_stopping") or {"type": "none"}, STOP_KEYS, path, "hpo.early_stopping.")
    if stop.get("type", "none") not in ("asha", "median", "none"):
        raise InputError("type must be asha, median or none", **_where(path, "hpo.early_stopping.type"))
    sampler = hpo.get("sampler", "tpe")
    if sampler not in ("tpe", "random"):
        raise InputError("must be tpe or random", **_where(path, "hpo.sampler"))
    hpo = {"trials_per_point": tpp, "space": _check_space(hpo.get("space"), path),
           "early_stopping": {"type": stop.get("type", "none"), "grace_epochs": int(stop.get("grace_epochs", 1)),
                              "reduction_factor": float(stop.get("reduction_factor", 2)),
                              "min_trials": int(stop.get("min_trials", 2))},
           "sampler": sampler}

    resources = raw.get("resources", {"cpu": 1, "gpu": 0})
    if resources != "auto":
        resources = _check_keys(resources, RESOURCE_KEYS, path, "resources.")
        cpu, gpu = float(resources.get("cpu", 1)), float(resources.get("gpu", 0))
        if cpu <= 0 or gpu < 0 or (gpu > 1 and gpu != int(gpu)):
            raise InputError("cpu must be > 0; gpu ≥ 0 and either fractional (≤ 1) or whole",
                             **_where(path, "resources"))
        resources = {"cpu": cpu, "gpu": gpu}

    targets = raw.get("targets")
    if targets is not None and (not isinstance(targets, list) or not targets):
        raise InputError("must be a non-empty list", **_where(path, "targets"))
    weights = raw.get("loss_weights") or {}
    if not isinstance(weights, dict) or any(not isinstance(v, (int, float)) or v < 0 for v in weights.values()):
        raise InputError("must map targets to non-negative numbers", **_where(path, "loss_weights"))
    for key in ("max_concurrent", "num_threads"):
        if raw.get(key) is not None and (not isinstance(raw[key], int) or raw[key] < 1):
            raise InputError("must be an integer ≥ 1", **_where(path, key))
    return Spec(experiment=raw["experiment"], dataset=ds, targets=targets, archs=list(archs), axes=axes,
                budget=budget, hpo=hpo, loss_weights={k: float(v) for k, v in weights.items()},
                resources=resources, tracking_uri=str(raw.get("tracking_uri", "sqlite:///runs/mlflow.db")),
                storage_path=str(raw.get("storage_path", "runs/ray")), max_concurrent=raw.get("max_concurrent"),
                max_failures=int(raw.get("max_failures", 2)), save_checkpoint=bool(raw.get("save_checkpoint", False)),
                system_metrics=bool(raw.get("system_metrics", True)), num_threads=raw.get("num_threads"),
                description=str(raw.get("description", "")), transfer=transfer, path=path)


def estimated_cost(spec: Spec, points: list[Point]) -> list[float]:
    """Relative cost per point: parameters × training samples × epochs × HPO trials (plus the pretraining of a
    transfer point, which the trials of a sweep share)."""
    pre = spec.transfer["pretrain"]["epochs"] if spec.transfer else 0
    return [p.n_params * (p.n_train * spec.budget["epochs"] * spec.hpo["trials_per_point"] + (p.source_n or 0) * pre)
            for p in points]


def plan_table(spec: Spec, points: list[Point], exact: bool) -> str:
    """The ``--dry-run`` listing: every planned trial and its estimated cost."""
    costs = estimated_cost(spec, points)
    total = sum(costs) or 1.0
    lines = [f"sweep {spec.experiment}  spec {spec.hash}  {len(points)} points × "
             f"{spec.hpo['trials_per_point']} trials = {len(points) * spec.hpo['trials_per_point']} trials"
             + ("" if exact else "  (n_train estimated: the store is not built yet)"),
             f"{'trial':<34} {'arch':<12} {'n_params':>9} {'n_train':>8} {'seed':>5} {'cost':>10} {'share':>6}"
             + (f" {'source_n':>8}" if spec.transfer else "")
             + (" subset" if any(p.subset != "random" for p in points) else "")]
    for p, c in zip(points, costs):
        n_train = str(p.n_train) if p.n_train else f"{p.fraction:g}·n"
        cost = f"{c / spec.hpo['trials_per_point']:.3g}" if p.n_train else "?"
        share = f"{100 * c / total / spec.hpo['trials_per_point']:.1f}%" if p.n_train else "?"
        for t in range(spec.hpo["trials_per_point"]):
            lines.append(f"{p.key + f'-t{t}':<34} {p.arch:<12} {sci(p.n_params):>9} {n_train:>8} {p.seed:>5} "
                         f"{cost:>10} {share:>6}" + (f" {p.source_n:>8}" if spec.transfer else "")
                         + (f" {p.subset}" if p.subset != "random" else ""))
    if not exact and any(not p.n_train for p in points):
        lines.append("n: the training split of the data, known once the store is built (any run builds it)")
    else:
        lines.append(f"total cost {total:.3g} parameter·sample·epochs")
    return "\n".join(lines)
