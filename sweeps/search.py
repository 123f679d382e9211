"""HPO inside each scaling point: one Optuna study per point, behind one Ray Tune ``Searcher``.

``tune.grid_search`` cannot be combined with ``OptunaSearch``, and one global study would let trials of
different sizes inform each other. :class:`PointSearcher` walks the grid itself: it hands out trial ``t`` of
every point before trial ``t + 1`` of any, so each study's sampler sees the earlier trials of its own point.
:class:`PerPointScheduler` likewise keeps one ASHA or median-stopping scheduler per point, so early stopping
only ever compares trials of the same point.

With ``hpo.share: neighbours`` a point's study is warm-started from its neighbourhood (:func:`neighbours`: the
points at most one grid step away in N and in D, any seed): trial ``t ≥ 1`` of a point tries the configuration
that did best, relative to its own point, among the neighbourhood's finished trials and that this point has not
tried (:meth:`PointSearcher._shared`; from another model size the learning rate is rescaled by √(N_other / N), i.e.
inversely with the trunk width, as μP prescribes for Adam). Trial 0 is always the point's own draw, so every point
still explores, and the neighbourhood pools those draws: at 2 trials per point the second is the best of many.
"""

from __future__ import annotations

import pickle
import zlib

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import Searcher

from sweeps.record import HPO_FROM, point_of, trial_key
from sweeps.spec import Point

METRIC = "val_loss"  #: what schedulers watch each epoch
OBJECTIVE = "best_val_loss"  #: what each Optuna study minimises


def neighbours(points: list[Point]) -> dict[str, list[str]]:
    """Each point's neighbourhood: the points of its arch and variant (any seed, itself included) at most one
    step away on the grid of model sizes and on the grid of data sizes, nearest first."""
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        groups.setdefault((p.arch, p.subset, p.source_n), []).append(p)
    out: dict[str, list[str]] = {}
    for group in groups.values():
        n_grid = sorted({q.n_params for q in group})
        d_grid = sorted({q.n_train for q in group})
        at = {q.key: (n_grid.index(q.n_params), d_grid.index(q.n_train)) for q in group}
        for p in group:
            i, j = at[p.key]
            near = [q for q in group if abs(at[q.key][0] - i) <= 1 and abs(at[q.key][1] - j) <= 1]
            near.sort(key=lambda q: (abs(at[q.key][0] - i) + abs(at[q.key][1] - j), q.seed != p.seed, q.key))
            out[p.key] = [q.key for q in near]
    return out


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
        share: ``"neighbours"`` warm-starts each point from its grid neighbours (see the module docstring).
    """

    record = None  #: (class defaults, for searchers pickled by an older matscale: read, never written)
    share = "none"
    near: dict = {}

    def __init__(self, points: list[Point], trials_per_point: int, space: dict, *, sampler: str = "tpe",
                 done: dict | None = None, first=(), record=None, share: str = "none"):
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
        self.share = share
        self.near = neighbours(points) if share == "neighbours" else {}
        self.results: dict[str, list[tuple[dict, float, str]]] = {}  #: per point: (params, objective, trial key)
        self.trial_keys: dict[str, str] = {}  #: Tune's trial id → trial key, while the trial runs
        for key, (params, value) in self.done.items():
            if value is not None:
                self.results.setdefault(point_of(key), []).append((params, value, key))

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

    def _ask(self, trial_id: str, key: str, trial_key: str, index: int = 0) -> tuple[dict, str | None]:
        """New hyperparameters for one trial from its point's study (the fixed values included), and the neighbour
        trial whose configuration it takes (None: the study's own draw)."""
        dists, fixed = distributions(self.space)
        study = self._study(key)
        study.sampler = self._sampler(trial_key)
        shared = self._shared(key, study, dists) if self.share == "neighbours" and index >= 1 else None
        if shared is not None:
            study.enqueue_trial(shared[0])
        trial = study.ask(dists)
        self.live[trial_id] = (key, trial.number, None)
        return {**fixed, **trial.params}, None if shared is None else shared[1]

    def _shared(self, key: str, study: optuna.Study, dists: dict) -> tuple[dict, str] | None:
        """The most promising configuration finished in this point's neighbourhood that it has not tried, rescaled
        to its size; None when there is none.

        Trials at different points are compared by their residual log loss after a least-squares fit of the point
        level, log L ≈ a + b·log N + c·log D, over the neighbourhood's finished trials (with fewer than 4 trials at 3
        points, by the loss itself): the configuration that beat its own point's expected loss by most."""
        import numpy as np

        point = self.points[key]
        pool = [(params, value, source, self.points[near]) for near in self.near.get(key, [])
                for params, value, source in self.results.get(near, [])
                if value is not None and value > 0 and all(k in params for k in dists)]
        if not pool:
            return None
        y = np.log([v for _, v, _, _ in pool])
        x = np.array([[1.0, np.log(q.n_params), np.log(q.n_train)] for _, _, _, q in pool])
        score = y
        if len(pool) >= 4 and len({q.key for _, _, _, q in pool}) >= 3:
            coef = np.linalg.lstsq(x, y, rcond=None)[0]
            score = y - x @ coef
        tried = [t.params for t in study.trials]
        for i in np.argsort(score, kind="stable"):
            params, _, source, q = pool[i]
            params = {k: params[k] for k in dists}
            if "lr" in params and q.n_params != point.n_params:
                low, high = dists["lr"].low, dists["lr"].high
                params["lr"] = min(high, max(low, params["lr"] * (q.n_params / point.n_params) ** 0.5))
            if not any(all(_same(t.get(k), v) for k, v in params.items()) for t in tried):
                return params, source
        return None

    def suggest(self, trial_id: str) -> dict | None:
        """The next trial's :class:`sweeps.trial.TrialConfig` as Tune's config dict."""
        from sweeps.trial import TrialConfig

        if not self.queue:
            return Searcher.FINISHED
        key, t = self.queue.pop(0)
        trial = TrialConfig.of(self.points[key], t)
        self.__dict__.setdefault("trial_keys", {})[trial_id] = trial.key
        source: list[str | None] = [None]

        def ask() -> dict:
            hparams, source[0] = self._ask(trial_id, key, trial.key, t)
            return hparams

        if self.record is None:
            trial.hparams = ask()
            return {**trial.as_dict(), **({"hpo_from": source[0]} if source[0] else {})}
        trial = self.record.open(trial, ask)
        if source[0]:
            self.record.tag(trial.run_id, {HPO_FROM: source[0]})
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
        source = self.__dict__.setdefault("trial_keys", {}).pop(trial_id, None)
        if complete:
            done = params if params is not None else study.trials[number].params
            self.__dict__.setdefault("results", {}).setdefault(key, []).append((dict(done), value, source))
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
                                               "record", "studies", "live", "share", "near", "results",
                                               "trial_keys")}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)


def _same(a, b) -> bool:
    """Two hyperparameter values are the same configuration (floats to 1e-9 relative)."""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-9 * max(abs(float(a)), abs(float(b)), 1e-300)
        except (TypeError, ValueError):
            return False
    return a == b


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
