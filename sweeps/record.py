"""The MLflow record of a study: what sweeps write and analysis reads — run kinds, tag, param and metric names,
the trial key, and the lookups built on them. Writers and readers use only this module's names.

One experiment per study holds:

* a **sweep** run per sweep invocation (``matscale.kind = sweep``): ``matscale.sweep_id``, ``matscale.spec_hash``,
  ``matscale.stage`` (``grid``, ``refine``), ``matscale.git_commit`` and the driver's claim (``matscale.host``,
  ``pid``, ``claimed_at``, ``heartbeat``, see :mod:`sweeps.sweep_lock`); the spec as artifact ``spec.yaml``;
* a **trial** run per trial, a child of its sweep run (``mlflow.parentRunId``): tags ``matscale.point`` (arch,
  n_params target, n_train, seed[, source_n][, subset]) and ``matscale.trial_key`` (:func:`trial_key`: the point
  and its HPO index), ``matscale.arch``, ``matscale.subset``; params: the flattened trial config
  (:func:`trial_params`, hyperparameters as ``hp.*``); metrics: the scaling axes (:data:`AXIS_METRICS`, logged at
  creation so they filter numerically), per-epoch curves under ``epoch/…`` (``pretrain/epoch/…`` for a transfer
  trial's first stage) and the final ``val_*`` / ``test_*`` of the best-validation model. A trial that had to start
  over leaves its old run as ``matscale.kind = superseded`` (:func:`replace_run`);
* **analysis** runs (``matscale.kind = analysis``, stage ``analysis`` or ``refine`` with ``matscale.round``).
"""

from __future__ import annotations

TAG = "matscale."  #: prefix of every matscale tag

# --- tags -------------------------------------------------------------------------------------------------------
KIND = TAG + "kind"  #: what a run is: one of the KIND_* values
STAGE = TAG + "stage"  #: grid, refine (sweeps and their trials); analysis, refine (analysis runs)
SWEEP_ID = TAG + "sweep_id"
SPEC_HASH = TAG + "spec_hash"  #: :attr:`sweeps.spec.Spec.hash`: which trials are the same trials
POINT = TAG + "point"  #: :attr:`sweeps.spec.Point.key`
TRIAL_KEY = TAG + "trial_key"  #: :func:`trial_key`
ARCH = TAG + "arch"
SUBSET = TAG + "subset"
TRANSFER = TAG + "transfer"  #: pretrained | baseline (transfer sweeps)
BASELINE_POINT = TAG + "baseline_point"  #: the no-pretraining point a transfer trial is compared with
NODE_ID = TAG + "node_id"  #: the Ray node a worker (last) trained on; set when a worker starts the trial
EARLY_STOPPED = TAG + "early_stopped"  #: "true": the scheduler stopped it (a complete trial)
FAILURE_REASON = TAG + "failure_reason"
REPLACES, SUPERSEDED_BY = TAG + "replaces", TAG + "superseded_by"
GIT_COMMIT = TAG + "git_commit"
END_REASON = TAG + "end_reason"  #: why a sweep run was ended by another driver
HOST, PID, CLAIMED_AT, HEARTBEAT = TAG + "host", TAG + "pid", TAG + "claimed_at", TAG + "heartbeat"
ROUND = TAG + "round"  #: refinement round of a refine sweep and of its analysis run
PARENT_SWEEP = TAG + "parent_sweep"  #: the grid sweep a refine sweep refines
AXIS = TAG + "axis"  #: the axis an analysis run fitted
COVERAGE_FLAGS = TAG + "coverage_flags"
HPO_FROM = TAG + "hpo_from"  #: the neighbouring trial whose best configuration this trial tries (``hpo.share``)

# MLflow's own tags that matscale sets for the MLflow UI
EXPERIMENT_KIND = "mlflow.experimentKind"  #: experiment tag: the experiment's type in the UI (GenAI or model training)
EXPERIMENT_KIND_TRAINING = "custom_model_development"  #: "Model training": runs, not GenAI traces
NOTE = "mlflow.note.content"  #: an experiment's or run's description (markdown) in the UI
SAVED_VIEW = "mlflow.sharedViewState."  #: experiment tag prefix of a runs-table view (the UI's *Views* menu)
TRIALS_VIEW = "matscale-trials"  #: matscale's view: trial runs sorted by val_loss, the axes as columns (its key)
TRIALS_VIEW_NAME = "matscale trials"  #: the name of that view in the Views menu

KIND_SWEEP, KIND_TRIAL, KIND_ANALYSIS, KIND_SUPERSEDED = "sweep", "trial", "analysis", "superseded"
STAGE_GRID, STAGE_REFINE, STAGE_ANALYSIS = "grid", "refine", "analysis"

