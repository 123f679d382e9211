"""The sweep driver: spec → data → Ray Tune (Optuna per point) → MLflow, idempotent and resumable.

Follow one trial: :func:`run_sweep` validates the spec (:mod:`sweeps.spec`), builds the store and its graphs once
(:func:`prepare_store`), creates the MLflow experiment and a parent run (a claim, :mod:`sweeps.sweep_lock`), asks
MLflow which trials already FINISHED under the same spec hash, and hands the rest to
:class:`sweeps.search.PointSearcher`, which opens each trial's run (:class:`sweeps.trial.TrialRecord`) and gives Tune
a :class:`sweeps.trial.TrialConfig`; Ray runs each as :func:`sweeps.trial.run_trial`, which trains with
:func:`gnn.train.train` and logs the child run in :mod:`sweeps.record`'s format.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gnn.errors import InputError
from sweeps import record, sweep_lock, tracking
from sweeps.file_lock import held
from sweeps.spec import Spec, plan_table

RAY_STATE = "matscale_sweep.json"


def _data_dir(spec: Spec) -> Path:
    return Path(spec.dataset.get("data_dir") or Path(spec.storage_path).parent / "data").resolve()


def store_location(spec: Spec, source: bool = False) -> Path:
    """Where the spec's store lives (or will be built); ``source``: the pretraining store of a transfer sweep."""
    ds = spec.transfer["source"] if source else spec.dataset
    if "store" in ds:
        return Path(ds["store"]).resolve()
    if "synthetic" in ds:
        s = ds["synthetic"]
        gap = "" if not s.get("gap") else \
            "-gap" + hashlib.sha256(json.dumps(s["gap"], sort_keys=True).encode()).hexdigest()[:8]
        return _data_dir(spec) / f"synthetic-n{s['n']}-p{s['points']}-s{s['seed']}-noise{s['noise']:g}{gap}"
    imp = ds["import"]
    digest = hashlib.sha256(json.dumps(imp, sort_keys=True).encode()).hexdigest()[:10]
    return _data_dir(spec) / f"{imp['kind']}-{digest}"


def prepare_store(spec: Spec, progress: bool = True, source: bool = False) -> Path:
    """Build (or find) the spec's store (or its transfer source) and its graphs for the spec's cutoff — once,
    before any trial. The graphs use the target's cutoff, which the fine-tuned model keeps."""
    ds, path = (spec.transfer["source"] if source else spec.dataset), store_location(spec, source)
    if "store" in ds:
        lock = path / ".matscale.lock"  # a user's store: its graphs may still be built
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock")
    with held(lock):  # two drivers starting at once build it once
        _build_store(spec, ds, path, "transfer.source" if source else "dataset", progress)
    return path


def _build_store(spec: Spec, ds: dict, path: Path, key: str, progress: bool) -> None:
    from gnn.graphs import build_graphs
    from gnn.readers import import_store
    from gnn.synth import synth_store

    if not (path / "meta.json").exists():
        if "store" in ds:
            raise InputError("not a matscale store (no meta.json)", file=spec.path, field=f"{key}.store")
        if "synthetic" in ds:
            s = ds["synthetic"]
            synth_store(s["n"], path, points=s["points"], seed=s["seed"], noise=s["noise"], gap=s.get("gap"),
                        cutoff=ds["cutoff"], progress=progress)
        else:
            imp = ds["import"]
            import_store(imp["kind"], imp["src"], path, targets=imp.get("targets"), points=imp.get("points"),
                         cutoff=ds["cutoff"], progress=progress, min_distance_a=imp.get("min_distance"))
    build_graphs(path, spec.dataset["cutoff"], progress=progress)


