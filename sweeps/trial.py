"""The Ray Tune trainable: one trial = one ``gnn.train`` run, tracked in its own MLflow child run.

A trial's MLflow run is opened on the driver when the trial is first suggested (:class:`TrialRecord`), with
its hyperparameters as params: from then on they are the trial's, and every re-run, resume or retry trains
exactly the logged values (checked here before training). The run is *started* here, inside the worker, so
system metrics and artifacts come from the machine that trains. The run id travels in every Tune checkpoint,
so a trial that Ray retries after a failure (a crashed worker, a lost node) resumes from its last epoch *and*
keeps its MLflow run, its learning curve continuing from the checkpoint: each epoch is checkpointed before it
is logged, and epochs the checkpoint has but MLflow lacks are logged on resume. A trial that must start over
gets a fresh run that the old one points to (:func:`sweeps.record.replace_run`), so a run never holds two
trainings. A trial whose run is already FINISHED returns at once: re-running never duplicates a point.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ray import tune

from gnn.train import CHECKPOINT
from sweeps import record, tracking
from sweeps.record import SEARCHABLE
from sweeps.spec import Point

RUN_FILE = "mlflow_run.json"


@dataclass
class TrialContext:
    """What every trial of a sweep shares (passed once through ``tune.with_parameters``)."""

    store: str
    cutoff: float
    targets: list[str] | None
    loss_weights: dict
    budget: dict
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_id: str
    spec_hash: str
    stage: str = record.STAGE_GRID
    save_checkpoint: bool = False
    system_metrics: bool = True
    verbose: bool = False  #: the workers' own log lines (Ray's "Checkpoint successfully created …")
    num_threads: int | None = None
    extra_tags: dict = field(default_factory=dict)
    transfer: dict | None = None  #: the spec's transfer section plus ``source_store`` (a transfer sweep)
    simulate: dict | None = None  #: the spec's simulate section: trials sleep and report a known law


@dataclass
class TrialConfig:
    """One trial, from the searcher to the trainable: its scaling point, HPO index, hyperparameters and run.

    Ray Tune carries it as a plain dict (:meth:`as_dict`; also what sweeps of older versions hold in their saved
    state), and the trainable reads it back with :meth:`from_dict`.
    """

    point: str  #: :attr:`sweeps.spec.Point.key`
    trial_index: int
    arch: str
    n_params: float  #: the target parameter count
    n_train: int
    seed: int
    fraction: float | None = None
    subset: str = "random"
    source_n: int | None = None
    hparams: dict = field(default_factory=dict)  #: the searched and fixed values of ``hpo.space``
    run_id: str | None = None  #: the trial's MLflow run, opened on the driver (:class:`TrialRecord`)

    @classmethod
    def of(cls, point: Point, index: int) -> "TrialConfig":
        return cls(point=point.key, trial_index=index, arch=point.arch, n_params=point.n_params,
                   n_train=point.n_train, seed=point.seed, fraction=point.fraction, subset=point.subset,
                   source_n=point.source_n)

    @property
    def key(self) -> str:
        return record.trial_key(self.point, self.trial_index)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "TrialConfig":
        return cls(**{f.name: config[f.name] for f in fields(cls) if config.get(f.name) is not None})


class TrialRecord:
    """Driver side: each trial's MLflow run, opened when the trial is first suggested.

    Hyperparameters are fixed once, at a trial's first suggestion, and stored with its run (params ``hp.*``).
    A trial key that already has an unfinished run (an earlier, crashed or interrupted invocation) keeps that
    run's hyperparameters: a run no worker started is reused, one that started is replaced by a fresh run
    (:func:`sweeps.record.replace_run`). Only a trial without any run draws new ones.
    """

    def __init__(self, ctx: TrialContext):
        self.ctx = ctx

    def open(self, trial: TrialConfig, suggest: Callable[[], dict]) -> TrialConfig:
        """``trial`` completed with its ``hparams`` and ``run_id``."""
        ctx = self.ctx
        c = tracking.client(ctx.tracking_uri)
        old = record.find_trial_run(c, ctx.experiment_id, ctx.spec_hash, trial.key)
        if old is None:
            trial = replace(trial, hparams=suggest())
            return replace(trial, run_id=_create_run(c, trial, ctx))
        trial = replace(trial, hparams=record.hparams_of(old))
        if old.info.status == record.FINISHED:
            return replace(trial, run_id=old.info.run_id)  # the trainable skips it
        tags = {"mlflow.parentRunId": ctx.parent_run_id, record.SWEEP_ID: ctx.sweep_id, record.STAGE: ctx.stage}
        if not record.started(old):  # suggested before, never started by a worker: this sweep's now
            tracking.log_batch(c, old.info.run_id, tags=tags)
            c.update_run(old.info.run_id, status=record.SCHEDULED)
            return replace(trial, run_id=old.info.run_id)
        return replace(trial, run_id=record.replace_run(c, old, tags))


    def tag(self, run_id: str, tags: dict) -> None:
        """Add tags to a trial's run (e.g. where its hyperparameters came from)."""
        tracking.log_batch(tracking.client(self.ctx.tracking_uri), run_id, tags=tags)


