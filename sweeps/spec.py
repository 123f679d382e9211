"""Sweep specs: a YAML file validated in full before anything starts.

A spec names the study (MLflow experiment), the data, the targets, the architectures, the scaling axes, the
training budget, the HPO search (Optuna, one study per scaling point) and the resources::

    experiment: matscale-demo
    dataset:
      synthetic: {n: 2000, points: 41, seed: 0, noise: 0.05}   # or  store: PATH  or  import: {kind: petousis, src: PATH}
                                                                # (import also takes targets, points, min_distance)
      cutoff: 5.5
    targets: [eps, drude]
    loss_weights: {drude: 1.0}
    archs: [cgc, transformer]
    axes:                                        # a mapping, or a list of them (the union of their grids)
      data_fractions: [0.125, 0.25, 0.5, 1.0]   # or  n_train: [250, 500, 1000]
      n_params: [1.0e4, 3.0e4]
      seeds: [0]
    budget: {epochs: 8, patience: 4}            # also precision: fp32 | bf16 | auto (bf16 on CUDA, the default)
    hpo:
      trials_per_point: 2
      space: {lr: {log_uniform: [3.0e-4, 3.0e-3]}, batch_size: {choice: [16, 32]}}
      early_stopping: {type: asha, grace_epochs: 2}              # or median, or none
      share: neighbours      # trial t >= 1 first tries a grid neighbour's best configuration (default: none)
    resources: {cpu: 1, gpu: 0}              # or auto, or {gpu: auto, gpu_type: L4} (sized to the model)
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

For measuring the sweep machinery itself, ``simulate: {epoch_s: 0.05}`` makes every trial sleep and report a
known law instead of training (:mod:`sweeps.simulate`, ``bench/scale.py``); never for results.

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

from gnn.defaults import DEFAULT_CUTOFF, DEFAULT_POINTS, PRECISIONS
from gnn.errors import InputError
from sweeps import simulate
from sweeps.record import SEARCHABLE, trial_key
from sweeps.tracking import DEFAULT_URI

TOP_KEYS = {"experiment", "dataset", "targets", "loss_weights", "archs", "axes", "budget", "hpo", "resources",
            "tracking_uri", "storage_path", "max_concurrent", "max_failures", "save_checkpoint", "system_metrics",
            "num_threads", "description", "transfer", "simulate"}
DATASET_KEYS = {"synthetic", "store", "import", "cutoff", "data_dir"}
SYNTH_KEYS = {"n", "points", "seed", "noise", "gap"}
IMPORT_KEYS = {"kind", "src", "targets", "points", "min_distance"}
AXES_KEYS = {"n_train", "target_n", "data_fractions", "n_params", "seeds", "subset", "source_n"}
TRANSFER_KEYS = {"source", "source_targets", "strategy", "pretrain"}
PRETRAIN_KEYS = {"epochs", "lr", "batch_size", "weight_decay", "patience"}
BUDGET_KEYS = {"epochs", "max_steps", "patience", "precision"}
HPO_KEYS = {"trials_per_point", "space", "early_stopping", "sampler", "share"}
STOP_KEYS = {"type", "grace_epochs", "reduction_factor", "min_trials"}
RESOURCE_KEYS = {"cpu", "gpu", "gpu_type"}
#: (minimum, strictly above it, below) of each searchable value, as gnn.train.TrainConfig.validate requires
SEARCH_RANGES = {"lr": (0, True, None), "weight_decay": (0, False, None), "batch_size": (1, False, None),
                 "warmup_frac": (0, False, 1), "grad_clip": (0, False, None)}
DISTRIBUTIONS = {"log_uniform", "uniform", "int", "log_int", "choice"}
#: fields that change what a trial computes; the spec hash covers exactly these
HASHED = ("dataset", "targets", "loss_weights", "archs", "axes", "budget", "hpo", "transfer", "simulate")


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
    tracking_uri: str = DEFAULT_URI
    storage_path: str = "runs/ray"
    max_concurrent: int | None = None
    max_failures: int = 2
    save_checkpoint: bool = False
    system_metrics: bool = True
    num_threads: int | None = None
    description: str = ""
    transfer: dict | None = None  #: source dataset, source_targets, strategy, pretrain (see the module docstring)
    simulate: dict | None = None  #: trials sleep and report a known law (:mod:`sweeps.simulate`; bench/scale.py)
    path: str = ""

    @property
    def hash(self) -> str:
        """Hash of everything that changes what trials compute (not where they run or are tracked)."""
        fields = {k: getattr(self, k) for k in HASHED}
        for key in ("transfer", "simulate"):  # keys that did not exist before keep old specs' hashes (and runs)
            if fields[key] is None:
                fields.pop(key)
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
        raise InputError(f"expected a mapping, got {d!r:.60}", **_where(path, prefix.rstrip(".")))
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise InputError(f"unknown key (allowed: {', '.join(sorted(allowed))})", **_where(path, prefix + unknown[0]))
    return d


def _parse_number(value: Any, kind: type) -> int | float | None:
    """``value`` as a finite ``kind`` (int or float), or None if it is not one.

    Numeric strings count (YAML reads ``1e-3`` and ``${VAR}`` as strings); bools, words, NaN, ±inf and, for
    ``int``, non-integral values do not.
    """
    if isinstance(value, str):
        try:
            value = int(value) if kind is int and value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if kind is int:
        return int(value) if value == int(value) else None
    return float(value)


def _number(value: Any, path: str, key: str, *, kind: type = float, minimum: float | None = None,
            strict: bool = False, below: float | None = None) -> int | float:
    """A finite number of ``kind`` (int or float) that is ≥ ``minimum`` (> with ``strict``) and < ``below``;
    anything else is an :class:`InputError` naming the field and the value."""
    x = _parse_number(value, kind)
    low = minimum is not None and x is not None and (x <= minimum if strict else x < minimum)
    high = below is not None and x is not None and x >= below
    if x is None or low or high:
        bounds = ([] if minimum is None else [f"{'>' if strict else '≥'} {minimum:g}"]) + \
                 ([] if below is None else [f"< {below:g}"])
        what = "an integer" if kind is int else "a number"
        raise InputError(f"must be {what}{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}",
                         **_where(path, key))
    return x


def _optional_number(value: Any, path: str, key: str, **bounds) -> int | float | None:
    """:func:`_number`, or None where the spec leaves the field empty."""
    return None if value is None else _number(value, path, key, **bounds)


def _as_written(value: Any, checked: Any) -> Any:
    """A field the spec hash covers as written: a number stays as the spec wrote it (so the hash of existing
    specs does not change), other accepted forms (numeric strings) become the checked value."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else checked


