"""The MLflow record (sweeps.record): names that existing experiments hold, the trial key, and the typed trial
config that travels through Ray Tune as a dict."""

from types import SimpleNamespace

from sweeps import record
from sweeps.spec import Point
from sweeps.trial import TrialConfig


def test_names_are_those_existing_experiments_hold():
    """Experiments written before the record module existed are read with the same tags, params and metrics."""
    assert (record.KIND, record.STAGE, record.SWEEP_ID, record.SPEC_HASH) == (
        "matscale.kind", "matscale.stage", "matscale.sweep_id", "matscale.spec_hash")
    assert (record.POINT, record.TRIAL_KEY, record.EARLY_STOPPED, record.FAILURE_REASON, record.NODE_ID) == (
        "matscale.point", "matscale.trial_key", "matscale.early_stopped", "matscale.failure_reason",
        "matscale.node_id")
    assert (record.KIND_TRIAL, record.KIND_SWEEP, record.KIND_ANALYSIS, record.KIND_SUPERSEDED) == (
        "trial", "sweep", "analysis", "superseded")
    assert record.AXIS_METRICS == ("n_params_target", "n_train", "seed", "trial_index", "fraction", "source_n")
    assert record.trial_key("cgc-N1e4-D150-s0", 1) == "cgc-N1e4-D150-s0-t1"


def test_trial_key_round_trips_through_point_of():
    for point in (Point("cgc", 1.2e6, 20000, 42), Point("transformer", 3e4, 50, 1, subset="exclude:rich:Fe"),
                  Point("cgc", 1e4, 100, 0, source_n=250)):
        key = record.trial_key(point.key, 3)
        assert record.point_of(key) == point.key and key.endswith("-t3")


def test_runs_filter_names_tags_and_status():
    f = record.runs_filter(record.KIND_TRIAL, spec_hash="abc", sweep_id=None, status=record.FINISHED)
    assert f == ("tags.`matscale.kind` = 'trial' and tags.`matscale.spec_hash` = 'abc' and "
                 "attributes.status = 'FINISHED'")


def test_trial_config_round_trips_and_reads_older_dicts():
    trial = TrialConfig.of(Point("cgc", 1e4, 150, 1, fraction=0.0625), 1)
    trial.hparams = {"lr": 0.002, "batch_size": 32}
    assert TrialConfig.from_dict(trial.as_dict()) == trial
    assert trial.key == "cgc-N1e4-D150-s1-t1"
    # a config saved by an older matscale in Ray's experiment state: no run_id, no subset, source_n None
    old = {"point": "cgc-N1e4-D150-s1", "trial_index": 0, "arch": "cgc", "n_params": 1e4, "n_train": 150,
           "fraction": 0.0625, "seed": 1, "source_n": None, "hparams": {"lr": 0.001}}
    t = TrialConfig.from_dict(old)
    assert (t.subset, t.run_id, t.source_n, t.key) == ("random", None, None, "cgc-N1e4-D150-s1-t0")


def test_params_and_rows_agree():
    """What the writer logs is what the reader's row holds."""
    trial = TrialConfig.of(Point("cgc", 1e4, 150, 1), 0)
    trial.hparams = {"lr": 0.002}
    ctx = SimpleNamespace(parent_run_id="p", sweep_id="s", spec_hash="h", stage="grid", extra_tags={},
                          transfer=None, budget={"epochs": 5}, cutoff=5.5, targets=None, loss_weights={},
                          store="/data")
    params = {k: str(v) for k, v in record.trial_params(trial, ctx).items()}
    tags = record.trial_tags(trial, ctx)
    metrics = record.axis_metrics(trial, transfer=False)
    run = SimpleNamespace(info=SimpleNamespace(run_id="r", status="FINISHED"),
                          data=SimpleNamespace(tags=tags, params=params, metrics={**metrics, "val_loss": 0.5}))
    row = record.trial_row(run)
    assert (row["trial_key"], row["point"], row["arch"], row["subset"]) == (trial.key, trial.point, "cgc", "random")
    assert (row["n_train"], row["seed"], row["hp.lr"], row["val_loss"]) == (150, 1, 0.002, 0.5)
    assert record.hparams_of(run) == {"lr": 0.002}


def test_a_sweeps_status_is_what_its_trial_runs_say():
    """Tune errors a sweep recovered from (every trial has its FINISHED run, e.g. a restore whose checkpoint had
    been rotated away, then a retry) do not fail it; an interruption is KILLED, a failed run FAILED."""
    from sweeps.driver import outcome

    done = ["FINISHED"] * 4
    assert outcome(True, done, 0) == "FINISHED"
    assert outcome(False, done, 0) == "FINISHED"
    assert outcome(True, done[:3], 1) == "FAILED"  # Tune errors and a trial without its FINISHED run
    assert outcome(False, done[:3], 1) == "KILLED"  # interrupted before every trial started: --resume continues
    assert outcome(False, done[:3] + ["KILLED"], 1) == "KILLED"
    assert outcome(True, done[:3] + ["KILLED"], 1) == "FAILED"
    assert outcome(False, done[:3] + ["FAILED"], 1) == "FAILED"
    assert outcome(True, done[:3] + ["FAILED"], 1) == "FAILED"