def _create_run(c, trial: TrialConfig, ctx: TrialContext) -> str:
    """Create a trial's run (SCHEDULED until a worker starts it) with its params and axis metrics."""
    run = c.create_run(ctx.experiment_id, run_name=trial.key, tags=record.trial_tags(trial, ctx))
    tracking.log_batch(c, run.info.run_id, params=record.trial_params(trial, ctx),
                       metrics=record.axis_metrics(trial, ctx.transfer is not None))
    c.update_run(run.info.run_id, status=record.SCHEDULED)
    return run.info.run_id


class MarkEarlyStopped:
    """Scheduler hook (driver side): tag a trial's run ``matscale.early_stopped`` before Tune stops it, so the
    trial records a deliberate early stop as FINISHED and an interruption (Ctrl-C) as KILLED."""

    def __init__(self, tracking_uri: str, experiment_id: str, spec_hash: str):
        self.tracking_uri, self.experiment_id, self.spec_hash = tracking_uri, experiment_id, spec_hash

    def __call__(self, config: dict) -> None:
        c = tracking.client(self.tracking_uri)
        run = record.find_trial_run(c, self.experiment_id, self.spec_hash, TrialConfig.from_dict(config).key)
        if run is not None:
            c.set_tag(run.info.run_id, record.EARLY_STOPPED, "true")


def run_trial(config: dict, ctx: TrialContext) -> None:
    """Ray Tune function trainable (see the module docstring): open or resume the trial's run, check it, train."""
    trial = TrialConfig.from_dict(config)
    if not ctx.verbose:  # a line per epoch and trial would bury the sweep's progress display
        for name in ("ray.train", "ray.tune.trainable"):  # "Checkpoint successfully created", "Restored on …"
            logging.getLogger(name).setLevel(logging.WARNING)
    c = tracking.client(ctx.tracking_uri)
    work = Path(tempfile.mkdtemp(prefix="matscale-trial-"))
    try:
        run, history = _resume_or_open(c, trial, ctx, work)
        if run.info.status == record.FINISHED:
            _skip_finished(run)
            return
        _check_hparams(run, trial)
        _log_model_size(c, run, trial, ctx)
        _train_in_run(c, run.info.run_id, trial, ctx, work, history)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _resume_or_open(c, trial: TrialConfig, ctx: TrialContext, work: Path) -> tuple[object, list[dict]]:
    """The trial's run and the epochs it has: from Tune's checkpoint (a retry or a restored sweep: training and
    the MLflow run continue, epochs checkpointed but not yet logged are logged), else the run the driver opened
    (replaced by a fresh one if a worker started it before: training starts over)."""
    from gnn.train import checkpoint_history

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            shutil.copy(Path(d) / CHECKPOINT, work / CHECKPOINT)
            run_id = json.loads((Path(d) / RUN_FILE).read_text())["run_id"]
        history = checkpoint_history(work / CHECKPOINT)
        logged = _logged_steps(c, run_id, record.EPOCH + record.VAL_LOSS)
        for h in history:
            if h["epoch"] not in logged:
                _log_epoch(c, run_id, h["epoch"], h)
        return c.get_run(run_id), history
    if trial.run_id is None:  # a trial of a sweep started by an older matscale
        trial = TrialRecord(ctx).open(trial, lambda: trial.hparams)
    run = c.get_run(trial.run_id)
    if run.info.status != record.FINISHED and record.started(run):
        run = c.get_run(record.replace_run(c, run))
    return run, []


