"""HPO inside each scaling point: one Optuna study per point, behind one Ray Tune ``Searcher``.

``tune.grid_search`` cannot be combined with ``OptunaSearch``, and one global study would let trials of
different sizes inform each other. :class:`PointSearcher` walks the grid itself: it hands out trial ``t`` of
every point before trial ``t + 1`` of any, so each study's sampler sees the earlier trials of its own point.
:class:`PerPointScheduler` likewise keeps one ASHA or median-stopping scheduler per point, so early stopping
only ever compares trials of the same point.
"""

from __future__ import annotations

import pickle
import zlib

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import Searcher

from sweeps.record import point_of, trial_key
from sweeps.spec import Point

METRIC = "val_loss"  #: what schedulers watch each epoch
OBJECTIVE = "best_val_loss"  #: what each Optuna study minimises


def distributions(space: dict) -> tuple[dict, dict]:
    """Optuna distributions for the searched keys, and the fixed values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists, fixed = {}, {}
    for name, d in space.items():
        if not isinstance(d, dict):
            fixed[name] = d
            continue
        kind, args = next(iter(d.items()))
        if kind == "choice":
            dists[name] = CategoricalDistribution(list(args))
        elif kind in ("int", "log_int"):
            dists[name] = IntDistribution(int(args[0]), int(args[1]), log=kind == "log_int")
        else:
            dists[name] = FloatDistribution(float(args[0]), float(args[1]), log=kind == "log_uniform")
    return dists, fixed


class PointSearcher(Searcher):
    """Suggests ``trials_per_point`` configurations for each point, each from that point's Optuna study.

    A trial's hyperparameters are drawn once: with a ``record`` (:class:`sweeps.trial.TrialRecord`, the
    driver's MLflow runs) a trial key that already has a run keeps that run's logged values, and a new draw is
    stored in a new run before the trial is handed to Tune. Each draw uses a sampler seeded by the trial key,
    so a study rebuilt after a crash never repeats the draw of another trial of its point.

    Args:
        points: the scaling points. trials_per_point: HPO trials per point. space: the spec's ``hpo.space``.
        done: ``{trial_key: (params, objective)}`` of trials already FINISHED (skipped, but fed to the studies).
        first: trial keys to hand out first (those an interrupted invocation had started).
        record: opens each trial's MLflow run; None: configs without ``run_id`` (tests of the search alone).
    """

    record = None  #: (a class default, for searchers pickled by an older matscale)

    def __init__(self, points: list[Point], trials_per_point: int, space: dict, *, sampler: str = "tpe",
                 done: dict | None = None, first=(), record=None):
        super().__init__(metric=OBJECTIVE, mode="min")
        self.space = space
        self.sampler = sampler
        self.trials_per_point = trials_per_point
        self.points = {p.key: p for p in points}
        self.done = dict(done or {})
        self.record = record
        first = set(first)
        order = [(p.key, t) for t in range(trials_per_point) for p in points]
        todo = [kt for kt in order if trial_key(*kt) not in self.done]
        self.queue = sorted(todo, key=lambda kt: trial_key(*kt) not in first)  # interrupted ones first
        self.studies: dict[str, optuna.Study] = {}
        self.live: dict[str, tuple[str, int | None, dict | None]] = {}

    def __len__(self) -> int:
        return len(self.queue)

    def _sampler(self, trial_key: str) -> optuna.samplers.BaseSampler:
        seed = zlib.crc32(trial_key.encode())
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, self.trials_per_point // 3))

    def _study(self, key: str) -> optuna.Study:
        if key not in self.studies:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.create_study(direction="minimize", sampler=self._sampler(key))
            dists, _ = distributions(self.space)
            for trial_key, (params, value) in self.done.items():
                if point_of(trial_key) == key and value is not None:
                    known = {k: params[k] for k in dists if k in params}
                    if len(known) == len(dists):
                        study.add_trial(optuna.trial.create_trial(params=known, distributions=dists, value=value))
            self.studies[key] = study
        return self.studies[key]

    def _ask(self, trial_id: str, key: str, trial_key: str) -> dict:
        """New hyperparameters for one trial from its point's study (the fixed values included)."""
        dists, fixed = distributions(self.space)
        study = self._study(key)
        study.sampler = self._sampler(trial_key)
        trial = study.ask(dists)
        self.live[trial_id] = (key, trial.number, None)
        return {**fixed, **trial.params}

    def suggest(self, trial_id: str) -> dict | None:
        """The next trial's :class:`sweeps.trial.TrialConfig` as Tune's config dict."""
        from sweeps.trial import TrialConfig

        if not self.queue:
            return Searcher.FINISHED
        key, t = self.queue.pop(0)
        trial = TrialConfig.of(self.points[key], t)
        if self.record is None:
            trial.hparams = self._ask(trial_id, key, trial.key)
            return trial.as_dict()
        trial = self.record.open(trial, lambda: self._ask(trial_id, key, trial.key))
        if trial_id not in self.live:  # the values of record: the study learns them when the trial ends
            self.live[trial_id] = (key, None, trial.hparams)
        return trial.as_dict()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        key, number, params = self.live.pop(trial_id)
        value = None if result is None or error else result.get(OBJECTIVE)
        complete = value is not None and value == value
        study = self._study(key)
        if number is not None:
            study.tell(number, value if complete else None,
                       state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL)
        elif complete and all(k in params for k in distributions(self.space)[0]):
            dists, _ = distributions(self.space)
            study.add_trial(optuna.trial.create_trial(params={k: params[k] for k in dists}, distributions=dists,
                                                      value=value))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def get_state(self) -> dict:
        return {k: getattr(self, k) for k in ("space", "sampler", "trials_per_point", "points", "done", "queue",
                                               "record", "studies", "live")}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)


class PerPointScheduler(FIFOScheduler):
    """Early stopping that compares trials only within their own scaling point.

    Args:
        kind: ``"asha"`` or ``"median"``. max_epochs: the budget. grace_epochs: epochs before any stop.
        reduction_factor: ASHA's η. min_trials: median rule's minimum number of trials to compare.
    """

    def __init__(self, kind: str, max_epochs: int, grace_epochs: int = 1, reduction_factor: float = 2,
                 min_trials: int = 2, on_stop=None):
        super().__init__()
        self.kind, self.max_epochs, self.grace = kind, max_epochs, grace_epochs
        self.reduction_factor, self.min_trials = reduction_factor, min_trials
        self.on_stop = on_stop  #: called with the trial config before a trial is stopped early
        self.subs: dict[str, TrialScheduler] = {}

    def _sub(self, trial) -> TrialScheduler:
        key = trial.config.get("point", "")
        if key not in self.subs:
            if self.kind == "asha":
                sub = ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode="min",
                                    max_t=self.max_epochs + 1,  # the trial itself ends at max_epochs
                                    grace_period=self.grace,
                                    reduction_factor=self.reduction_factor)
            else:
                sub = MedianStoppingRule(time_attr="training_iteration", metric=METRIC, mode="min",
                                         grace_period=self.grace, min_samples_required=self.min_trials)
            self.subs[key] = sub
        return self.subs[key]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the metric is fixed: METRIC, minimised

    def on_trial_add(self, tune_controller, trial) -> None:
        self._sub(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if METRIC not in result:
            return TrialScheduler.CONTINUE
        decision = self._sub(trial).on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and self.on_stop is not None:
            self.on_stop(trial.config)
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result and METRIC in result:
            self._sub(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._sub(trial).on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._sub(trial).on_trial_error(tune_controller, trial)

    def debug_string(self) -> str:
        return f"PerPointScheduler({self.kind}, {len(self.subs)} points)"
