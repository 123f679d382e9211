"""The sweep's live progress display (sweeps.progress) and the sweep summary: short in a log, honest ETA."""

import io
from types import SimpleNamespace

import pytest

from sweeps.driver import summary_table
from sweeps.progress import LOG_EVERY_S, SweepProgress
from sweeps.spec import duration


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _trial(i, n_train, n_params=1e4):
    return SimpleNamespace(trial_id=f"t{i}", status="PENDING", config={"n_train": n_train, "n_params": n_params})


def _simulate(overhead=5.0, per_unit=0.002, epochs=4, sizes=(100, 200, 400, 800, 1600) * 4, slots=2):
    """Run trials two at a time through the callback with a fake clock: trial time = overhead + per_unit·work."""
    clock, out = Clock(), io.StringIO()
    p = SweepProgress(list(sizes), epochs, slots, stream=out, live=False, clock=clock)
    trials = [_trial(i, d) for i, d in enumerate(sizes)]
    etas = []
    for k in range(0, len(trials), slots):
        batch = trials[k:k + slots]
        for t in batch:
            t.status = "RUNNING"
            p.on_trial_start(0, trials, t)
        etas.append((clock.t, p.eta_s()))
        for e in range(epochs):
            for t in batch:
                p.on_trial_result(0, trials, t, {"epoch": e, "best_val_loss": 1.0 / t.config["n_train"]})
        start = clock.t
        for t in sorted(batch, key=lambda t: t.config["n_train"]):  # each ends after its own time
            clock.t = start + overhead + per_unit * t.config["n_train"] * epochs
            t.status = "TERMINATED"
            p.on_trial_complete(0, trials, t)
        p.on_step_end(0, trials)
    p.on_experiment_end(trials)
    return p, out.getvalue().splitlines(), etas, clock.t


def test_a_log_gets_a_line_per_30_seconds_and_a_final_one():
    p, lines, _, total_s = _simulate()
    assert len(lines) <= total_s / LOG_EVERY_S + 2
    assert lines[-1].startswith("trials 20/20 done (0 running, 0 pending)")
    assert "best val_loss D100 0.01" in lines[-1] and "D1600 0.000625" in lines[-1]


def test_eta_comes_from_measured_trial_times():
    p, _, etas, total_s = _simulate()
    # after a few rounds the fitted a + b·work predicts the rest of the sweep within 25 %
    t, eta = etas[4]
    assert eta is not None and eta == pytest.approx(total_s - t, rel=0.25)
    a, b = p.cost_model()
    assert a == pytest.approx(5.0, rel=0.3) and b == pytest.approx(0.002, rel=0.3)


def test_failed_trials_are_counted():
    clock, out = Clock(), io.StringIO()
    p = SweepProgress([100, 100], 2, 2, stream=out, live=False, clock=clock)
    trials = [_trial(0, 100), _trial(1, 100)]
    trials[0].status, trials[1].status = "ERROR", "TERMINATED"
    p.on_trial_error(0, trials, trials[0])
    p.on_trial_complete(0, trials, trials[1])
    p.update(trials, final=True)
    assert "trials 2/2 done (0 running, 0 pending, 1 FAILED)" in out.getvalue()


def test_an_interrupted_trial_is_not_done():
    clock, out = Clock(), io.StringIO()
    p = SweepProgress([100, 100], 2, 2, stream=out, live=False, clock=clock)
    trials = [_trial(0, 100), _trial(1, 100)]
    for t in trials:
        p.on_trial_start(0, trials, t)
    p.on_trial_complete(0, trials, trials[0])
    trials[0].status = trials[1].status = "TERMINATED"  # Tune's status of a trial stopped by Ctrl-C too
    p.update(trials, final=True)
    assert "trials 1/2 done (0 running, 1 pending)" in out.getvalue()


def test_a_restored_sweep_counts_what_ended_before():
    clock, out = Clock(), io.StringIO()
    p = SweepProgress([100, 100, 100], 2, 2, stream=out, live=False, clock=clock)
    trials = [_trial(i, 100) for i in range(3)]
    trials[0].status = "TERMINATED"  # finished in the interrupted invocation
    p.update(trials)
    assert "trials 1/3 done (0 running, 2 pending)" in out.getvalue()


def test_duration():
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_summary_is_a_grid_not_a_line_per_trial():
    trials = [{"key": f"cgc-N{n:g}-D{d}-s{s}-t{t}", "status": "FINISHED", "val_loss": 1.0 + t + s / 10,
               "order": ("cgc", n, d, s, t), "subset": "random", "source_n": None}
              for n in (1e4, 4e4) for d in (150, 300, 600) for s in (0, 1) for t in (0, 1)]
    trials[0]["status"], trials[0]["val_loss"], trials[0]["failure_reason"] = "FAILED", None, "diverged: nan"
    text = summary_table({"trials": trials})
    lines = text.splitlines()
    assert lines[0] == "24 trials: 1 FAILED, 23 FINISHED"
    # D150 at N=1e4: seed 0 has only t1 (2.0) left, seed 1 its best 1.1 → 1.55; elsewhere (1.0 + 1.1) / 2
    assert lines[3].split() == ["cgc", "N=1e4", "1.5500", "1.0500", "1.0500"]
    assert lines[-1] == "FAILED cgc-N10000-D150-s0-t0: diverged: nan"
    assert len(summary_table({"trials": trials}, per_trial=True).splitlines()) == 26