# --- params and metrics -----------------------------------------------------------------------------------------
HP = "hp."  #: prefix of a trial's hyperparameters of record
#: the hyperparameters a spec may search (``hpo.space``) and their types: how ``hp.*`` params are read back
SEARCHABLE = {"lr": float, "weight_decay": float, "batch_size": int, "warmup_frac": float, "grad_clip": float}
#: metrics logged when a trial run is created (the scaling axes, numerically filterable)
AXIS_METRICS = ("n_params_target", "n_train", "seed", "trial_index", "fraction", "source_n")
EPOCH, PRETRAIN_EPOCH = "epoch/", "pretrain/epoch/"  #: prefixes of per-epoch metrics (step = epoch)
HISTORY_PREFIXES = (EPOCH, PRETRAIN_EPOCH)  #: a run holding any of these has trained
VAL_LOSS = "val_loss"  #: the final validation loss (best epoch), what the analysis fits by default
TRIALS_VIEW_METRICS = (VAL_LOSS, "n_params", "n_train", "seed", "epochs")  #: the columns of :data:`TRIALS_VIEW`

# --- MLflow run statuses ----------------------------------------------------------------------------------------
FINISHED, RUNNING, FAILED, KILLED, SCHEDULED = "FINISHED", "RUNNING", "FAILED", "KILLED", "SCHEDULED"
UNFINISHED = (RUNNING, SCHEDULED)  #: statuses of a trial run that is claimed but not done


def trial_key(point: str, index: int) -> str:
    """The key of HPO trial ``index`` of ``point`` (a :attr:`sweeps.spec.Point.key`): ``cgc-N1e5-D500-s0-t1``."""
    return f"{point}-t{index}"


def point_of(key: str) -> str:
    """The point key of a :func:`trial_key`."""
    return key.rsplit("-t", 1)[0]


def quoted(value: str) -> str:
    """``value`` as a string literal of an MLflow search filter."""
    return "'" + str(value).replace("'", "\\'") + "'"


def runs_filter(kind: str, **tags: str | None) -> str:
    """A search filter: runs of ``kind`` whose tags (keyword = the name after ``matscale.``) have the given values;
    ``status=`` filters the run status. None values are left out."""
    status = tags.pop("status", None)
    parts = [f"tags.`{KIND}` = {quoted(kind)}"]
    parts += [f"tags.`{TAG}{name}` = {quoted(v)}" for name, v in tags.items() if v is not None]
    if status:
        parts.append(f"attributes.status = {quoted(status)}")
    return " and ".join(parts)


# --- what a trial run holds -------------------------------------------------------------------------------------
def trial_tags(trial, ctx) -> dict:
    """The tags of a new trial run (``trial``: a :class:`sweeps.trial.TrialConfig`, ``ctx`` its TrialContext)."""
    tags = {"mlflow.parentRunId": ctx.parent_run_id, "mlflow.runName": trial.key, KIND: KIND_TRIAL,
            SWEEP_ID: ctx.sweep_id, SPEC_HASH: ctx.spec_hash, STAGE: ctx.stage, POINT: trial.point,
            TRIAL_KEY: trial.key, ARCH: trial.arch, SUBSET: trial.subset, **ctx.extra_tags}
    if ctx.transfer is not None:  # link every pretrained run to its baseline point (same arch, N, target size, seed)
        tags[TRANSFER] = "pretrained" if trial.source_n else "baseline"
        tags[BASELINE_POINT] = baseline_key(trial.point, trial.source_n)
    return tags


def trial_params(trial, ctx) -> dict:
    """The flattened trial configuration logged as MLflow params."""
    return {"arch": trial.arch, "n_params_target": trial.n_params, "n_train": trial.n_train,
            "fraction": trial.fraction, "seed": trial.seed, "trial_index": trial.trial_index,
            **{HP + k: v for k, v in trial.hparams.items()},
            "epochs": ctx.budget["epochs"], "max_steps": ctx.budget.get("max_steps"),
            "patience": ctx.budget.get("patience"), "cutoff": ctx.cutoff,
            "targets": ",".join(ctx.targets) if ctx.targets else "all",
            **{f"loss_weight.{k}": v for k, v in ctx.loss_weights.items()}, "store": ctx.store,
            "subset": trial.subset, **_transfer_params(trial, ctx)}


def _transfer_params(trial, ctx) -> dict:
    if ctx.transfer is None:
        return {}
    t = ctx.transfer
    out = {"source_n": trial.source_n, "strategy": t["strategy"] if trial.source_n else "none"}
    if trial.source_n:
        out.update({"source_store": t["source_store"],
                    "source_targets": ",".join(t["source_targets"]) if t["source_targets"] else "all",
                    **{f"pretrain.{k}": v for k, v in t["pretrain"].items()}})
    return out


def axis_metrics(trial, transfer: bool) -> dict:
    """The scaling axes of a trial, logged as metrics when its run is created."""
    return {"n_params_target": trial.n_params, "n_train": trial.n_train, "seed": trial.seed,
            "trial_index": trial.trial_index, **({"fraction": trial.fraction} if trial.fraction else {}),
            **({"source_n": trial.source_n} if transfer else {})}


def baseline_key(point: str, source_n: int) -> str:
    """The point key of the no-pretraining baseline that a transfer point is compared with."""
    return point.replace(f"-S{source_n}-", "-S0-")


def hparams_of(run) -> dict:
    """A run's hyperparameters of record (its ``hp.*`` params) in their Python types (exact: floats are logged
    with ``repr``)."""
    return {k[len(HP):]: SEARCHABLE[k[len(HP):]](float(v)) for k, v in run.data.params.items()
            if k.startswith(HP) and k[len(HP):] in SEARCHABLE}


