"""The Ray Tune trainable: one trial = one ``gnn.train`` run, tracked in its own MLflow child run.

A trial's MLflow run is opened on the driver when the trial is first suggested (:class:`TrialRecord`), with
its hyperparameters as params: from then on they are the trial's, and every re-run, resume or retry trains
exactly the logged values (checked here before training). The run is *started* here, inside the worker, so
system metrics and artifacts come from the machine that trains. The run id travels in every Tune checkpoint,
so a trial that Ray retries after a failure (a crashed worker, a lost node) resumes from its last epoch *and*
keeps its MLflow run, its learning curve continuing from the checkpoint: each epoch is checkpointed before it
is logged, and epochs the checkpoint has but MLflow lacks are logged on resume. A trial that must start over
gets a fresh run that the old one points to (:func:`sweeps.tracking.replace_run`), so a run never holds two
trainings. A trial whose run is already FINISHED returns at once: re-running never duplicates a point.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ray import tune

from sweeps import tracking
from sweeps.spec import SEARCHABLE

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
    stage: str = "grid"
    save_checkpoint: bool = False
    system_metrics: bool = True
    num_threads: int | None = None
    extra_tags: dict = field(default_factory=dict)
    transfer: dict | None = None  #: the spec's transfer section plus ``source_store`` (a transfer sweep)


def trial_key(config: dict) -> str:
    return f"{config['point']}-t{config['trial_index']}"


def flat_params(config: dict, ctx: TrialContext) -> dict:
    """The flattened trial configuration logged as MLflow params."""
    return {"arch": config["arch"], "n_params_target": config["n_params"], "n_train": config["n_train"],
            "fraction": config["fraction"], "seed": config["seed"], "trial_index": config["trial_index"],
            **{f"hp.{k}": v for k, v in config["hparams"].items()},
            "epochs": ctx.budget["epochs"], "max_steps": ctx.budget.get("max_steps"),
            "patience": ctx.budget.get("patience"), "cutoff": ctx.cutoff,
            "targets": ",".join(ctx.targets) if ctx.targets else "all",
            **{f"loss_weight.{k}": v for k, v in ctx.loss_weights.items()}, "store": ctx.store,
            "subset": config.get("subset", "random"), **_transfer_params(config, ctx)}


def _transfer_params(config: dict, ctx: TrialContext) -> dict:
    if ctx.transfer is None:
        return {}
    t = ctx.transfer
    out = {"source_n": config["source_n"], "strategy": t["strategy"] if config["source_n"] else "none"}
    if config["source_n"]:
        out.update({"source_store": t["source_store"],
                    "source_targets": ",".join(t["source_targets"]) if t["source_targets"] else "all",
                    **{f"pretrain.{k}": v for k, v in t["pretrain"].items()}})
    return out


def baseline_key(config: dict) -> str:
    """The point key of the no-pretraining baseline that a transfer point is compared with."""
    return config["point"].replace(f"-S{config['source_n']}-", "-S0-")


def hparams_of(run) -> dict:
    """A run's hyperparameters of record (its ``hp.*`` params) in their Python types (exact: floats are logged
    with ``repr``)."""
    return {k[3:]: SEARCHABLE[k[3:]](float(v)) for k, v in run.data.params.items()
            if k.startswith("hp.") and k[3:] in SEARCHABLE}


def started(run) -> bool:
    """Whether a worker ever started this trial run (it tags its node first) or it holds any epoch."""
    return f"{tracking.TAG}node_id" in run.data.tags or tracking.has_history(run)


class TrialRecord:
    """Driver side: each trial's MLflow run, opened when the trial is first suggested.

    Hyperparameters are fixed once, at a trial's first suggestion, and stored with its run (params ``hp.*``).
    A trial key that already has an unfinished run (an earlier, crashed or interrupted invocation) keeps that
    run's hyperparameters: a run no worker started is reused, one that started is replaced by a fresh run
    (:func:`sweeps.tracking.replace_run`). Only a trial without any run draws new ones.
    """

    def __init__(self, ctx: "TrialContext"):
        self.ctx = ctx

    def open(self, config: dict, suggest: Callable[[], dict]) -> dict:
        """``config`` (without ``hparams``) completed with the trial's ``hparams`` and ``run_id``."""
        ctx = self.ctx
        c = tracking.client(ctx.tracking_uri)
        old = tracking.find_trial_run(c, ctx.experiment_id, ctx.spec_hash, trial_key(config))
        if old is None:
            config = {**config, "hparams": suggest()}
            return {**config, "run_id": _start_run(c, config, ctx)}
        config = {**config, "hparams": hparams_of(old)}
        if old.info.status == tracking.FINISHED:
            return {**config, "run_id": old.info.run_id}  # the trainable skips it
        tags = {"mlflow.parentRunId": ctx.parent_run_id, f"{tracking.TAG}sweep_id": ctx.sweep_id,
                f"{tracking.TAG}stage": ctx.stage}
        if not started(old):  # suggested before, never started by a worker: this sweep's now
            tracking.log_batch(c, old.info.run_id, tags=tags)
            c.update_run(old.info.run_id, status=tracking.SCHEDULED)
            return {**config, "run_id": old.info.run_id}
        return {**config, "run_id": tracking.replace_run(c, old, tags)}