def check_against_store(spec: Spec, store_path: Path) -> tuple[int, list]:
    """Errors naming the spec field for sizes and targets the data or the architectures cannot meet."""
    from gnn import subsets
    from gnn.models import plan
    from gnn.splits import grouped_split
    from gnn.store import Store

    store = Store(store_path)
    train_size = len(grouped_split(store.formulas)["train"])
    targets = spec.targets or sorted(store.targets)
    for t in targets:
        if t not in store.targets:
            raise InputError(f"target {t!r} not in the data (has: {', '.join(sorted(store.targets))})",
                             file=spec.path, field="targets")
    points = spec.points(train_size)
    split = grouped_split(store.formulas)["train"]
    available = {s: len(subsets.eligible(store, split, s)) for s in {p.subset for p in points}}
    for p in points:
        if not 1 <= p.n_train <= available[p.subset]:
            field = "axes.data_fractions" if p.fraction is not None else "axes.n_train"
            within = "the training split" if p.subset == "random" else \
                f"what subset {p.subset!r} leaves of the training split"
            raise InputError(f"n_train {p.n_train} is larger than {within} ({available[p.subset]} structures)",
                             file=spec.path, field=field)
    if spec.transfer:
        _check_source(spec, points)
    n_points = None if store.omega_ev is None else len(store.omega_ev)
    for arch in spec.archs:
        for n in spec.n_params:
            try:
                plan(arch, n, targets, n_points)
            except InputError as exc:
                raise InputError(str(exc).split(": ", 1)[-1], file=spec.path, field="axes.n_params") from None
    return train_size, points


def _check_source(spec: Spec, points: list) -> None:
    """The transfer source must hold the largest source_n and the source targets."""
    from gnn.splits import grouped_split
    from gnn.store import Store

    path = store_location(spec, source=True)
    if not (path / "meta.json").exists():
        return  # a dry run before the source is built; the sweep checks again once it is
    source = Store(path)
    size = len(grouped_split(source.formulas)["train"])
    largest = max(p.source_n for p in points)
    if largest > size:
        raise InputError(f"source_n {largest} is larger than the source's training split ({size} structures)",
                         file=spec.path, field="axes.source_n")
    for t in spec.transfer["source_targets"] or []:
        if t not in source.targets:
            raise InputError(f"target {t!r} not in the source data (has: {', '.join(sorted(source.targets))})",
                             file=spec.path, field="transfer.source_targets")


def trial_resources(spec: Spec, n_params: float | None = None) -> dict:
    """Ray resources of one trial on the connected cluster (:func:`sweeps.resources.trial_resources`): ``auto``
    sized for the cluster's GPUs, or with ``MATSCALE_AUTOSCALE=1`` for those its autoscaler may add
    (:func:`sweeps.cluster_check.sweep_gpus`), on the structures of the sweep's store."""
    import ray

    from sweeps import resources
    from sweeps.cluster_check import sweep_gpus

    gpus = sweep_gpus(spec, ray.cluster_resources())
    store = store_location(spec)
    return resources.trial_resources(spec, gpus=gpus.count, n_params=n_params, gpu_memory=gpus.memory_gib,
                                     gpu_name=gpus.name, store=store if (store / "meta.json").exists() else None)


def _check_cluster(spec: Spec, resources: dict) -> None:
    """A node can hold one trial; autoscaling (``MATSCALE_AUTOSCALE=1``), a node type of the cluster config can
    (where the config is there: :func:`sweeps.cluster_check.cluster_config_path`)."""
    import ray

    from sweeps.cluster_check import autoscaler_node_types

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    most_gpus = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    most_cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    from sweeps.resources import autoscaling

    autoscale = autoscaling()  # GPU workers may start later (min_workers: 0)
    if autoscale:
        path, types = autoscaler_node_types()
        if types and not any(t.cpu >= resources["cpu"] and t.gpu >= resources["gpu"] for t in types):
            need = f"{resources['cpu']:g} CPU" + (f" and {resources['gpu']:g} GPU" if resources["gpu"] else "")
            raise InputError(f"asks for {need} per trial; no node type of the cluster config {path} has that",
                             file=spec.path, field="resources")
    if resources["gpu"] > most_gpus and not autoscale:
        raise InputError(f"asks for {resources['gpu']:g} GPUs per trial; the largest node has {most_gpus:g} "
                         "(set MATSCALE_AUTOSCALE=1 on autoscaling clusters)", file=spec.path, field="resources.gpu")
    if resources["cpu"] > most_cpus and not autoscale:
        raise InputError(f"asks for {resources['cpu']:g} CPUs per trial; the largest node has {most_cpus:g}",
                         file=spec.path, field="resources.cpu")


