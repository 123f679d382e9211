"""One training run: ``gnn.train(TrainConfig(...)) -> metrics``.

The run reads a store (memory-mapped), takes the grouped split and the nested training subset (drawn by a
coverage strategy, :mod:`gnn.subsets`), builds the model at the requested parameter count (optionally from a
pretrained model, with a fine-tuning strategy: :mod:`gnn.finetune`) and trains it with AdamW, a linear
warm-up then cosine schedule, gradient clipping and early stopping on the validation loss, in the chosen
precision (:mod:`gnn.precision`: bf16 autocast by default on CUDA, fp32 elsewhere). On a GPU the data stay on the
device when they fit, else batches are prefetched; losses are summed on the device and checked once per epoch
(no host sync per step; a NaN still ends the run within its epoch). After every epoch it
calls ``callback(epoch, metrics, checkpoint_path)`` (the sweep reports through it) and, with a
``checkpoint_dir``, saves a checkpoint from which a restarted run resumes to the same result. The final
metrics are those of the best-validation model on the validation and test splits.
"""

from __future__ import annotations

import math
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from gnn import flops
from gnn import precision as precisions
from gnn import subsets
from gnn.defaults import DEFAULT_CUTOFF, DEFAULT_NUM_LAYERS, DEFAULT_SPLIT, RESIDENT_FRACTION
from gnn.errors import InputError
from gnn.finetune import freeze, load_pretrained, parse_strategy
from gnn.loader import GraphData, prefetch
from gnn.metrics import evaluate_arrays, loss_fn
from gnn.models import ModelConfig, build_model, config_dict, model_from_config
from gnn.splits import grouped_split
from gnn.store import Store

CHECKPOINT = "checkpoint.pt"  #: the file name of a run's checkpoint in its ``checkpoint_dir``
#: TrainConfig fields that change where and how fast a run computes, not what it computes
RUNTIME_FIELDS = ("checkpoint_dir", "device", "num_threads", "eval_batch_size", "precision", "data_on_device",
                  "device_share")


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the sweep marks such a trial FAILED with this reason."""


@dataclass
class TrainConfig:
    """A training run. ``fraction`` or ``n_train`` picks the nested subset (default: all training data)."""

    data: str
    arch: str = "cgc"
    n_params: float = 1e5
    targets: list[str] | None = None  #: None: every target of the store
    fraction: float | None = None
    n_train: int | None = None
    seed: int = 0
    epochs: int = 50
    max_steps: int | None = None  #: optional cap on optimiser steps
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    patience: int | None = 10  #: epochs without validation improvement before stopping; None: never
    loss_weights: dict[str, float] = field(default_factory=dict)  #: per target, default 1 (w·MAE(ω_D))
    cutoff: float = DEFAULT_CUTOFF
    num_layers: int = DEFAULT_NUM_LAYERS
    split: tuple[float, float, float] = DEFAULT_SPLIT
    split_seed: int = 0
    subset_seed: int = 0
    subset: str = "random"  #: coverage strategy of the training subset (see gnn.subsets)
    width: int | None = None  #: exact widths instead of planning them from n_params (a transfer's source run)
    ffn_width: int | None = None
    init_from: str | None = None  #: start from a pretrained model file (see gnn.transfer)
    strategy: str = "full"  #: which parameters fine-tuning trains: full, heads or freeze:K (with init_from)
    device: str = "auto"
    precision: str = "auto"  #: fp32 | bf16 | auto (bf16 on CUDA): see gnn.precision
    data_on_device: bool | None = None  #: keep the data on the GPU (None: when they fit, see RESIDENT_FRACTION)
    device_share: float | None = None  #: the fraction of the GPU this run may use (a Ray GPU share; None: 1)
    checkpoint_dir: str | None = None
    num_threads: int | None = None
    eval_batch_size: int = 256

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown training option (known: {', '.join(sorted(known))})", field=unknown[0])
        return cls(**d)

    def validate(self) -> None:
        self.split = tuple(float(x) for x in self.split)
        if self.fraction is not None and self.n_train is not None:
            raise InputError("give fraction or n_train, not both", field="fraction")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise InputError(f"fraction must be in (0, 1], got {self.fraction}", field="fraction")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"must be ≥ 1, got {getattr(self, name)}", field=name)
        for name in ("lr", "cutoff"):
            if not getattr(self, name) > 0:
                raise InputError(f"must be positive, got {getattr(self, name)}", field=name)
        if self.weight_decay < 0 or self.grad_clip < 0 or not 0 <= self.warmup_frac < 1:
            raise InputError("weight_decay and grad_clip must be ≥ 0, warmup_frac in [0, 1)", field="optimizer")
        if (self.width is None) != (self.ffn_width is None):
            raise InputError("give both width and ffn_width, or neither", field="width")
        subsets.parse(self.subset, field="subset")
        precisions.check(self.precision)
        if self.device_share is not None and not 0 < self.device_share <= 1:
            raise InputError(f"must be in (0, 1], got {self.device_share}", field="device_share")
        parse_strategy(self.strategy, self.num_layers, field="strategy")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r} (auto, cpu, cuda or cuda:K)", field="device") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"device {name!r}: training runs on cpu or cuda", field="device")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r}: CUDA is not available here", field="device")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise InputError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)", field="device")
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _schedule(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    warmup = max(1, int(warmup_frac * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _batches(data: GraphData, device: torch.device, idx: np.ndarray, batch_size: int, **order):
    """``data``'s batches on ``device``: made there (data on the device, or the CPU), else prefetched."""
    batches = data.batches(idx, batch_size, **order)
    return batches if data.device == device else prefetch(batches, device)