def _start_run(c, config: dict, ctx: TrialContext) -> str:
    """Create a trial's run (SCHEDULED until a worker starts it) with its params and axis metrics."""
    key = trial_key(config)
    tags = {"mlflow.parentRunId": ctx.parent_run_id, "mlflow.runName": key,
            f"{tracking.TAG}kind": "trial", f"{tracking.TAG}sweep_id": ctx.sweep_id,
            f"{tracking.TAG}spec_hash": ctx.spec_hash, f"{tracking.TAG}stage": ctx.stage,
            f"{tracking.TAG}point": config["point"], f"{tracking.TAG}trial_key": key,
            f"{tracking.TAG}arch": config["arch"], f"{tracking.TAG}subset": config.get("subset", "random"), **ctx.extra_tags}
    if ctx.transfer is not None:  # link every pretrained run to its baseline point (same arch, N, target size, seed)
        tags[f"{tracking.TAG}transfer"] = "pretrained" if config["source_n"] else "baseline"
        tags[f"{tracking.TAG}baseline_point"] = baseline_key(config)
    run = c.create_run(ctx.experiment_id, run_name=key, tags=tags)
    tracking.log_batch(c, run.info.run_id, params=flat_params(config, ctx),
                       metrics={"n_params_target": config["n_params"], "n_train": config["n_train"],
                                "seed": config["seed"], "trial_index": config["trial_index"],
                                **({"fraction": config["fraction"]} if config["fraction"] else {}),
                                **({"source_n": config["source_n"]} if ctx.transfer is not None else {})})
    c.update_run(run.info.run_id, status=tracking.SCHEDULED)
    return run.info.run_id