def _check_local_gpus(spec: Spec, address: str | None) -> None:
    """A sweep that starts its own Ray on this machine (``address`` local, no autoscaler) and asks for GPUs
    (``resources.gpu`` > 0, or ``gpu_type``) that this machine lacks fails before anything is created."""
    import ray

    from sweeps import resources

    if address not in (None, "local") or ray.is_initialized() or resources.autoscaling():
        return
    asks = resources.gpu_type(spec) is not None if resources.is_auto(spec) else spec.resources["gpu"] > 0
    if not asks:
        return
    import torch

    if not torch.cuda.is_available():
        raise InputError("asks for GPUs per trial but this machine has none and the sweep runs on a local Ray "
                         "(use --address for a GPU cluster, or set MATSCALE_AUTOSCALE=1 where GPU workers start "
                         "later)", file=spec.path, field="resources.gpu")


def _ray_init(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address in (None, "local"):
        # one machine: every Ray service binds 127.0.0.1 (Ray's default is this host's routable address and
        # 0.0.0.0); Ray reads this switch each time it picks the node address (the macOS/Windows default)
        import ray._private.ray_constants as ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
        # Ray enables token auth for a local cluster by default and warns about it on every start
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # the workers inherit it: OpenMP threads that finish early sleep instead of spinning on cores other
        # trials need (busy-waiting made 2-thread trials 5-10x slower on a loaded node)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        ray.init(address="local", include_dashboard=False, configure_logging=False)
    else:  # "auto" (attach to the cluster this machine belongs to) or "ray://head:10001"
        ray.init(address=address, configure_logging=False)


@dataclass
class _Sweep:
    """What the steps of one sweep invocation share."""

    spec: Spec
    c: Any  #: the MLflow client
    exp_id: str
    points: list
    store_path: Path
    source_path: Path | None
    storage: str  #: Ray's storage path (a folder, made absolute, or an object-store URI)
    stage: str
    extra_tags: dict
    progress: bool  #: show progress (the store's building, the live trial display)
    out: Any
    verbose: bool = False  #: also Ray Tune's own per-trial tables and the workers' log lines
    resources: dict = field(default_factory=dict)
    sweep_id: str = ""
    parent_id: str = ""

    @property
    def prefix(self) -> str:
        """Prefix of this spec's Ray experiment folders."""
        return f"{self.spec.experiment}-{self.spec.hash[:8]}-"


def run_sweep(spec: Spec, *, address: str | None = "local", resume: bool = False, dry_run: bool = False,
              stage: str = record.STAGE_GRID, extra_tags: dict | None = None, progress: bool = True,
              verbose: bool = False, out=sys.stdout) -> dict:
    """Run (or plan) a sweep; returns a summary with the parent run id and per-trial outcomes.

    Everything that can fail on input is checked before a parent run is created; a second driver of the same
    spec refuses while the first runs (:mod:`sweeps.sweep_lock`); trials keep the hyperparameters of their
    MLflow runs (:class:`sweeps.trial.TrialRecord`). ``progress``: one live display for the whole sweep
    (:mod:`sweeps.progress`); ``verbose``: Ray Tune's own per-trial output as well.
    """
    if dry_run:
        return _plan(spec, out)
    _check_local_gpus(spec, address)
    sw = _prepare(spec, stage, extra_tags or {}, progress, out)
    sw.verbose = verbose
    finished, started = _recorded(sw)
    restored = _find_restorable(sw.storage, sw.prefix) if resume else None
    total = len(sw.points) * spec.hpo["trials_per_point"]
    summary = {"experiment_id": sw.exp_id, "spec_hash": spec.hash, "store": str(sw.store_path),
               "skipped": len(finished), "planned": total - len(finished)}
    if restored is None and summary["planned"] == 0:  # before Ray starts
        print(f"all {len(finished)} trials of spec {spec.hash} already FINISHED in experiment "
              f"{spec.experiment!r}; nothing to run", file=out)
        return {**summary, "status": "NOTHING_TO_DO", "parent_run_id": None, "trials": _trials(sw)}

    _ray_init(address)
    sw.resources = trial_resources(spec)
    _check_cluster(spec, sw.resources)
    _open_parent(sw, restored)
    summary.update(sweep_id=sw.sweep_id, parent_run_id=sw.parent_id)
    with sweep_lock.Heartbeat(sw.c, sw.parent_id):
        _tune(sw, restored, finished, started, summary)
        if restored is not None:
            _top_up(sw, summary)
    summary["trials"] = _trials(sw)
    return summary


def _plan(spec: Spec, out) -> dict:
    """``--dry-run``: print every planned trial with its estimated time and the sweep's total (:mod:`sweeps.estimate`:
    from finished runs of the experiment, else timed on this machine). Creates no tracking store and no run; it
    builds the data store (and a transfer's source store) where the estimate needs it and this machine can run
    the trials, saying so: every run needs it, and it is built once."""
    from sweeps import estimate

    history = estimate.from_runs(spec)
    need = estimate.needs_store(spec, spec.points(), history)
    buildable = estimate.cannot_time_here(spec) is None

    def store(source: bool, wanted: bool) -> Path | None:
        path = store_location(spec, source)
        if wanted and buildable and not (path / "meta.json").exists():
            print(f"building the {'source ' if source else ''}store {path} (once: every run of this sweep uses it)",
                  file=out, flush=True)
            prepare_store(spec, progress=False, source=source)
        return path if (path / "meta.json").exists() else None

    store_path = store(False, need[0])
    source_path = store(True, need[1]) if spec.transfer else None
    points = check_against_store(spec, store_path)[1] if store_path else spec.points()
    times = estimate.estimate(spec, points, history, store_path, source_path, out=out)
    print(plan_table(spec, points, store_path is not None, times), file=out)
    if times.gpus is not None:  # GPU trials: each model's memory and share, and what the sweep asks
        from sweeps.resources import packing_lines

        print("\n".join(packing_lines(spec, times.resources, times.gpus, store=store_path)), file=out)
    return {"planned": len(points) * spec.hpo["trials_per_point"], "spec_hash": spec.hash,
            "trial_seconds": times.trial_s, "pretrain_seconds": times.pretrain_s}  # per point, None: unknown


def _prepare(spec: Spec, stage: str, extra_tags: dict, progress: bool, out) -> _Sweep:
    """Preflight before anything is created (tracking store, Ray storage, data), then the data stores, the
    experiment, and the sweep lock's checks: dead drivers' sweeps end KILLED, a live one refuses this one."""
    # credentials leave the URI for MLflow's variables (inherited by local Ray workers): MLflow prints the URI
    spec.tracking_uri = tracking.use_credentials(tracking.normalise_uri(spec.tracking_uri))
    tracking.check_reachable(spec.tracking_uri, file=spec.path)
    tracking.check_writable(spec.tracking_uri, file=spec.path)
    storage = spec.storage_path if "://" in spec.storage_path else str(Path(spec.storage_path).resolve())
    _check_storage(storage, spec)
    store_path = prepare_store(spec, progress=progress)
    source_path = prepare_store(spec, progress=progress, source=True) if spec.transfer else None
    _, points = check_against_store(spec, store_path)
    c = tracking.client(spec.tracking_uri)
    try:
        exp_id = tracking.experiment_id(  # artifacts beside a SQLite store; for the MLflow UI: a model-training
            c, spec.experiment, tags={  # experiment, the spec's description, a view of the trials (val_loss, axes)
                record.EXPERIMENT_KIND: record.EXPERIMENT_KIND_TRAINING,
                record.NOTE: tracking.experiment_note(spec.description, record.VAL_LOSS, record.TRIALS_VIEW_NAME)},
            defaults={record.SAVED_VIEW + record.TRIALS_VIEW: tracking.runs_view(
                record.TRIALS_VIEW_NAME, record.runs_filter(record.KIND_TRIAL), record.TRIALS_VIEW_METRICS,
                record.VAL_LOSS)})
    except Exception as exc:  # noqa: BLE001 - any backend failure means the URI is unusable
        raise InputError(tracking.redact_uri(f"cannot use tracking URI {spec.tracking_uri} ({type(exc).__name__}: "
                                             f"{' '.join(str(exc).split())[:200]})"),
                         file=spec.path, field="tracking_uri") from None
    expired = sweep_lock.expire_stale(c, exp_id, spec.hash)
    if expired:
        print(f"marked {len(expired)} sweep(s) of a driver that is gone KILLED: {', '.join(expired)}", file=out)
    sweep_lock.check_free(c, exp_id, spec.hash, file=spec.path)
    return _Sweep(spec=spec, c=c, exp_id=exp_id, points=points, store_path=store_path, source_path=source_path,
                  storage=storage, stage=stage, extra_tags=extra_tags, progress=progress, out=out)


def _open_parent(sw: _Sweep, restored) -> None:
    """The sweep's parent run, a claim on the spec (:func:`sweeps.sweep_lock.claim`): a new one, or the restored
    sweep's, running again."""
    spec, c = sw.spec, sw.c
    if restored is not None:
        state = restored[1]
        sw.sweep_id, sw.parent_id = state["sweep_id"], state["parent_run_id"]
        tracking.log_batch(c, sw.parent_id, tags=sweep_lock.claim_tags())
        c.update_run(sw.parent_id, status=record.RUNNING)
    else:
        sw.sweep_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        sw.parent_id = c.create_run(sw.exp_id, run_name=f"{sw.stage}-{sw.sweep_id}", tags={
            record.KIND: record.KIND_SWEEP, record.SWEEP_ID: sw.sweep_id, record.SPEC_HASH: spec.hash,
            record.STAGE: sw.stage, record.GIT_COMMIT: tracking.git_commit(), **sweep_lock.claim_tags(),
            **sw.extra_tags}).info.run_id
    sweep_lock.claim(c, sw.exp_id, spec.hash, sw.parent_id, fresh=restored is None, file=spec.path)
    if restored is None:
        _describe_parent(sw)


def _top_up(sw: _Sweep, summary: dict) -> None:
    """After a restored Ray experiment: trials it did not complete (e.g. a checkpoint its saved state still named
    was lost) run again, with their logged hyperparameters."""
    missing = record.count_missing(sw.c, sw.exp_id, sw.spec, sw.points)
    if not missing:
        return
    print(f"{missing} trials were not completed by the restored Ray experiment; running them again with their "
          "logged hyperparameters", file=sw.out)
    sw.c.update_run(sw.parent_id, status=record.RUNNING)
    finished, started = _recorded(sw)
    _tune(sw, None, finished, started, summary, name=sw.prefix + "topup-" + sw.sweep_id)


def _recorded(sw: _Sweep) -> tuple[dict, set]:
    """What MLflow says of this spec's trials: ``{key: (hparams, val_loss)}`` of the FINISHED ones, and the keys
    of those started but not finished."""
    runs = record.trial_runs(sw.c, sw.exp_id, sw.spec.hash)
    finished = {r.data.tags[record.TRIAL_KEY]: (record.hparams_of(r), r.data.metrics.get(record.VAL_LOSS))
                for r in runs if r.info.status == record.FINISHED}
    return finished, {r.data.tags[record.TRIAL_KEY] for r in runs} - set(finished)


def _trial_context(sw: _Sweep):
    from sweeps.trial import TrialContext

    spec = sw.spec
    return TrialContext(store=str(sw.store_path), cutoff=spec.dataset["cutoff"], targets=spec.targets,
                        loss_weights=spec.loss_weights, budget=spec.budget, tracking_uri=spec.tracking_uri,
                        experiment_id=sw.exp_id, parent_run_id=sw.parent_id, sweep_id=sw.sweep_id,
                        spec_hash=spec.hash, stage=sw.stage, save_checkpoint=spec.save_checkpoint,
                        system_metrics=spec.system_metrics, verbose=sw.verbose,
                        num_threads=spec.num_threads or int(max(1, sw.resources["cpu"])), extra_tags=sw.extra_tags,
                        transfer=None if sw.source_path is None else
                        {**spec.transfer, "source_store": str(sw.source_path)}, simulate=spec.simulate)


def _tuner(sw: _Sweep, trainable, finished: dict, started: set, name: str):
    """A new Tune experiment: the per-point searcher and scheduler, the sweep state beside Ray's."""
    from ray import tune

    from sweeps.search import PerPointScheduler, PointSearcher
    from sweeps.trial import MarkEarlyStopped, TrialRecord

    spec = sw.spec
    searcher = PointSearcher(sw.points, spec.hpo["trials_per_point"], spec.hpo["space"], sampler=spec.hpo["sampler"],
                             done=finished, first=started, record=TrialRecord(_trial_context(sw)),
                             share=spec.hpo.get("share", "none"))
    es = spec.hpo["early_stopping"]
    scheduler = None if es["type"] == "none" else PerPointScheduler(
        es["type"], spec.budget["epochs"], es["grace_epochs"], es["reduction_factor"], es["min_trials"],
        on_stop=MarkEarlyStopped(spec.tracking_uri, sw.exp_id, spec.hash))
    _write_state(sw.storage, name, {"sweep_id": sw.sweep_id, "parent_run_id": sw.parent_id, "spec_hash": spec.hash})
    callbacks = [_progress(sw, searcher)] if sw.progress else []
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=len(searcher),
                                    max_concurrent_trials=spec.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name, storage_path=sw.storage, verbose=1 if sw.verbose else 0, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def _progress(sw: _Sweep, searcher):
    """The live display of this invocation's trials (those the searcher will hand out)."""
    from sweeps.progress import SweepProgress

    n_train = {p.key: p.n_train for p in sw.points}
    return SweepProgress([n_train[key] for key, _ in searcher.queue], sw.spec.budget["epochs"], _slots(sw.spec,
                         sw.resources), stream=sys.stderr)


def _tune(sw: _Sweep, restored, finished: dict, started: set, summary: dict, name: str | None = None) -> None:
    """Run the trials with Ray Tune (a new experiment, or a restored one) and end the parent run."""
    from ray import tune

    from sweeps.trial import run_trial

    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=_trial_context(sw)),
                                    {"cpu": sw.resources["cpu"], "gpu": sw.resources["gpu"]})
    _allow_pending(sw.spec, sw.resources)
    # Tune's newer console output prints its configuration box and a TensorBoard hint even when told to be
    # silent; its older one is silent at verbose=0 (our display shows progress instead)
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if sw.verbose else "0"
    # trials interrupted before their first epoch have no results: Tune warns per trial; MLflow says what ran
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.WARNING if sw.verbose else
                                                                          logging.ERROR)
    status = record.FINISHED
    try:
        if restored is not None:
            print(f"resuming {restored[0]}", file=sw.out)
            tuner = tune.Tuner.restore(restored[0], trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = _tuner(sw, trainable, finished, started, name or sw.prefix + sw.sweep_id)
        results = tuner.fit()
        errors = [r.error for r in results if r.error is not None]
        summary["errors"] = [tracking.redact_uri(f"{type(e).__name__}: {e}")[:300] for e in errors]
        if errors:
            status = record.FAILED
    except KeyboardInterrupt:
        status = record.KILLED
        raise
    finally:
        summary["status"] = _end_parent(sw, status, summary)


def _end_parent(sw: _Sweep, status: str, summary: dict) -> str:
    """End the trial runs left open and the parent run; its status says what the trials' runs say."""
    c = sw.c
    record.mark_unfinished(c, sw.exp_id, sw.parent_id, record.KILLED)
    states = [r.info.status for r in record.trial_runs(c, sw.exp_id, sw.spec.hash)]
    summary["failed"] = states.count(record.FAILED)
    if status != record.KILLED:
        status = outcome(status == record.FAILED, states, record.count_missing(c, sw.exp_id, sw.spec, sw.points))
    c.set_terminated(sw.parent_id, status)
    return status


def outcome(tune_errors: bool, states: list[str], missing: int) -> str:
    """A sweep's status from what its trials' MLflow runs say (the record is the truth), given whether Ray Tune
    reported errors, the runs' statuses and how many trials have no FINISHED run.

    Without Tune errors: KILLED when runs were stopped or trials never started (an interruption: ``--resume``
    continues), FAILED when a run failed (e.g. diverged). With Tune errors: FAILED when a run failed or a trial has
    no FINISHED run; else FINISHED —
    also after Tune errors it recovered from (a retried trial, a restore whose checkpoint was already rotated
    away), since every trial then has its FINISHED run."""
    failed = record.FAILED in states
    if not tune_errors:
        if record.KILLED in states:
            return record.KILLED  # interrupted: trials were stopped
        return record.FAILED if failed else record.KILLED if missing else record.FINISHED
    return record.FAILED if failed or missing or record.KILLED in states else record.FINISHED


def _describe_parent(sw: _Sweep) -> None:
    """The parent run's params and the spec as an artifact."""
    import yaml

    spec, points = sw.spec, sw.points
    tracking.log_batch(sw.c, sw.parent_id, params={
        "spec": spec.path, "archs": ",".join(spec.archs), "n_params": spec.n_params, "seeds": spec.seeds,
        "n_train": sorted({p.n_train for p in points}), "trials_per_point": spec.hpo["trials_per_point"],
        "store": str(sw.store_path), "subsets": sorted({p.subset for p in points}),
        **({"source_n": sorted({p.source_n for p in points}), "strategy": spec.transfer["strategy"]}
           if spec.transfer else {})})
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "spec.yaml").write_text(tracking.redact_uri(yaml.safe_dump(spec.as_dict(), sort_keys=False)))
        sw.c.log_artifact(sw.parent_id, str(Path(d) / "spec.yaml"))