@torch.no_grad()
def evaluate(model, data: GraphData, idx: np.ndarray, device: torch.device, weights: dict[str, float],
             omega_ev, batch_size: int = 256, precision: str = "fp32") -> dict[str, float]:
    """Metrics (see :mod:`gnn.metrics`) of ``model`` on the structures ``idx`` (``precision`` resolved:
    fp32 or bf16)."""
    model.eval()
    preds: dict[str, list] = {t: [] for t in data.targets}
    with precisions.autocast(precision, device):
        for batch in _batches(data, device, idx, batch_size):
            out = model(batch)
            for t in data.targets:
                preds[t].append(out[t].float())
    pred = {t: torch.cat(v).cpu().numpy() for t, v in preds.items()}  # one copy to the host per target
    true = {t: data.y[t][torch.as_tensor(idx)].numpy() for t in data.targets}
    return evaluate_arrays(pred, true, weights, omega_ev)


def _save(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    tmp.replace(path)


@dataclass
class _Data:
    """What a run learns from: the store, its graphs for the cutoff, the split and the nested training subset."""

    store: Store
    graphs: GraphData
    targets: list[str]
    weights: dict[str, float]  #: loss weight per target
    split: dict[str, np.ndarray]  #: train / val / test indices
    train_idx: np.ndarray  #: the training subset (part of split["train"])

    @property
    def omega_ev(self):
        return self.store.omega_ev


@dataclass
class _Run:
    """The fixed parts of a run once it is set up: configuration, data, model, optimiser and schedule."""

    cfg: TrainConfig
    data: _Data
    device: torch.device
    precision: str  #: resolved: fp32 or bf16
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total_steps: int
    n_trainable: int
    n_transferred: int  #: tensors copied from ``cfg.init_from``
    ckpt_path: Path | None

    def evaluate(self, split: str) -> dict[str, float]:
        idx = self.data.split[split]
        return evaluate(self.model, self.data.graphs, idx, self.device, self.data.weights, self.data.omega_ev,
                        self.cfg.eval_batch_size, self.precision)


@dataclass
class LoopState:
    """What changes from epoch to epoch; a checkpoint keeps it as the dict ``checkpoint["state"]``
    (:meth:`to_dict`, read back with :meth:`from_dict`), so a restarted run resumes to the same result."""

    epoch: int = -1  #: the last finished epoch
    step: int = 0  #: optimiser steps taken
    best_val: float = math.inf
    best_epoch: int = -1
    best_state: dict | None = None  #: the best-validation weights (on the CPU)
    bad_epochs: int = 0  #: epochs since the last validation improvement
    history: list[dict] = field(default_factory=list)  #: the per-epoch metrics
    elapsed_s: float = 0.0
    train_time_s: float = 0.0
    data_time_s: float = 0.0
    samples: int = 0
    flops_per_sample: float | None = None  #: counted on the first training step (:mod:`gnn.flops`)
    stopped: bool = False  #: early stopping fired (patience)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict(): it would deep-copy best_state
        if not self.stopped:
            del d["stopped"]  # the checkpoint format has the key only once early stopping has fired
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LoopState":
        return cls(**d)

    def record_validation(self, val_loss: float, epoch: int, model: torch.nn.Module, patience: int | None) -> None:
        """Keep the best model so far and count epochs without improvement; stop after ``patience`` of them."""
        if val_loss < self.best_val:
            self.best_val, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            self.best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        if patience is not None and self.bad_epochs >= patience:
            self.stopped = True


def train(config: TrainConfig | dict, callback: Callable[[int, dict, str | None], bool | None] | None = None) -> dict:
    """Train one model; returns the final metrics (``val_*``, ``test_*``, sizes, timings).

    ``callback(epoch, metrics, checkpoint_path)`` runs after every epoch; returning ``True`` stops the run.

    Example::

        metrics = train(TrainConfig(data="data/demo", arch="cgc", n_params=1e5, fraction=0.25, epochs=5))
        metrics["val_loss"], metrics["n_params"]
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    t_start, cpu_start, started_at = time.perf_counter(), time.process_time(), time.time()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = _device(cfg.device)
    if device.type == "cuda":  # the peak of this run, not of earlier trials in the same worker
        torch.cuda.reset_peak_memory_stats(device)
    run = _setup(cfg, _on_device(_prepare_data(cfg), cfg, device), device)
    state = _resume(run)
    elapsed_before = state.elapsed_s

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start

    if run.ckpt_path is not None:
        run.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    stop = state.stopped
    for epoch in range(state.epoch + 1, cfg.epochs):
        if stop or state.step >= run.total_steps:
            break
        metrics = _epoch(run, state, epoch)
        stop = state.stopped
        state.elapsed_s = elapsed()
        if run.ckpt_path is not None:
            _save_checkpoint(run, state)
        if callback is not None and callback(epoch, metrics, str(run.ckpt_path) if run.ckpt_path else None):
            stop = True  # for this call only: a resumed run goes on
    result = _final_metrics(run, state, elapsed)
    result["cpu_time_s"] = time.process_time() - cpu_start  # this process's CPU time (a trial's own worker)
    result["started_at"] = started_at  # Unix time: with wall_time_s, when this call trained
    return result


def _prepare_data(cfg: TrainConfig) -> _Data:
    """Open the store and its graphs, check the targets, take the grouped split and the training subset."""
    store = Store(cfg.data)
    targets = list(cfg.targets) if cfg.targets else sorted(store.targets)
    for t in targets:
        if t not in store.targets:
            raise InputError(f"target {t!r} not in the store (has: {', '.join(sorted(store.targets))})",
                             file=store.path, field="targets")
    weights = {t: float(cfg.loss_weights.get(t, 1.0)) for t in targets}
    graphs = GraphData(store, cfg.cutoff, targets)
    split = grouped_split(store.formulas, tuple(cfg.split), cfg.split_seed)
    if len(split["val"]) == 0:
        raise InputError(f"the validation split is empty ({len(store)} entries); use a larger data set",
                         file=store.path, field="split")
    fraction = 1.0 if cfg.fraction is None and cfg.n_train is None else cfg.fraction
    train_idx = subsets.select(store, split["train"], cfg.subset, fraction=fraction, n_train=cfg.n_train,
                               subset_seed=cfg.subset_seed)
    return _Data(store, graphs, targets, weights, split, train_idx)


def _on_device(data: _Data, cfg: TrainConfig, device: torch.device) -> _Data:
    """``data`` with its graphs on a GPU ``device`` when ``cfg.data_on_device`` says so or (None) when they take at
    most :data:`RESIDENT_FRACTION` of the run's share of the GPU's memory."""
    resident = cfg.data_on_device
    if device.type == "cpu" or resident is False:
        return data
    if resident is None:
        budget = torch.cuda.get_device_properties(device).total_memory * (cfg.device_share or 1.0)
        resident = data.graphs.nbytes <= RESIDENT_FRACTION * budget
    if resident:
        data.graphs = data.graphs.to(device)
    return data


def _setup(cfg: TrainConfig, data: _Data, device: torch.device) -> _Run:
    """Seed, build the model (from ``init_from`` with its strategy, if given), the optimiser and the schedule."""
    _seed_everything(cfg.seed)
    omega_ev = data.omega_ev
    n_points = None if omega_ev is None else len(omega_ev)
    if cfg.width is not None:
        model = model_from_config(ModelConfig(cfg.arch, cfg.width, cfg.ffn_width, data.targets, n_points,
                                              num_layers=cfg.num_layers, cutoff=cfg.cutoff))
    else:
        model = build_model(cfg.arch, cfg.n_params, data.targets, n_points, num_layers=cfg.num_layers,
                            cutoff=cfg.cutoff)
    tidx = torch.as_tensor(data.train_idx)
    model.set_target_stats({t: data.graphs.y[t][tidx].float() for t in data.targets})
    transferred = load_pretrained(model, cfg.init_from) if cfg.init_from else []
    n_trainable = freeze(model, cfg.strategy) if cfg.init_from else model.n_params
    model.to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(data.train_idx) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps,
                                                                                   cfg.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total_steps, cfg.warmup_frac))
    ckpt_path = Path(cfg.checkpoint_dir) / CHECKPOINT if cfg.checkpoint_dir else None
    return _Run(cfg, data, device, precisions.resolve(cfg.precision, device), model, optimizer, scheduler,
                total_steps, n_trainable, len(transferred), ckpt_path)


def _resume(run: _Run) -> LoopState:
    """The state of the run's checkpoint (model, optimiser and schedule restored from it), or a fresh one."""
    if run.ckpt_path is None or not run.ckpt_path.exists():
        return LoopState()
    ckpt = torch.load(run.ckpt_path, map_location="cpu", weights_only=False)  # best_state stays on the CPU;
    # load_state_dict copies the weights and the optimiser's moments onto the model's device
    key = _resume_key(run.cfg)
    if ckpt["config"] != key:
        differ = sorted(k for k in {*key, *ckpt["config"]} if key.get(k) != ckpt["config"].get(k))
        raise InputError(f"checkpoint was written by a different configuration ({', '.join(differ)} differ)",
                         file=run.ckpt_path, field=differ[0] if differ else "config")
    if ckpt.get("precision", run.precision) != run.precision:  # one run, one precision (its record says which)
        raise InputError(f"checkpoint was trained in {ckpt['precision']}; resume it with that precision (or use "
                         "another checkpoint folder)", file=run.ckpt_path, field="precision")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    return LoopState.from_dict(ckpt["state"])


def _epoch(run: _Run, state: LoopState, epoch: int) -> dict:
    """Train one epoch, validate, update the best model and early stopping; returns the epoch's metrics."""
    t_epoch = time.perf_counter()
    total, count = _train_epoch(run, state, epoch)
    if not math.isfinite(total):
        raise DivergedError(f"loss is {total} at epoch {epoch} (its summed training loss, by step {state.step})")
    state.train_time_s += time.perf_counter() - t_epoch
    state.samples += count
    val = run.evaluate("val")
    if not math.isfinite(val["loss"]):
        raise DivergedError(f"validation loss is {val['loss']} at epoch {epoch}")
    state.record_validation(val["loss"], epoch, run.model, run.cfg.patience)
    metrics = {"epoch": epoch, "train_loss": total / max(count, 1), "lr": run.scheduler.get_last_lr()[0],
               "epoch_time_s": time.perf_counter() - t_epoch, **{f"val_{k}": v for k, v in val.items()},
               "best_val_loss": state.best_val}
    state.history.append(metrics)
    state.epoch = epoch
    return metrics


def _train_epoch(run: _Run, state: LoopState, epoch: int) -> tuple[float, int]:
    """One pass over the training subset in this epoch's seeded order (up to the step budget);
    returns (sample-weighted loss sum, samples)."""
    cfg, model = run.cfg, run.model
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    total = torch.zeros((), dtype=torch.float64, device=run.device)  # summed on the device: no sync per step
    count = 0
    t_data = time.perf_counter()
    for batch in _batches(run.data.graphs, run.device, run.data.train_idx, cfg.batch_size, shuffle=True,
                          generator=gen):
        state.data_time_s += time.perf_counter() - t_data
        n = batch.num_graphs
        with flops.counting(state.flops_per_sample is None) as counted:
            with precisions.autocast(run.precision, run.device):
                pred = model(batch)
            loss = loss_fn(pred, batch, run.data.weights)
            _optimizer_step(run, loss)
        if counted.total:
            state.flops_per_sample = counted.total / n
        state.step += 1
        total += loss.detach().double() * n
        count += n
        t_data = time.perf_counter()
        if state.step >= run.total_steps:
            break
    return total.item(), count


def _optimizer_step(run: _Run, loss: torch.Tensor) -> None:
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()


def _save_checkpoint(run: _Run, state: LoopState) -> None:
    _save(run.ckpt_path, {"config": _resume_key(run.cfg), "precision": run.precision,
                          "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                          "model_config": config_dict(run.model.config), "state": state.to_dict()})


def _final_metrics(run: _Run, state: LoopState, elapsed: Callable[[], float]) -> dict:
    """The best-validation model's metrics on the validation and test splits, with sizes, timings and records."""
    model, data = run.model, run.data
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    result: dict = {}
    for name in ("val", "test"):
        if len(data.split[name]):
            result.update({f"{name}_{k}": v for k, v in run.evaluate(name).items()})
    train_time, wall_s = max(state.train_time_s, 1e-9), elapsed()
    result.update({
        "n_params": model.n_params, "n_train": len(data.train_idx), "n_val": len(data.split["val"]),
        "n_test": len(data.split["test"]), "width": model.config.width, "ffn_width": model.config.ffn_width,
        "epochs": state.epoch + 1, "best_epoch": state.best_epoch, "steps": state.step,
        "wall_time_s": wall_s,
        "flops_per_sample": state.flops_per_sample or 0.0,
        "train_flops": (state.flops_per_sample or 0.0) * state.samples,
        "device_hours": flops.device_hours(wall_s, str(run.device), run.cfg.device_share,
                                           run.cfg.num_threads or torch.get_num_threads()),
        "samples_per_s": state.samples / train_time,
        "data_time_frac": state.data_time_s / train_time,
        "peak_memory_mb": _peak_memory_mb(run.device),
        "device": str(run.device), "precision": run.precision, "n_trainable": run.n_trainable,
        "threads": torch.get_num_threads(),
        "n_transferred_tensors": run.n_transferred,
        "trained_with": _trained_with(run.optimizer, run.cfg),
        **subsets.subset_stats(data.store, data.train_idx),
        "subset_sha": subsets.subset_sha(data.store, data.train_idx),
    })
    return result


def _trained_with(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> dict:
    """The optimisation settings as the optimiser and the loader actually used them (a record to check the
    logged hyperparameters against)."""
    group = optimizer.param_groups[0]
    return {"lr": float(group["initial_lr"]), "weight_decay": float(group["weight_decay"]),
            "batch_size": int(cfg.batch_size), "warmup_frac": float(cfg.warmup_frac), "grad_clip": float(cfg.grad_clip)}


def checkpoint_history(checkpoint: str | Path) -> list[dict]:
    """The per-epoch metrics stored in a training checkpoint (epochs 0 … the checkpointed one)."""
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]["history"]


def _resume_key(cfg: TrainConfig) -> dict:
    """The configuration fields a checkpoint must agree on to be resumed."""
    d = asdict(cfg)
    for k in (*RUNTIME_FIELDS, "data", "init_from"):
        d.pop(k)
    return d


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # process peak RSS


def export_best(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the best-validation weights of a training checkpoint as a small file that :func:`load_model` reads."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    best = ckpt["state"]["best_state"] or ckpt["model"]
    out = Path(out)
    _save(out, {"model_config": ckpt["model_config"], "model": best, "best_epoch": ckpt["state"]["best_epoch"]})
    return out


def load_model(checkpoint: str | Path):
    """The model of a file written by :func:`train` (last epoch) or :func:`export_best` (best epoch)."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = model_from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model