class MarkEarlyStopped:
    """Scheduler hook (driver side): tag a trial's run ``matscale.early_stopped`` before Tune stops it, so the
    trial records a deliberate early stop as FINISHED and an interruption (Ctrl-C) as KILLED."""

    def __init__(self, tracking_uri: str, experiment_id: str, spec_hash: str):
        self.tracking_uri, self.experiment_id, self.spec_hash = tracking_uri, experiment_id, spec_hash

    def __call__(self, config: dict) -> None:
        c = tracking.client(self.tracking_uri)
        run = tracking.find_trial_run(c, self.experiment_id, self.spec_hash, trial_key(config))
        if run is not None:
            c.set_tag(run.info.run_id, f"{tracking.TAG}early_stopped", "true")


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def _learning_curve_png(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pretrain_finetune(c, run_id: str, config: dict, ctx: TrialContext, target_config, report) -> dict:
    """Both stages of a transfer trial in one MLflow run: ``pretrain/epoch/*`` then the usual ``epoch/*``."""
    from gnn.train import TrainConfig
    from gnn.transfer import pretrain_finetune

    t = ctx.transfer
    pre = t["pretrain"]
    source = TrainConfig(data=t["source_store"], arch=config["arch"], targets=t["source_targets"],
                         n_train=config["source_n"], seed=config["seed"], epochs=pre["epochs"], lr=pre["lr"],
                         batch_size=pre["batch_size"], weight_decay=pre["weight_decay"], patience=pre["patience"],
                         cutoff=ctx.cutoff, num_threads=ctx.num_threads)

    logged = _logged_steps(c, run_id, "pretrain/epoch/val_loss")  # a retry that pretrains again logs no step twice

    def log_pretrain(epoch: int, metrics: dict, _ckpt) -> None:
        if epoch not in logged:
            tracking.log_batch(c, run_id, step=epoch, metrics={f"pretrain/epoch/{k}": v for k, v in metrics.items()
                                                               if k != "epoch" and isinstance(v, (int, float))})

    target_config.strategy = t["strategy"]
    return pretrain_finetune(source, target_config, callback=report, pretrain_callback=log_pretrain)


def _logged_steps(c, run_id: str, metric: str) -> set[int]:
    return {m.step for m in c.get_metric_history(run_id, metric)}


def _log_epoch(c, run_id: str, epoch: int, metrics: dict) -> None:
    tracking.log_batch(c, run_id, metrics={f"epoch/{k}": v for k, v in metrics.items() if k != "epoch"}, step=epoch)


def _skip_finished(run) -> None:
    m = run.data.metrics
    tune.report({"val_loss": m.get("val_loss", float("nan")), "best_val_loss": m.get("val_loss", float("nan")),
                 "skipped": 1})


def _check_hparams(run, config: dict) -> None:
    """The run's logged hyperparameters must be exactly those this trial trains with."""
    logged, trains = hparams_of(run), {k: SEARCHABLE[k](v) for k, v in config["hparams"].items()}
    if logged != trains:
        raise RuntimeError(f"run {run.info.run_id} logged hyperparameters {logged} but the trial was given {trains}")


def _log_model_size(c, run, config: dict, ctx: TrialContext) -> None:
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
        model = build_model(config["arch"], config["n_params"], targets,
                            None if store.omega_ev is None else len(store.omega_ev), cutoff=ctx.cutoff)
    tracking.log_batch(c, run.info.run_id, params={"n_params": model.n_params, "width": model.config.width,
                                                   "ffn_width": model.config.ffn_width})


def run_trial(config: dict, ctx: TrialContext) -> None:
    """Ray Tune function trainable (see the module docstring)."""
    import mlflow

    from gnn.train import DivergedError, TrainConfig, checkpoint_history, export_best, train

    c = tracking.client(ctx.tracking_uri)
    work = Path(tempfile.mkdtemp(prefix="matscale-trial-"))
    history: list[dict] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retry or a restored sweep: resume training and the same MLflow run
        with checkpoint.as_directory() as d:
            shutil.copy(Path(d) / "checkpoint.pt", work / "checkpoint.pt")
            run_id = json.loads((Path(d) / RUN_FILE).read_text())["run_id"]
        run = c.get_run(run_id)
        history = checkpoint_history(work / "checkpoint.pt")
        logged = _logged_steps(c, run_id, "epoch/val_loss")
        for h in history:  # epochs checkpointed but not yet logged when the trial was interrupted
            if h["epoch"] not in logged:
                _log_epoch(c, run_id, h["epoch"], h)
    else:
        if "run_id" not in config:  # a trial of a sweep started by an older matscale
            config = TrialRecord(ctx).open(config, lambda: config["hparams"])
        run = c.get_run(config["run_id"])
        if run.info.status != tracking.FINISHED and started(run):
            run = c.get_run(tracking.replace_run(c, run))  # started before: start over in a fresh run
        run_id = run.info.run_id
    if run.info.status == tracking.FINISHED:
        _skip_finished(run)
        return
    _check_hparams(run, config)
    _log_model_size(c, run, config, ctx)

    mlflow.set_tracking_uri(ctx.tracking_uri)
    c.set_tag(run_id, f"{tracking.TAG}node_id", _node_id())  # where it (last) ran
    cost = {"mlflow_s": 0.0, "tune_s": 0.0}  # what tracking and reporting add per epoch (bench/sweep_overhead.py)

    def report(epoch: int, metrics: dict, ckpt_path: str | None) -> None:
        """Checkpoint the epoch with Tune, then log it: MLflow never holds an epoch the checkpoint lacks."""
        history.append(metrics)
        t = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as d:
                shutil.copy(ckpt_path, Path(d) / "checkpoint.pt")
                (Path(d) / RUN_FILE).write_text(json.dumps({"run_id": run_id}))
                tune.report({"epoch": epoch, "val_loss": metrics["val_loss"],
                             "best_val_loss": metrics["best_val_loss"], "train_loss": metrics["train_loss"]},
                            checkpoint=tune.Checkpoint.from_directory(d))
        finally:  # also when Tune stops the trial inside tune.report (SystemExit)
            cost["tune_s"] += time.perf_counter() - t
            t = time.perf_counter()
            _log_epoch(c, run_id, epoch, metrics)
            cost["mlflow_s"] += time.perf_counter() - t

    hp = config["hparams"]
    train_config = TrainConfig(
        data=ctx.store, arch=config["arch"], n_params=config["n_params"], targets=ctx.targets,
        n_train=config["n_train"], seed=config["seed"], epochs=ctx.budget["epochs"],
        max_steps=ctx.budget.get("max_steps"), patience=ctx.budget.get("patience"),
        loss_weights=ctx.loss_weights, cutoff=ctx.cutoff, checkpoint_dir=str(work),
        num_threads=ctx.num_threads, subset=config.get("subset", "random"),
        **{k: SEARCHABLE[k](v) for k, v in hp.items()})
    with mlflow.start_run(run_id=run_id, log_system_metrics=ctx.system_metrics):
        try:
            t0 = time.time()
            if ctx.transfer is not None and config["source_n"]:
                result = _pretrain_finetune(c, run_id, config, ctx, train_config, report)
            else:
                result = train(train_config, callback=report)
        except SystemExit:  # Tune stopped the trial inside tune.report: early stopping, or Ctrl-C
            early = f"{tracking.TAG}early_stopped" in c.get_run(run_id).data.tags  # set by the scheduler
            best = min(h["val_loss"] for h in history)
            tracking.log_batch(c, run_id, metrics={"val_loss": best, "epochs": len(history)})
            mlflow.end_run(tracking.FINISHED if early else tracking.KILLED)
            shutil.rmtree(work, ignore_errors=True)
            raise
        except KeyboardInterrupt:  # Ctrl-C reached the worker too
            mlflow.end_run(tracking.KILLED)
            raise
        except DivergedError as exc:
            c.set_tag(run_id, f"{tracking.TAG}failure_reason", f"diverged: {exc}")
            mlflow.end_run(tracking.FAILED)
            tune.report({"val_loss": float("inf"), "best_val_loss": float("inf"), "diverged": 1})
            shutil.rmtree(work, ignore_errors=True)
            return
        except Exception as exc:
            c.set_tag(run_id, f"{tracking.TAG}failure_reason", f"{type(exc).__name__}: {exc}"[:5000])
            mlflow.end_run(tracking.FAILED)
            raise  # Ray retries from the last checkpoint (FailureConfig.max_failures)
        numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        per_report = {f"{k}_per_report": v / max(len(history), 1) for k, v in cost.items()}
        tracking.log_batch(c, run_id, metrics={**numbers, **per_report, "trial_wall_time_s": time.time() - t0},
                           params={"device": result["device"], "subset_sha": result["subset_sha"]})
        (work / "metrics.json").write_text(json.dumps(result, indent=1))
        mlflow.log_artifact(str(work / "metrics.json"))
        if history:
            _learning_curve_png(history, work / "learning_curve.png")
            mlflow.log_artifact(str(work / "learning_curve.png"))
        if ctx.save_checkpoint:  # the best-validation model, loadable with gnn.train.load_model
            mlflow.log_artifact(str(export_best(work / "checkpoint.pt", work / "best_model.pt")))
        mlflow.end_run(tracking.FINISHED)
    shutil.rmtree(work, ignore_errors=True)