def _skip_finished(run) -> None:
    m = run.data.metrics
    tune.report({"val_loss": m.get(record.VAL_LOSS, float("nan")), "best_val_loss": m.get(record.VAL_LOSS, float("nan")),
                 "skipped": 1})


def _check_hparams(run, trial: TrialConfig) -> None:
    """The run's logged hyperparameters must be exactly those this trial trains with."""
    logged, trains = record.hparams_of(run), {k: SEARCHABLE[k](v) for k, v in trial.hparams.items()}
    if logged != trains:
        raise RuntimeError(f"run {run.info.run_id} logged hyperparameters {logged} but the trial was given {trains}")


def _log_model_size(c, run, trial: TrialConfig, ctx: TrialContext) -> None:
    """Log the model's exact size before training (built on the meta device: nothing is allocated), so that a
    trial stopped early still says how many parameters it had."""
    import torch

    from gnn.models import build_model
    from gnn.store import Store

    if "n_params" in run.data.params:
        return
    store = Store(ctx.store)
    targets = list(ctx.targets) if ctx.targets else sorted(store.targets)
    with torch.device("meta"):
        model = build_model(trial.arch, trial.n_params, targets,
                            None if store.omega_ev is None else len(store.omega_ev), cutoff=ctx.cutoff)
    tracking.log_batch(c, run.info.run_id, params={"n_params": model.n_params, "width": model.config.width,
                                                   "ffn_width": model.config.ffn_width})


def trial_device() -> tuple[str, float | None]:
    """Where a trial trains: ``("cuda", share)`` only when Ray assigned it a GPU (``ray.get_gpu_ids()``; ``share``:
    its fraction of that GPU), else ``("cpu", None)`` — a trial with ``gpu: 0`` never touches a GPU, even on a GPU
    node. Outside Ray: ``("auto", None)``."""
    import ray

    if not ray.is_initialized():
        return "auto", None
    if not ray.get_gpu_ids():
        return "cpu", None
    share = ray.get_runtime_context().get_assigned_resources().get("GPU")
    return "cuda", min(1.0, share) if share else None


def _train_config(trial: TrialConfig, ctx: TrialContext, work: Path):
    """The :class:`gnn.train.TrainConfig` of a trial (its checkpoints in ``work``), on the device Ray gave it."""
    from gnn.train import TrainConfig

    device, share = trial_device()
    return TrainConfig(
        device=device, device_share=share, precision=ctx.budget.get("precision", "auto"),
        data=ctx.store, arch=trial.arch, n_params=trial.n_params, targets=ctx.targets, n_train=trial.n_train,
        seed=trial.seed, epochs=ctx.budget["epochs"], max_steps=ctx.budget.get("max_steps"),
        patience=ctx.budget.get("patience"), loss_weights=ctx.loss_weights, cutoff=ctx.cutoff,
        checkpoint_dir=str(work), num_threads=ctx.num_threads, subset=trial.subset,
        **{k: SEARCHABLE[k](v) for k, v in trial.hparams.items()})