def _flag(value: Any, path: str, key: str) -> bool:
    """A boolean field: true or false (also the strings ``true``/``false`` that ``${VAR}`` gives)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InputError(f"must be true or false, got {value!r}", **_where(path, key))


def _text(value: Any, path: str, key: str, *, empty: bool = False) -> str:
    """A string field (a name, a path, a URI); non-empty unless ``empty``."""
    if not isinstance(value, str) or not (empty or value.strip()):
        raise InputError(f"must be a{'' if empty else ' non-empty'} string, got {value!r:.60}", **_where(path, key))
    return value


def _text_list(values: Any, path: str, key: str) -> list[str] | None:
    """An optional non-empty list of strings (target names)."""
    if values is None:
        return None
    if not isinstance(values, list) or not values:
        raise InputError(f"must be a non-empty list, got {values!r}", **_where(path, key))
    for v in values:
        _text(v, path, key)
    return values


def _number_list(values: Any, path: str, key: str, *, kind: type = float, minimum: float | None = 0,
                 strict: bool = True) -> list:
    """A non-empty list of distinct numbers, each checked by :func:`_number` (default: all > 0)."""
    if not isinstance(values, list) or not values:
        raise InputError("must be a non-empty list", **_where(path, key))
    out = [_number(v, path, key, kind=kind, minimum=minimum, strict=strict) for v in values]
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


def _search_value(name: str, value: Any, path: str, key: str, kind: type | None = None) -> int | float:
    """One value of a searchable hyperparameter: its type (or ``kind``) and range (:data:`SEARCH_RANGES`)."""
    minimum, strict, below = SEARCH_RANGES[name]
    return _number(value, path, key, kind=kind or SEARCHABLE[name], minimum=minimum, strict=strict, below=below)


def _check_space(space: Any, path: str) -> dict:
    space = _check_keys(space or {}, set(SEARCHABLE), path, "hpo.space.")
    for name, dist in space.items():  # checked, but kept as written: the spec hash covers it
        key = f"hpo.space.{name}"
        if not isinstance(dist, dict):  # a fixed value
            _search_value(name, dist, path, key)
            continue
        if len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise InputError(f"expected one of {', '.join(sorted(DISTRIBUTIONS))} or a fixed value",
                             **_where(path, key))
        kind, args = next(iter(dist.items()))
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise InputError("choice needs a non-empty list", **_where(path, key))
            for v in args:
                _search_value(name, v, path, key)
            continue
        if not isinstance(args, list) or len(args) != 2:
            raise InputError(f"{kind} needs [low, high]", **_where(path, key))
        lo, hi = (_search_value(name, a, path, key, kind=int if kind in ("int", "log_int") else float)
                  for a in args)
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
        sizes = _number_list(axes["source_n"], path, prefix + "source_n", kind=int, strict=False)
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
    axes["seeds"] = _number_list(axes.get("seeds", [0]), path, prefix + "seeds", kind=int, minimum=None)
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
        sk = f"{key}.synthetic."
        ds["synthetic"] = {"n": _number(synth.get("n"), path, sk + "n", kind=int, minimum=10),
                           "points": _number(synth.get("points", DEFAULT_POINTS), path, sk + "points", kind=int, minimum=2),
                           "seed": _number(synth.get("seed", 0), path, sk + "seed", kind=int, minimum=0),
                           "noise": _number(synth.get("noise", 0.05), path, sk + "noise", minimum=0)}
        if synth.get("gap"):
            try:
                ds["synthetic"]["gap"] = check_gap(synth["gap"])
            except InputError as exc:
                raise InputError(str(exc).split(": ", 1)[-1], **_where(path, f"{key}.synthetic.gap")) from None
    if "import" in ds:
        ds["import"] = _check_import(ds["import"], path, f"{key}.import.")
    for k in ("store", "data_dir"):
        if k in ds:
            _text(ds[k], path, f"{key}.{k}")
    ds["cutoff"] = _number(ds.get("cutoff", DEFAULT_CUTOFF), path, f"{key}.cutoff", minimum=0, strict=True)
    return ds


def _check_import(imp: Any, path: str, prefix: str) -> dict:
    """A ``dataset.import`` block; kept as written (it names the store folder and the spec hash covers it),
    except that numeric strings become numbers."""
    from gnn.readers import READERS

    imp = _check_keys(imp, IMPORT_KEYS, path, prefix)
    for k in ("kind", "src"):
        if k not in imp:
            raise InputError("missing", **_where(path, prefix + k))
    if imp["kind"] not in READERS:
        raise InputError(f"unknown data kind {imp['kind']!r}; choose one of {', '.join(READERS)}",
                         **_where(path, prefix + "kind"))
    _text(imp["src"], path, prefix + "src")
    _text_list(imp.get("targets"), path, prefix + "targets")
    checked = {"points": _optional_number(imp.get("points"), path, prefix + "points", kind=int, minimum=2),
               "min_distance": _optional_number(imp.get("min_distance"), path, prefix + "min_distance", minimum=0)}
    return {**imp, **{k: _as_written(imp[k], v) for k, v in checked.items() if k in imp}}


def _check_transfer(tr: Any, path: str) -> dict | None:
    """The ``transfer`` section, with defaults (None when the spec has none)."""
    from gnn.finetune import parse_strategy

    if tr is None:
        return None
    tr = _check_keys(tr, TRANSFER_KEYS, path, "transfer.")
    if "source" not in tr:
        raise InputError("missing (the pretraining data, a dataset block)", **_where(path, "transfer.source"))
    source = _check_dataset(tr["source"], path, "transfer.source")
    targets = _text_list(tr.get("source_targets"), path, "transfer.source_targets")
    strategy = _text(tr.get("strategy", "full"), path, "transfer.strategy")
    parse_strategy(strategy, **_where(path, "transfer.strategy"))
    pre = dict(_check_keys(tr.get("pretrain") or {}, PRETRAIN_KEYS, path, "transfer.pretrain."))
    pk = "transfer.pretrain."
    pre = {"epochs": _number(pre.get("epochs", 10), path, pk + "epochs", kind=int),
           "lr": _number(pre.get("lr", 1e-3), path, pk + "lr"),
           "batch_size": _number(pre.get("batch_size", 32), path, pk + "batch_size", kind=int),
           "weight_decay": _number(pre.get("weight_decay", 1e-2), path, pk + "weight_decay", minimum=0),
           "patience": _optional_number(pre.get("patience"), path, pk + "patience", kind=int, minimum=0)}
    if pre["epochs"] < 1 or pre["batch_size"] < 1 or pre["lr"] <= 0:
        raise InputError(f"epochs and batch_size must be ≥ 1, lr > 0, got epochs {pre['epochs']}, batch_size "
                         f"{pre['batch_size']}, lr {pre['lr']:g}", **_where(path, "transfer.pretrain"))
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
    from gnn.models import ARCHS

    raw = dict(_check_keys(raw, TOP_KEYS, path, ""))
    for key in ("experiment", "dataset", "archs", "axes", "budget"):
        if key not in raw:
            raise InputError("missing", **_where(path, key))
    if not isinstance(raw["experiment"], str) or not re.fullmatch(r"[\w.\-]+", raw["experiment"]):
        raise InputError(f"experiment must be a name of letters, digits, '_', '-', '.', got {raw['experiment']!r}",
                         **_where(path, "experiment"))

    ds = _check_dataset(raw["dataset"], path, "dataset")

    archs = raw["archs"]
    if not isinstance(archs, list) or not archs:
        raise InputError("must be a non-empty list", **_where(path, "archs"))
    for a in archs:
        if not isinstance(a, str) or a not in ARCHS:
            raise InputError(f"unknown arch {a!r}; choose from {', '.join(ARCHS)}", **_where(path, "archs"))

    blocks = raw["axes"] if isinstance(raw["axes"], list) else [raw["axes"]]
    if not blocks:
        raise InputError("must be a mapping or a non-empty list of mappings", **_where(path, "axes"))
    transfer = _check_transfer(raw.get("transfer"), path)
    axes = [_check_axes(b, path, "axes." if len(blocks) == 1 else f"axes[{i}].", transfer is not None)
            for i, b in enumerate(blocks)]

    weights = raw.get("loss_weights") or {}
    if not isinstance(weights, dict):
        raise InputError(f"must map targets to non-negative numbers, got {weights!r:.60}",
                         **_where(path, "loss_weights"))
    weights = {k: _number(v, path, f"loss_weights.{k}", minimum=0) for k, v in weights.items()}
    return Spec(experiment=raw["experiment"], dataset=ds, targets=_text_list(raw.get("targets"), path, "targets"),
                archs=list(archs), axes=axes, budget=_check_budget(raw["budget"], path),
                hpo=_check_hpo(raw.get("hpo"), path), loss_weights=weights,
                resources=_check_resources(raw.get("resources", {"cpu": 1, "gpu": 0}), path),
                tracking_uri=_text(raw.get("tracking_uri", DEFAULT_URI), path, "tracking_uri"),
                storage_path=_text(raw.get("storage_path", "runs/ray"), path, "storage_path"),
                max_concurrent=_optional_number(raw.get("max_concurrent"), path, "max_concurrent", kind=int,
                                                minimum=1),
                max_failures=_number(raw.get("max_failures", 2), path, "max_failures", kind=int, minimum=0),
                save_checkpoint=_flag(raw.get("save_checkpoint", False), path, "save_checkpoint"),
                system_metrics=_flag(raw.get("system_metrics", True), path, "system_metrics"),
                num_threads=_optional_number(raw.get("num_threads"), path, "num_threads", kind=int, minimum=1),
                description=_text(raw.get("description") or "", path, "description", empty=True),
                transfer=transfer, simulate=simulate.check(raw.get("simulate"), lambda key: _where(path, key)),
                path=path)


def _check_budget(budget: Any, path: str) -> dict:
    """The ``budget`` section: epochs, and the optional max_steps and patience (kept as written) and precision
    (fp32 | bf16 | auto, :mod:`gnn.precision`; kept only where given, so older specs keep their hash)."""
    budget = _check_keys(budget, BUDGET_KEYS, path, "budget.")
    max_steps, patience = budget.get("max_steps"), budget.get("patience", 10)
    if "precision" in budget and budget["precision"] not in PRECISIONS:
        raise InputError(f"unknown precision {budget['precision']!r}; choose one of {', '.join(PRECISIONS)}",
                         **_where(path, "budget.precision"))
    precision = {"precision": budget["precision"]} if "precision" in budget else {}
    return {**precision, "epochs": _number(budget.get("epochs"), path, "budget.epochs", kind=int, minimum=1),
            "max_steps": _as_written(max_steps, _optional_number(max_steps, path, "budget.max_steps", kind=int,
                                                                 minimum=1)),
            "patience": _as_written(patience, _optional_number(patience, path, "budget.patience", kind=int,
                                                               minimum=0))}


def _check_hpo(hpo: Any, path: str) -> dict:
    """The ``hpo`` section with defaults: trials per point, search space, early stopping, sampler, and ``share``
    (:mod:`sweeps.search`; ``none`` by default)."""
    hpo = _check_keys(hpo or {}, HPO_KEYS, path, "hpo.")
    stop = _check_keys(hpo.get("early_stopping") or {"type": "none"}, STOP_KEYS, path, "hpo.early_stopping.")
    if stop.get("type", "none") not in ("asha", "median", "none"):
        raise InputError(f"type must be asha, median or none, got {stop['type']!r}",
                         **_where(path, "hpo.early_stopping.type"))
    sampler = hpo.get("sampler", "tpe")
    if sampler not in ("tpe", "random"):
        raise InputError(f"must be tpe or random, got {sampler!r}", **_where(path, "hpo.sampler"))
    share = hpo.get("share", "none")
    if share not in ("none", "neighbours"):
        raise InputError(f"must be neighbours or none, got {share!r}", **_where(path, "hpo.share"))
    sk = "hpo.early_stopping."
    return {**({"share": share} if share != "none" else {}),  # kept only where used: older specs keep their hash
            "trials_per_point": _number(hpo.get("trials_per_point", 1), path, "hpo.trials_per_point", kind=int,
                                        minimum=1),
            "space": _check_space(hpo.get("space"), path),
            "early_stopping": {"type": stop.get("type", "none"),
                               "grace_epochs": _number(stop.get("grace_epochs", 1), path, sk + "grace_epochs",
                                                       kind=int, minimum=1),
                               "reduction_factor": _number(stop.get("reduction_factor", 2), path,
                                                           sk + "reduction_factor", minimum=1, strict=True),
                               "min_trials": _number(stop.get("min_trials", 2), path, sk + "min_trials", kind=int,
                                                     minimum=1)},
            "sampler": sampler}


def _check_resources(resources: Any, path: str) -> dict | str:
    """``auto``, or the CPUs (> 0) and GPUs (≥ 0, a fraction ≤ 1 or whole, or ``auto``: sized to the model) of one
    trial, and optionally ``gpu_type`` (a GPU of :data:`sweeps.resources.ACCELERATOR_GIB`: the GPU to size for,
    whatever the cluster says)."""
    from sweeps.resources import ACCELERATOR_GIB

    if resources == "auto":
        return resources
    resources = _check_keys(resources, RESOURCE_KEYS, path, "resources.")
    cpu = _number(resources.get("cpu", 1), path, "resources.cpu", minimum=0, strict=True)
    gpu = resources.get("gpu", 0)
    if gpu != "auto":
        gpu = _number(gpu, path, "resources.gpu", minimum=0)
        if gpu > 1 and gpu != int(gpu):
            raise InputError(f"must be a fraction (≤ 1), whole or auto, got {resources['gpu']!r}",
                             **_where(path, "resources.gpu"))
    out = {"cpu": cpu, "gpu": gpu}
    if "gpu_type" in resources:
        name = resources["gpu_type"]
        if not isinstance(name, str) or name not in ACCELERATOR_GIB:
            raise InputError(f"unknown GPU type {name!r}; choose one of {', '.join(ACCELERATOR_GIB)}",
                             **_where(path, "resources.gpu_type"))
        if not gpu:
            raise InputError("names a GPU for trials that ask for none (gpu: 0); set gpu: auto or a share",
                             **_where(path, "resources.gpu_type"))
        out["gpu_type"] = name
    return out


def duration(seconds: float) -> str:
    """``45s``, ``4m05s``, ``1h02m``, ``3d04h``."""
    s = int(round(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def makespan(seconds: list[float], slots: int) -> float:
    """Wall time of jobs started in this order on ``slots`` workers, each on the first one free."""
    import heapq

    free = [0.0] * max(1, slots)
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def _hours(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def plan_table(spec: Spec, points: list[Point], exact: bool, times=None) -> str:
    """The ``--dry-run`` listing: every planned trial with its estimated time, where the times come from and the
    sweep's total (CPU- or GPU-hours, and the wall time on this machine). ``times``: a
    :class:`sweeps.estimate.Times` (without one every time is ``?``); a transfer trial's time includes the
    pretraining it runs (column ``pretrain``: its share, or ``cached`` / ``reused`` where it runs none)."""
    tpp, transfer = spec.hpo["trials_per_point"], spec.transfer is not None
    trials = []  # (point, HPO index, seconds or None, pretrain column)
    for i, p in enumerate(points):
        for t in range(tpp):
            s = None if times is None else times.trial_s[i]
            pre, note = (0.0, "") if times is None else (times.pretrain_s[i], times.pretrain_note[i])
            if not p.source_n:
                column = "-"
            elif t > 0:
                pre, column = 0.0, "reused"
            else:
                column = note if note in ("cached", "reused") else "?" if pre is None else duration(pre)
            trials.append((p, t, None if s is None or pre is None else s + pre, column))
    known = [s for *_, s, _ in trials if s is not None]
    total = sum(known)
    lines = [f"sweep {spec.experiment}  spec {spec.hash}  {len(points)} points × {tpp} trials = {len(trials)} trials"
             + ("" if exact or all("n_train" in b for b in spec.axes) else
                "  (n_train estimated: the store is not built yet)"),
             f"{'trial':<34} {'arch':<12} {'n_params':>9} {'n_train':>8} {'seed':>5} {'time':>8} {'share':>6}"
             + (f" {'source_n':>8} {'pretrain':>8}" if transfer else "")
             + (" subset" if any(p.subset != "random" for p in points) else "")]
    for p, t, s, column in trials:
        n_train = str(p.n_train) if p.n_train else f"{p.fraction:g}·n"
        share = f"{100 * s / total:.1f}%" if s is not None and total > 0 else "?"
        lines.append(f"{trial_key(p.key, t):<34} {p.arch:<12} {sci(p.n_params):>9} {n_train:>8} {p.seed:>5} "
                     f"{duration(s) if s is not None else '?':>8} {share:>6}"
                     + (f" {p.source_n:>8} {column:>8}" if transfer else "")
                     + (f" {p.subset}" if p.subset != "random" else ""))
    if not exact and any(not p.n_train for p in points):
        lines.append("n: the training split of the data, known once the store is built (any run builds it)")
    lines += times.notes if times is not None else ["times not estimated"]
    stop, patience = spec.hpo["early_stopping"]["type"], spec.budget.get("patience")
    early = ([stop] if stop != "none" else []) + ([f"patience {patience}"] if patience is not None else [])
    pre = f" + {spec.transfer['pretrain']['epochs']} pretraining epochs" if transfer else ""
    lines.append(f"every trial at its full budget ({spec.budget['epochs']} epochs{pre})"
                 + (f"; early stopping ({', '.join(early)}) ends many sooner, so these are upper bounds" if early
                    else ""))
    if not known:
        lines.append("total cost not estimated")
        return "\n".join(lines)
    cpu, gpu = (times.resources["cpu"], times.resources["gpu"])
    hours = total / 3600
    cost = f"{_hours(hours * gpu)} GPU-hours ({_hours(hours * cpu)} CPU-hours)" if gpu else \
        f"{_hours(hours * cpu)} CPU-hours"
    missing = len(trials) - len(known)
    line = (f"total cost {cost}: {duration(total)} of trial time over {len(known)} trials ({cpu:g} CPU"
            + (f" + {gpu:g} GPU" if gpu else "") + " each)"
            + (f"; {missing} trials not estimated and not included" if missing else ""))
    if times.slots:
        wall = makespan([s for *_, s, _ in trials if s is not None], times.slots)
        line += (f"; about {duration(wall)} on this machine ({times.machine}: {times.slots} trial"
                 f"{'s' if times.slots != 1 else ''} at once)")
    lines.append(line)
    return "\n".join(lines)