def _trials(sw: _Sweep) -> list[dict]:
    runs = record.trial_runs(sw.c, sw.exp_id, sw.spec.hash)
    return [{"key": r.data.tags.get(record.TRIAL_KEY), "status": r.info.status,
             "val_loss": r.data.metrics.get(record.VAL_LOSS), "run_id": r.info.run_id,
             "subset": r.data.tags.get(record.SUBSET, "random"), "source_n": r.data.metrics.get("source_n"),
             "failure_reason": r.data.tags.get(record.FAILURE_REASON),
             "order": (r.data.tags.get(record.ARCH, ""), r.data.metrics.get("n_params_target", 0),
                       r.data.metrics.get("n_train", 0), r.data.metrics.get("seed", 0),
                       r.data.metrics.get("trial_index", 0))} for r in runs]


def _slots(spec: Spec, resources: dict) -> int:
    """How many trials fit on the cluster at once; autoscaling, on the most nodes its config allows (the head may
    have no CPUs and GPU workers none yet, yet Tune must keep enough trials pending for the autoscaler to add them)."""
    import ray

    from sweeps.cluster_check import autoscaler_node_types
    from sweeps.resources import autoscaling, slots

    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 1), total.get("GPU", 0)
    if autoscaling():
        _, types = autoscaler_node_types()
        if types:
            cpus = max(cpus, sum(t.cpu * t.max_workers for t in types))
            gpus = max(gpus, sum(t.gpu * t.max_workers for t in types))
    return slots(spec, resources, cpus=cpus, gpus=gpus)