class _Reporter:
    """The training callback: checkpoint each epoch with Tune, then log it, so MLflow never holds an epoch the
    checkpoint lacks; it times what reporting and tracking add per epoch (bench/sweep_overhead.py)."""

    def __init__(self, c, run_id: str, history: list[dict]):
        self.c, self.run_id, self.history = c, run_id, history
        self.cost = {"mlflow_s": 0.0, "tune_s": 0.0}

    def __call__(self, epoch: int, metrics: dict, ckpt_path: str | None) -> None:
        self.history.append(metrics)
        t = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as d:
                shutil.copy(ckpt_path, Path(d) / CHECKPOINT)
                (Path(d) / RUN_FILE).write_text(json.dumps({"run_id": self.run_id}))
                tune.report({"epoch": epoch, "val_loss": metrics["val_loss"],
                             "best_val_loss": metrics["best_val_loss"], "train_loss": metrics["train_loss"]},
                            checkpoint=tune.Checkpoint.from_directory(d))
        finally:  # also when Tune stops the trial inside tune.report (SystemExit)
            self.cost["tune_s"] += time.perf_counter() - t
            t = time.perf_counter()
            _log_epoch(self.c, self.run_id, epoch, metrics)
            self.cost["mlflow_s"] += time.perf_counter() - t

    def per_report(self) -> dict:
        return {f"{k}_per_report": v / max(len(self.history), 1) for k, v in self.cost.items()}


def _train_in_run(c, run_id: str, trial: TrialConfig, ctx: TrialContext, work: Path, history: list[dict]) -> None:
    """Train inside the MLflow run and end it: FINISHED with the result, FAILED with a reason, FINISHED or KILLED
    when Tune stops the trial (early stopping or Ctrl-C)."""
    import mlflow

    from gnn.train import DivergedError, train

    mlflow.set_tracking_uri(ctx.tracking_uri)
    c.set_tag(run_id, record.NODE_ID, _node_id())  # where it (last) ran
    report = _Reporter(c, run_id, history)
    train_config = _train_config(trial, ctx, work)
    with mlflow.start_run(run_id=run_id, log_system_metrics=ctx.system_metrics):
        t0 = time.time()
        try:
            if ctx.transfer is not None and trial.source_n:
                result = _pretrain_finetune(c, run_id, trial, ctx, train_config, report)
            elif ctx.simulate is not None:
                from sweeps import simulate

                result = simulate.train(train_config, ctx.simulate, callback=report)
            else:
                result = train(train_config, callback=report)
        except SystemExit:  # Tune stopped the trial inside tune.report: early stopping, or Ctrl-C
            early = record.EARLY_STOPPED in c.get_run(run_id).data.tags  # set by the scheduler
            tracking.log_batch(c, run_id, metrics={record.VAL_LOSS: min(h["val_loss"] for h in history),
                                                   "epochs": len(history)})
            mlflow.end_run(record.FINISHED if early else record.KILLED)
            raise
        except KeyboardInterrupt:  # Ctrl-C reached the worker too
            mlflow.end_run(record.KILLED)
            raise
        except DivergedError as exc:
            c.set_tag(run_id, record.FAILURE_REASON, f"diverged: {exc}")
            mlflow.end_run(record.FAILED)
            tune.report({"val_loss": float("inf"), "best_val_loss": float("inf"), "diverged": 1})
            return
        except Exception as exc:
            c.set_tag(run_id, record.FAILURE_REASON, f"{type(exc).__name__}: {exc}"[:5000])
            mlflow.end_run(record.FAILED)
            raise  # Ray retries from the last checkpoint (FailureConfig.max_failures)
        _log_result(c, run_id, result, report, time.time() - t0, work, ctx)
        mlflow.end_run(record.FINISHED)


