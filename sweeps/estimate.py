"""How long trials take: the times that ``matscale sweep SPEC --dry-run`` prints.

Per model (architecture, target parameter count) one trial takes ``setup + epochs × per_epoch + samples ×
per_sample`` seconds (:class:`Rates`; samples: n_train × epochs, fewer under ``budget.max_steps``). A transfer
trial also pretrains (``source_n`` × the pretraining epochs, on the source store) unless an earlier trial of the
sweep with the same model, source size and seed did (the pretrained model is cached) or the cache holds it
already. The rates come, per model, from:

1. **finished trial runs of the same experiment** (:func:`from_runs`): their ``trial_wall_time_s`` fitted as
   ``a + b · n_train · epochs`` (non-negative least squares, :func:`fit_rates`); a run's own pretraining
   (``pretrain_wall_time_s`` where it was not cached) is taken out and fitted the same way over
   ``pretrain_n_train · pretrain_epochs``. These times are real trials, Ray and MLflow included, on the machines
   that ran them. The tracking store is only read, and only where it exists: a SQLite file that is there, a
   server that answers within 5 s; anything else falls back to
2. **a few timed steps on this machine** (:func:`probe`): :func:`gnn.train.train` on :data:`PROBE_BATCHES`
   batches for :data:`PROBE_EPOCHS` epochs, with the sweep's batch size, threads per trial and device. The later
   epochs give the seconds per training sample and per validation pass (the final evaluation of the validation
   and test splits, timed after the last epoch, gives the validation share); everything else (reading the
   graphs, building the model, the first epoch's warm-up, the final evaluation) is the fixed cost. Models above
   :data:`PROBE_MAX_PARAMS` are timed at that size and their per-sample and per-epoch costs scaled by the
   parameter count (an upper bound). Ray and MLflow add a little per trial and epoch that a probe does not see
   (``bench/sweep_overhead.py`` measures it).

Every trial is counted with its full epoch budget: early stopping (ASHA, median, patience) ends trials sooner,
so with early stopping the times are upper bounds. A spec that asks for GPUs is timed only where there are GPUs
(or from finished runs).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from gnn.errors import InputError
from sweeps import record, resources, tracking
from sweeps.spec import Point, Spec, duration, sci

PROBE_BATCHES = 3  #: training batches per probe epoch
PROBE_EPOCHS = 3  #: the first warms up; the others are timed
PROBE_MAX_PARAMS = {"cpu": 2e6, "cuda": 2e8}  #: larger models are timed at this size and scaled
DEFAULT_BATCH_SIZE = 32  #: gnn.train.TrainConfig's, for a spec whose hpo.space has no batch_size


@dataclass
class Rates:
    """Seconds of one training run of one model: ``setup_s + epochs × epoch_s + samples × sample_s``."""

    setup_s: float  #: fixed per run (data, model, warm-up, final evaluation; from runs: everything fixed)
    sample_s: float  #: per training sample and epoch
    epoch_s: float = 0.0  #: per epoch besides training (the validation pass)

    def seconds(self, n_train: int, epochs: int, batch_size: int, max_steps: int | None = None) -> float:
        per_epoch = math.ceil(n_train / batch_size)
        steps = epochs * per_epoch if max_steps is None else min(int(max_steps), epochs * per_epoch)
        run = math.ceil(steps / per_epoch)
        samples = min(n_train * epochs, steps * batch_size)
        return self.setup_s + run * self.epoch_s + samples * self.sample_s

    def scaled(self, factor: float) -> "Rates":
        return Rates(self.setup_s, self.sample_s * factor, self.epoch_s * factor)


def fit_rates(rows: list[tuple[float, float]]) -> Rates | None:
    """``(work, seconds)`` pairs (work: samples × epochs) fitted as ``seconds = a + b · work``, a, b ≥ 0 (the exact
    two-variable non-negative least squares); with one distinct work value, ``b = median(seconds) / work``."""
    import numpy as np

    rows = [(float(w), float(t)) for w, t in rows if w > 0 and math.isfinite(w) and math.isfinite(t) and t >= 0]
    if not rows:
        return None
    w, t = (np.array(v) for v in zip(*rows))
    if len(np.unique(w)) < 2:
        return Rates(0.0, float(np.median(t / w)))
    a, b = np.linalg.lstsq(np.stack([np.ones_like(w), w], axis=1), t, rcond=None)[0]
    if a < 0:
        a, b = 0.0, float(t @ w / (w @ w))
    if b < 0:
        a, b = float(t.mean()), 0.0
    return Rates(float(a), float(b))


# --- source 1: finished runs ------------------------------------------------------------------------------------
@dataclass
class History:
    """Rates per model ``(arch, n_params target)`` from an experiment's finished trial runs."""

    rates: dict = field(default_factory=dict)  #: model → Rates of its trials (without pretraining)
    pretrain: dict = field(default_factory=dict)  #: model → Rates of its pretraining
    runs: int = 0  #: finished runs that logged a time
    devices: list = field(default_factory=list)  #: where they ran (their ``device`` param)
    why_not: str = ""  #: why there are none (no store yet, server unreachable, …)