def _allow_pending(spec: Spec, resources: dict) -> None:
    """Let Tune start as many trials at once as fit (it allows one pending trial for custom searchers)."""
    # one checkpoint per epoch and trial is the design (resumable trials); Tune warns about it at every epoch
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(_slots(spec, resources))


def _local(storage: str) -> Path | None:
    """The folder of a local Ray storage path (a path or ``file://``); None for object stores."""
    if storage.startswith("file://"):
        return Path(storage[len("file://"):])
    return None if "://" in storage else Path(storage)


def _check_storage(storage: str, spec: Spec) -> None:
    """Ray's storage must take files: checked before any run is created."""
    folder = _local(storage)
    if folder is None:
        return  # an object store: Ray checks its own credentials
    existing = next(p for p in [folder, *folder.parents] if p.exists())  # Tune creates the rest
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder")
        tempfile.NamedTemporaryFile(dir=existing, prefix=".matscale-probe-").close()
    except OSError as exc:
        raise InputError(f"Ray storage {folder} is not writable ({exc.strerror or exc})", file=spec.path,
                         field="storage_path") from None


def _write_state(storage: str, name: str, state: dict) -> None:
    if _local(storage) is None:
        return  # remote storage: resume by MLflow lookups only
    folder = _local(storage) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RAY_STATE).write_text(json.dumps(state))