def has_history(run) -> bool:
    """Whether a run has logged any per-epoch metric (it trained, at least in part)."""
    return any(k.startswith(HISTORY_PREFIXES) for k in run.data.metrics)


def started(run) -> bool:
    """Whether a worker ever started this trial run (it tags its node first) or it holds any epoch."""
    return NODE_ID in run.data.tags or has_history(run)


def trial_row(run) -> dict:
    """One trial run as a row of the analysis table (see :func:`analysis.runs.load_runs`)."""
    t, m, p = run.data.tags, run.data.metrics, run.data.params
    row = {"run_id": run.info.run_id, "status": run.info.status, "stage": t.get(STAGE), "sweep_id": t.get(SWEEP_ID),
           "trial_key": t.get(TRIAL_KEY), "point": t.get(POINT), "arch": p.get("arch", t.get(ARCH)),
           "failure_reason": t.get(FAILURE_REASON), "early_stopped": t.get(EARLY_STOPPED) == "true",
           "subset": p.get("subset", "random"), "strategy": p.get("strategy", "none"), "source_n": 0.0}
    row.update({k: v for k, v in m.items() if not k.startswith(HISTORY_PREFIXES)})
    row.update({k: _number(v) for k, v in p.items() if k.startswith(HP)})
    return row


def _number(v: str):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


# --- lookups ----------------------------------------------------------------------------------------------------
def trial_runs(c, exp_id: str, spec_hash: str, status: str | None = None) -> list:
    """Trial runs of a spec (any sweep invocation), optionally with one status."""
    from sweeps.tracking import search_all

    return search_all(c, [exp_id], runs_filter(KIND_TRIAL, spec_hash=spec_hash, status=status))


def find_trial_run(c, exp_id: str, spec_hash: str, key: str):
    """The run of one trial (same spec), preferring a FINISHED one; None if it never started."""
    from sweeps.tracking import search_all

    runs = search_all(c, [exp_id], runs_filter(KIND_TRIAL, spec_hash=spec_hash, trial_key=key))
    runs.sort(key=lambda r: (r.info.status != FINISHED, -r.info.start_time))
    return runs[0] if runs else None


def count_missing(c, exp_id: str, spec, points: list) -> int:
    """How many trials of a spec have no FINISHED run yet (failed ones count as missing)."""
    done = {r.data.tags.get(TRIAL_KEY) for r in trial_runs(c, exp_id, spec.hash, FINISHED)}
    return sum(trial_key(p.key, t) not in done for p in points for t in range(spec.hpo["trials_per_point"]))


def mark_unfinished(c, exp_id: str, parent_run_id: str, status: str = KILLED) -> int:
    """End the child runs a sweep leaves open (RUNNING or SCHEDULED); returns how many it ended.

    A trial the scheduler stopped early (tag ``matscale.early_stopped``) is complete: it ends FINISHED with its
    best validation loss (Tune may return, and end the worker, before such a trial has written them itself);
    any other ends ``status``.
    """
    from sweeps.tracking import log_batch, search_all

    runs = [r for r in search_all(c, [exp_id], f"tags.`mlflow.parentRunId` = {quoted(parent_run_id)}")
            if r.info.status in UNFINISHED]
    for r in runs:
        if EARLY_STOPPED in r.data.tags:
            history = [m.value for m in c.get_metric_history(r.info.run_id, EPOCH + VAL_LOSS)]
            if history and VAL_LOSS not in r.data.metrics:
                log_batch(c, r.info.run_id, metrics={VAL_LOSS: min(history), "epochs": len(history)})
            c.set_terminated(r.info.run_id, FINISHED)
        else:
            c.set_terminated(r.info.run_id, status)
    return len(runs)


def replace_run(c, old, tags: dict | None = None) -> str:
    """A fresh run for a trial that must start over: same params, tags and axis metrics, no history.

    The old run stays for the record but leaves the trials: its ``matscale.kind`` becomes ``superseded``, it
    points to the new run (``matscale.superseded_by``, the new one back with ``matscale.replaces``) and, if it
    was still open, ends KILLED. So a run never holds two trainings' histories.
    """
    from sweeps.tracking import log_batch

    keep = {k: v for k, v in old.data.tags.items() if (not k.startswith("mlflow.") or k == "mlflow.parentRunId")
            and k not in (NODE_ID, EARLY_STOPPED, FAILURE_REASON)}
    new = c.create_run(old.info.experiment_id, run_name=old.info.run_name,
                       tags={**keep, **(tags or {}), REPLACES: old.info.run_id})
    new_id = new.info.run_id
    log_batch(c, new_id, params=old.data.params,
              metrics={k: v for k, v in old.data.metrics.items() if k in AXIS_METRICS})
    log_batch(c, old.info.run_id, tags={KIND: KIND_SUPERSEDED, SUPERSEDED_BY: new_id})
    if old.info.status in UNFINISHED:
        c.set_terminated(old.info.run_id, KILLED)
    return new_id