def _log_result(c, run_id: str, result: dict, report: _Reporter, wall_s: float, work: Path,
                ctx: TrialContext) -> None:
    """The final metrics, metrics.json, the learning curve and (if asked) the best model, in the active run."""
    import mlflow

    from gnn.train import export_best

    numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tracking.log_batch(c, run_id, metrics={**numbers, **report.per_report(), "trial_wall_time_s": wall_s},
                       params={"device": result["device"], "precision": result["precision"],
                               "subset_sha": result["subset_sha"]})
    (work / "metrics.json").write_text(json.dumps(result, indent=1))
    mlflow.log_artifact(str(work / "metrics.json"))
    if report.history:  # a PNG: the artifact viewer shows it as an image
        _learning_curve_png(report.history, work / "learning_curve.png")
        mlflow.log_artifact(str(work / "learning_curve.png"))
    c.set_tag(run_id, record.NOTE, tracking.trial_note(numbers, record.VAL_LOSS))  # the UI's Description column
    if ctx.save_checkpoint:  # the best-validation model, loadable with gnn.train.load_model
        mlflow.log_artifact(str(export_best(work / CHECKPOINT, work / "best_model.pt")))


def _pretrain_finetune(c, run_id: str, trial: TrialConfig, ctx: TrialContext, target_config, report) -> dict:
    """Both stages of a transfer trial in one MLflow run: ``pretrain/epoch/*`` then the usual ``epoch/*``."""
    from gnn.train import TrainConfig
    from gnn.transfer import pretrain_finetune

    t = ctx.transfer
    pre = t["pretrain"]
    source = TrainConfig(data=t["source_store"], arch=trial.arch, targets=t["source_targets"],
                         n_train=trial.source_n, seed=trial.seed, epochs=pre["epochs"], lr=pre["lr"],
                         batch_size=pre["batch_size"], weight_decay=pre["weight_decay"], patience=pre["patience"],
                         cutoff=ctx.cutoff, num_threads=ctx.num_threads, device=target_config.device,
                         device_share=target_config.device_share, precision=target_config.precision)
    logged = _logged_steps(c, run_id, record.PRETRAIN_EPOCH + record.VAL_LOSS)  # a retry pretrains again: no step twice

    def log_pretrain(epoch: int, metrics: dict, _ckpt) -> None:
        if epoch not in logged:
            tracking.log_batch(c, run_id, step=epoch, metrics={record.PRETRAIN_EPOCH + k: v for k, v in metrics.items()
                                                               if k != "epoch" and isinstance(v, (int, float))})

    target_config.strategy = t["strategy"]
    return pretrain_finetune(source, target_config, callback=report, pretrain_callback=log_pretrain)


def _logged_steps(c, run_id: str, metric: str) -> set[int]:
    return {m.step for m in c.get_metric_history(run_id, metric)}


def _log_epoch(c, run_id: str, epoch: int, metrics: dict) -> None:
    tracking.log_batch(c, run_id, metrics={record.EPOCH + k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def _learning_curve_png(history: list[dict], path: Path) -> None:
    """Train and validation loss per epoch, saved as a PNG (:func:`_learning_curve_figure`)."""
    import matplotlib.pyplot as plt

    fig = _learning_curve_figure(history)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _learning_curve_figure(history: list[dict]):
    """The learning curve on a log loss axis with several labelled ticks whatever its range: evenly spaced plain
    numbers within a decade (matplotlib's log ticks would label one power of ten, or none), 1-2-5 steps on wider
    ranges."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [h["epoch"] for h in history]
    curves = {"train": [h["train_loss"] for h in history], "validation": [h["val_loss"] for h in history]}
    for label, values in curves.items():
        ax.plot(epochs, values, marker="o" if len(epochs) < 15 else None, ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ys = [y for v in curves.values() for y in v if isinstance(y, (int, float)) and math.isfinite(y) and y > 0]
    if ys:
        ax.set_yscale("log")
        lo, hi = min(ys), max(ys)
        decades = math.log10(hi / lo)
        if decades < 1:  # evenly spaced, with the digits that tell the ticks apart
            ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=6, min_n_ticks=4))
            ax.yaxis.set_major_formatter(ticker.ScalarFormatter(useOffset=False))
        else:
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