def _find_restorable(storage: str, prefix: str) -> tuple[str, dict] | None:
    """The newest Ray experiment of this spec that Tune can restore, with its sweep state."""
    from ray import tune

    local = _local(storage)
    if local is None or not local.is_dir():
        return None
    for folder in sorted(local.glob(prefix + "*"), reverse=True):
        state = folder / RAY_STATE
        if state.exists() and tune.Tuner.can_restore(str(folder)):
            return str(folder), json.loads(state.read_text())
    return None


def summary_table(summary: dict, per_trial: bool = False) -> str:
    """What a sweep measured: the trials' statuses, then a grid of the validation loss (the best HPO trial per
    seed, averaged over seeds) with a row per model (arch, N and variant) and a column per data size D; failed
    trials are listed with their reason. ``per_trial``: one line per trial instead of the grid."""
    from sweeps.spec import sci

    trials = sorted(summary.get("trials", []), key=lambda r: r["order"])
    states: dict[str, int] = {}
    for t in trials:
        states[t["status"]] = states.get(t["status"], 0) + 1
    lines = [f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))]
    if summary.get("errors") and summary.get("status") == "FINISHED":
        lines.append(f"(Ray Tune reported {len(summary['errors'])} trial errors it recovered from: every trial has its "
                     f"FINISHED run; first: {summary['errors'][0][:160]})")
    if per_trial:
        lines.append(f"{'trial':<36} {'status':<9} {'val_loss':>10}")
        lines += [f"{t['key']:<36} {t['status']:<9} " + (f"{t['val_loss']:>10.4f}" if t["val_loss"] is not None
                                                            else f"{'-':>10}") for t in trials]
        return "\n".join(lines)
    best: dict[tuple, dict[int, dict[int, float]]] = {}  # row → D → seed → best val_loss
    for t in trials:
        arch, n, d, seed, _ = t["order"]
        if t["status"] != record.FINISHED or t["val_loss"] is None:
            continue
        row = (arch, n, t.get("subset") or "random", t.get("source_n"))
        seeds = best.setdefault(row, {}).setdefault(int(d), {})
        seeds[int(seed)] = min(seeds.get(int(seed), float("inf")), t["val_loss"])
    sizes = sorted({d for cols in best.values() for d in cols})
    if sizes:
        label = {row: f"{row[0]} N={sci(row[1])}" + (f" {row[2]}" if row[2] != "random" else "")
                 + (f" S={int(row[3])}" if row[3] is not None else "") for row in best}
        width = max(len(v) for v in label.values())
        lines.append("val_loss (best of HPO, mean over seeds) by D:")
        lines.append(f"{'':<{width}} " + " ".join(f"{d:>8}" for d in sizes))
        for row in sorted(best):
            cells = [best[row].get(d) for d in sizes]
            lines.append(f"{label[row]:<{width}} " + " ".join(
                f"{sum(c.values()) / len(c):>8.4f}" if c else f"{'-':>8}" for c in cells))
    for t in trials:
        if t["status"] == record.FAILED:
            lines.append(f"FAILED {t['key']}: {t.get('failure_reason') or 'see its MLflow run'}")
    return "\n".join(lines)
