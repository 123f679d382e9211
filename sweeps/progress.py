"""One live progress display for a whole sweep (a Ray Tune callback on the driver).

Shows trials done / running / failed / pending, elapsed time, an ETA and the best validation loss so far at each
data size D and model size N. On a terminal it is one line redrawn in place (tqdm); in a log (not a terminal) it
is a line at most every :data:`LOG_EVERY_S` seconds and one at the end, so a sweep's log stays short.

The ETA comes from measured trial times: finished trials' seconds are fitted as ``a + b · work`` (work:
``n_train`` × epochs run; ``a`` is each trial's start-up, data and tracking cost); the trials not finished, with
the work still to do (every planned trial's ``n_train`` × the epoch budget, less what finished and running trials
did), over the trials that run at once, give the time left.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ray.tune import Callback

from sweeps.estimate import fit_rates
from sweeps.spec import duration, sci

LOG_EVERY_S = 30.0  #: a progress line in a log at most this often


class SweepProgress(Callback):
    """Tune callback: the sweep's progress on ``stream`` (see the module docstring).

    Args:
        n_train: the training-set size of every trial this invocation runs. epochs: the epoch budget of a trial.
            slots: trials that run at once.
        stream: where to write (stderr). live: redraw in place (default: whether ``stream`` is a terminal).
        clock: the time source (tests).
    """

    def __init__(self, n_train: list[int], epochs: int, slots: int, *, stream=None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.epochs, self.slots = len(n_train), max(1, epochs), max(1, slots)
        self.planned_work = float(sum(n_train)) * self.epochs
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.clock = clock
        self.start = clock()
        self.last_line = -LOG_EVERY_S  #: when the last log line was written (relative to start)
        self.started: dict[str, float] = {}  #: trial id → start time
        self.done_ids: set[str] = set()  #: trials that completed (an interrupted one is not done)
        self.failed_ids: set[str] = set()
        self.finished: list[tuple[float, float]] = []  #: (n_train × epochs run, seconds) of finished trials
        self.epochs_run: dict[str, int] = {}
        self.best_d: dict[int, float] = {}
        self.best_n: dict[float, float] = {}
        self.counts = {"done": 0, "running": 0, "failed": 0, "pending": self.total}
        self.work_left = self.planned_work
        self._bar = None

    # --- Tune callback hooks --------------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, self.clock())

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "epoch" in result:
            self.epochs_run[trial.trial_id] = int(result["epoch"]) + 1
        loss = result.get("best_val_loss")
        if loss is not None and loss == loss and loss != float("inf"):
            cfg = trial.config
            d, n = int(cfg.get("n_train") or 0), float(cfg.get("n_params") or 0)
            self.best_d[d] = min(self.best_d.get(d, loss), loss)
            self.best_n[n] = min(self.best_n.get(n, loss), loss)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.failed_ids.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done_ids.add(trial.trial_id)
        start = self.started.get(trial.trial_id)
        run = self.epochs_run.get(trial.trial_id, 0)
        if start is not None and run:
            self.finished.append((float(int(trial.config.get("n_train") or 1) * run), self.clock() - start))

    def on_step_end(self, iteration, trials, **info) -> None:
        self.update(trials)

    def on_experiment_end(self, trials, **info) -> None:
        self.update(trials, final=True)

    # --- the display ----------------------------------------------------------------------------------------
    def update(self, trials, final: bool = False) -> None:
        """Recount from Tune's trials and redraw (a terminal) or maybe write a line (a log)."""
        # a restored sweep's trials that ended in an earlier invocation are done; one this process started counts
        # only once Tune says it completed (Ctrl-C also leaves trials TERMINATED)
        self.done_ids |= {t.trial_id for t in trials if t.status == "TERMINATED" and t.trial_id not in self.started}
        done, failed = len(self.done_ids), len(self.failed_ids)
        running = sum(t.status == "RUNNING" and t.trial_id not in self.done_ids for t in trials)
        self.counts = {"done": done, "running": running, "failed": failed,
                       "pending": max(0, self.total - done - failed - running)}
        ended = sum(int(t.config.get("n_train") or 1) * self.epochs for t in trials
                    if t.trial_id in self.done_ids or t.trial_id in self.failed_ids)
        partial = sum(int(t.config.get("n_train") or 1) * self.epochs_run.get(t.trial_id, 0) for t in trials
                      if t.status == "RUNNING")
        self.work_left = max(0.0, self.planned_work - ended - partial)
        now = self.clock() - self.start
        if self.live:
            self._draw(final)
        elif final or now - self.last_line >= LOG_EVERY_S:
            self.last_line = now
            print(self.line(), file=self.stream, flush=True)

    def cost_model(self) -> tuple[float, float] | None:
        """``(a, b)``: a trial takes ``a + b · work`` seconds, fitted to the finished ones (None before any)."""
        rates = fit_rates(self.finished)
        return None if rates is None else (rates.setup_s, rates.sample_s)

    def eta_s(self) -> float | None:
        """Seconds left, from the measured trial times; None before any trial finished."""
        model = self.cost_model()
        if model is None:
            return None
        a, b = model
        c = self.counts
        return (a * (c["pending"] + c["running"] / 2) + b * self.work_left) / self.slots

    def line(self) -> str:
        """One line: counts, elapsed, ETA, best loss by D and by N."""
        c = self.counts
        eta = self.eta_s()
        text = (f"trials {c['done'] + c['failed']}/{self.total} done ({c['running']} running, {c['pending']} pending"
                + (f", {c['failed']} FAILED" if c["failed"] else "") + f")  elapsed {duration(self.clock() - self.start)}"
                + (f"  ETA {duration(eta)}" if eta is not None and c["done"] + c["failed"] < self.total else ""))
        best = self.best()
        return text + (f"  best val_loss {best}" if best else "")

    def best(self) -> str:
        parts = [f"D{d} {v:.3g}" for d, v in sorted(self.best_d.items())]
        if len(self.best_n) > 1:
            parts += [f"N{sci(n)} {v:.3g}" for n, v in sorted(self.best_n.items())]
        return " · ".join(parts)

    def _draw(self, final: bool) -> None:
        from tqdm.auto import tqdm

        if self._bar is None:
            self._bar = tqdm(total=self.total, file=self.stream, unit="trial", dynamic_ncols=True, leave=True,
                             bar_format="{l_bar}{bar:20}| {n_fmt}/{total_fmt} {postfix}")
        c = self.counts
        self._bar.n = c["done"] + c["failed"]
        eta = self.eta_s()
        self._bar.set_postfix_str(f"{c['running']} running, {c['pending']} pending"
                                  + (f", {c['failed']} FAILED" if c["failed"] else "")
                                  + (f", ETA {duration(eta)}" if eta is not None else "")
                                  + (f" | best {self.best()}" if self.best_d else ""), refresh=True)
        if final:
            self._bar.close()
            self._bar = None