def from_runs(spec: Spec) -> History:
    """Rates from the finished trial runs of ``spec.experiment`` (any spec hash): reads the tracking store where it
    exists and answers, creates nothing there (a SQLite store gets only its lock file), never raises."""
    uri = tracking.normalise_uri(spec.tracking_uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            return History(why_not=f"no tracking store {db} yet")
    elif uri.startswith(("http://", "https://")):
        try:
            uri = tracking.use_credentials(uri)
            tracking.check_reachable(uri)
        except InputError as exc:
            return History(why_not=str(exc).split(": ", 1)[-1])
    else:
        return History(why_not="a dry run reads only SQLite and http(s) tracking stores")
    try:
        c = tracking.client(uri)
        exp = c.get_experiment_by_name(spec.experiment)
        if exp is None:
            return History(why_not=f"no experiment {spec.experiment!r} in the tracking store yet")
        runs = tracking.search_all(c, [exp.experiment_id], record.runs_filter(record.KIND_TRIAL,
                                                                              status=record.FINISHED))
    except Exception as exc:  # noqa: BLE001 - a dry run falls back to timing, whatever the store did
        return History(why_not=tracking.redact_uri(f"tracking store not readable ({type(exc).__name__}: "
                                                   f"{' '.join(str(exc).split())[:120]})"))
    return history_of(runs)


def history_of(runs: list) -> History:
    """:class:`History` of finished trial runs (MLflow run objects): per model, the trials' times without their
    pretraining, and the pretraining times where a run pretrained (not cached)."""
    trials: dict = {}
    pre: dict = {}
    devices, used = set(), 0
    for r in runs:
        m, tags, params = r.data.metrics, r.data.tags, r.data.params
        arch = tags.get(record.ARCH) or params.get("arch")
        need = [m.get(k) for k in ("trial_wall_time_s", "n_train", "epochs", "n_params_target")]
        if arch is None or any(v is None or not math.isfinite(v) for v in need):
            continue
        wall, n_train, epochs, n_params = need
        model = (arch, float(n_params))
        if m.get("pretrain_cached") == 0 and m.get("pretrain_wall_time_s") is not None:
            wall = max(0.0, wall - m["pretrain_wall_time_s"])
            pre.setdefault(model, []).append((m.get("pretrain_n_train", 0) * m.get("pretrain_epochs", 0),
                                              m["pretrain_wall_time_s"]))
        trials.setdefault(model, []).append((n_train * epochs, wall))
        devices.add(params.get("device", "?"))
        used += 1
    rates = {k: v for k, v in ((k, fit_rates(rows)) for k, rows in trials.items()) if v is not None}
    pretrain = {k: v for k, v in ((k, fit_rates(rows)) for k, rows in pre.items()) if v is not None}
    return History(rates, pretrain, used, sorted(devices),
                   "" if rates else "no finished trial of this experiment logged trial_wall_time_s")


# --- source 2: timed steps on this machine ----------------------------------------------------------------------
def batch_size(space: dict) -> tuple[int, str]:
    """The batch size to time a trial at, and a note when the search may draw others: the smallest it may
    draw (the slowest per sample)."""
    b = space.get("batch_size", DEFAULT_BATCH_SIZE)
    if not isinstance(b, dict):
        return int(b), ""
    (kind, values), = b.items()
    low = int(min(values) if kind == "choice" else values[0])
    return low, f"batch size {low}, the smallest hpo.space.batch_size may draw (the slowest per sample)"


def resources_here(spec: Spec, store: Path | None = None) -> tuple[dict, int, int]:
    """(what one trial asks for, GPUs on this machine, cores here). ``auto`` is sized for this machine's GPUs, or
    with ``MATSCALE_AUTOSCALE=1`` for the autoscaler's (:func:`trial_gpus`); ``store``: count the structures'
    edges there."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gpus = 0
    if resources.is_auto(spec) or spec.resources["gpu"]:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    g = trial_gpus(spec)
    return resources.trial_resources(spec, gpus=g.count, gpu_memory=g.memory_gib, gpu_name=g.name,
                                     store=store), gpus, cores


def trial_gpus(spec: Spec) -> resources.GPUs:
    """The GPUs the sweep's trials would get (:func:`sweeps.cluster_check.sweep_gpus` without a Ray cluster: this
    machine's, or the autoscaler's config's; ``resources.gpu_type`` counts as GPUs to plan for)."""
    from sweeps.cluster_check import sweep_gpus

    return sweep_gpus(spec, None)


def cannot_time_here(spec: Spec) -> str | None:
    """Why trials of ``spec`` cannot be timed on this machine (it asks for GPUs, there are none), or None."""
    res, gpus, _ = resources_here(spec)
    if res["gpu"] and not gpus:
        return f"the spec asks for {res['gpu']:g} GPU per trial and this machine has none"
    return None


def models(points: list[Point]) -> list[tuple[str, float]]:
    return sorted({(p.arch, float(p.n_params)) for p in points})


def needs_store(spec: Spec, points: list[Point], history: History) -> tuple[bool, bool]:
    """Whether the estimate needs the store (a size known only from it, or a model to time) and the transfer
    source store (a pretraining to time)."""
    target = any(not p.n_train for p in points) or any(m not in history.rates for m in models(points))
    source = bool(spec.transfer) and any(m not in history.pretrain for m in models([p for p in points if p.source_n]))
    return target, source


def probe(store: str | Path, *, arch: str, n_params: float, targets: list[str] | None, batch: int, n_train: int,
          threads: int, device: str, loss_weights: dict | None = None, cutoff: float | None = None) -> Rates:
    """Time a short :func:`gnn.train.train` (:data:`PROBE_EPOCHS` epochs of ``n_train`` structures) and split it
    into :class:`Rates` (see the module docstring). Leaves torch's thread count as it found it."""
    import torch

    from gnn.train import TrainConfig, train

    marks: list[tuple[float, float]] = []  # (when the epoch's callback ran, its epoch_time_s: training + validation)
    cfg = TrainConfig(data=str(store), arch=arch, n_params=n_params, targets=targets, n_train=n_train,
                      epochs=PROBE_EPOCHS, batch_size=batch, patience=None, loss_weights=loss_weights or {},
                      num_threads=threads, device=device, checkpoint_dir=None,
                      **({} if cutoff is None else {"cutoff": cutoff}))
    threads_before = torch.get_num_threads()
    start = time.perf_counter()
    try:
        result = train(cfg, callback=lambda epoch, m, _ckpt: marks.append((time.perf_counter(), m["epoch_time_s"])))
    finally:
        torch.set_num_threads(threads_before)
    end = time.perf_counter()
    final = end - marks[-1][0]  # the best model's evaluation on the validation and test splits
    val_s = final * result["n_val"] / max(1, result["n_val"] + result["n_test"])
    train_s = statistics.median(max(e - val_s, 0.1 * e) for _, e in marks[1:])  # later epochs: warm
    setup = (end - start) - len(marks) * (train_s + val_s)
    return Rates(max(0.0, setup), train_s / result["n_train"], val_s)


# --- the estimate -----------------------------------------------------------------------------------------------
@dataclass
class Times:
    """What :func:`sweeps.spec.plan_table` prints: per point one trial's time and its pretraining."""

    trial_s: list  #: per point: one trial (training and evaluation), None where unknown
    pretrain_s: list  #: per point: the pretraining its first trial runs (0: none), None where unknown
    pretrain_note: list  #: per point: "cached" (before the sweep), "reused" (an earlier point's), "as fine-tuning"
    #: (no time of its own: the model's trial rates) or ""
    resources: dict  #: cpu and gpu per trial
    slots: int | None  #: trials at once on this machine (None: it cannot run them)
    machine: str  #: this machine, in words ("2 cores", "1 GPU, 16 cores")
    notes: list = field(default_factory=list)  #: where the times come from, and their caveats
    gpus: resources.GPUs | None = None  #: the GPUs trials would get (GPU trials: the packing of the dry run)


def estimate(spec: Spec, points: list[Point], history: History, store: Path | None, source: Path | None,
             out=None) -> Times:
    """The :class:`Times` of ``points``: rates from ``history`` where it has the model, else timed here on
    ``store`` (and ``source`` for pretraining); ``out`` gets one line before the timing starts."""
    res, gpus, cores = resources_here(spec, store)
    cannot = cannot_time_here(spec)
    device = "cuda" if res["gpu"] and gpus else "cpu"
    threads = spec.num_threads or int(max(1, res["cpu"]))
    batch, batch_note = batch_size(spec.hpo["space"])
    pre = spec.transfer["pretrain"] if spec.transfer else None
    rates, pre_rates, timed, how = {}, {}, [], {}
    pretraining = _pretrainings(spec, points, store, source, threads)
    jobs = []  # (table, model, store, targets, batch, largest n) of each probe to run
    for model in models(points):
        if model in history.rates:
            rates[model], how[model] = history.rates[model], "runs"
        elif store is not None and cannot is None:
            jobs.append((rates, model, store, spec.targets, batch, max(p.n_train for p in points
                                                                        if (p.arch, p.n_params) == model)))
    for model in models([p for p, state in zip(points, pretraining) if state == "run"]):
        if model in history.pretrain:
            pre_rates[model] = history.pretrain[model]
        elif source is not None and cannot is None:
            jobs.append((pre_rates, model, source, spec.transfer["source_targets"], pre["batch_size"],
                         max(p.source_n for p in points if (p.arch, p.n_params) == model)))
    if jobs:
        print(f"timing {len(jobs)} short training run(s) on this machine ({device}) …", file=out, flush=True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for table, (arch, n), data, targets, b, largest in jobs:
        cap = PROBE_MAX_PARAMS[device]
        table[(arch, n)] = probe(data, arch=arch, n_params=min(n, cap), targets=targets, batch=b,
                                 n_train=min(PROBE_BATCHES * b, largest), threads=threads, device=device,
                                 loss_weights=spec.loss_weights if table is rates else None,
                                 cutoff=spec.dataset["cutoff"]).scaled(max(1.0, n / cap))
        if n > cap:
            timed.append(f"{arch} {sci(n)} timed at {sci(cap)} parameters and scaled by the parameter count")
        if table is rates:
            how[(arch, n)] = "timed"
    probe_s = time.perf_counter() - t0
    share = (time.process_time() - cpu0) / max(probe_s * threads, 1e-9)  # of the cores the timing runs asked for

    trial_s, pre_s, pre_note = [], [], []
    for p, state in zip(points, pretraining):
        r = rates.get((p.arch, p.n_params))
        trial_s.append(r.seconds(p.n_train, spec.budget["epochs"], batch, spec.budget.get("max_steps"))
                       if r is not None and p.n_train else None)
        if state != "run":
            pre_s.append(0.0)
            pre_note.append(state)
            continue
        own = pre_rates.get((p.arch, p.n_params))  # else the model's trial rates (the source's structures unseen)
        r = own or r
        pre_s.append(None if r is None else r.seconds(p.source_n, pre["epochs"], pre["batch_size"]))
        pre_note.append("" if own is not None or r is None else "as fine-tuning")

    slots = None if cannot else resources.slots(spec, res, cpus=cores, gpus=gpus)
    machine = f"{cores} cores" + (f", {gpus} GPU{'s' if gpus != 1 else ''}" if gpus else "")
    for model in models(points):
        how.setdefault(model, None)
    notes = _method(history, how, device, threads, len(jobs), probe_s, cannot)
    notes += timed + ([batch_note] if batch_note else [])
    if any(n == "as fine-tuning" for n in pre_note):
        notes.append("pretraining not timed on the source store: counted at the model's fine-tuning rates")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if jobs and device == "cpu" and share < 0.8:
        notes.append(f"this machine was busy while timing (load {load:.1f} on {cores} cores): the timing runs got "
                     f"{100 * share:.0f}% of their cores, so on idle cores trials take about that share of these times")
    return Times(trial_s, pre_s, pre_note, res, slots, machine, notes, trial_gpus(spec) if res["gpu"] else None)


def _pretrainings(spec: Spec, points: list[Point], store: Path | None, source: Path | None,
                  threads: int) -> list[str]:
    """Per point, what its first trial does about pretraining: ``run`` it, find it ``cached`` before the sweep,
    ``reused`` (an earlier point with the same model, source size and seed ran it), or "" (none: no transfer,
    or the baseline)."""
    out, seen = [], set()
    for p in points:
        if not p.source_n:
            out.append("")
            continue
        key = (p.arch, p.n_params, p.source_n, p.seed)
        if key in seen:
            out.append("reused")
        elif store is not None and source is not None and _pretrain_cached(spec, p, store, source, threads):
            out.append("cached")
        else:
            out.append("run")
        seen.add(key)
    return out


def _method(history: History, how: dict, device: str, threads: int, probes: int, probe_s: float,
            cannot: str | None) -> list[str]:
    """Where the times come from, a line per source, and which models have none."""
    def names(ms):
        return ", ".join(f"{a} {sci(n)}" for a, n in ms)

    runs = [m for m, h in how.items() if h == "runs"]
    timed = [m for m, h in how.items() if h == "timed"]
    none = [m for m, h in how.items() if h is None]
    lines = []
    if runs:
        lines.append(f"times: from {history.runs} finished runs of this experiment ({', '.join(history.devices)}; "
                     "Ray and MLflow included)" + (f": {names(runs)}" if timed or none else ""))
    if probes:
        lines.append("times: timed on this machine" + (f" for {names(timed)}" if runs or none else "")
                     + f" ({device}, {threads} thread{'s' if threads != 1 else ''} per trial): {probes} "
                     f"run{'s' if probes != 1 else ''} of {PROBE_EPOCHS} epochs × {PROBE_BATCHES} batches, "
                     f"{duration(probe_s)} in all; training and evaluation only, Ray and MLflow add a little per trial"
                     + ("" if runs else f" (no finished runs to time from: {history.why_not})"))
    if none:
        lines.append(f"no times{'' if len(none) == len(how) else ' for ' + names(none)}: "
                     f"{cannot or 'the store is not built yet'}"
                     + ("" if runs else f", and no finished runs to time from ({history.why_not})"))
    return lines


def _pretrain_cached(spec: Spec, p: Point, store: Path, source: Path, threads: int) -> bool:
    """Whether the pretrained model of point ``p`` is in the source store's cache already: the key of the source
    configuration that :mod:`sweeps.trial` and :func:`gnn.transfer.pretrain_finetune` build."""
    from dataclasses import replace

    from gnn.models import plan
    from gnn.store import Store
    from gnn.train import TrainConfig
    from gnn.transfer import pretrain_key

    pre, cutoff = spec.transfer["pretrain"], spec.dataset["cutoff"]
    target = Store(store)
    targets = list(spec.targets) if spec.targets else sorted(target.targets)
    config = TrainConfig(data=str(source), arch=p.arch, targets=spec.transfer["source_targets"], n_train=p.source_n,
                         seed=p.seed, epochs=pre["epochs"], lr=pre["lr"], batch_size=pre["batch_size"],
                         weight_decay=pre["weight_decay"], patience=pre["patience"], cutoff=cutoff,
                         num_threads=threads)
    size = plan(p.arch, p.n_params, targets, None if target.omega_ev is None else len(target.omega_ev),
                num_layers=config.num_layers, cutoff=cutoff)
    config = replace(config, width=size.width, ffn_width=size.ffn_width)
    key = pretrain_key(config)
    return (source / "pretrained" / f"{key}.pt").exists() and (source / "pretrained" / f"{key}.json").exists()
