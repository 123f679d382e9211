"""HPO inside each scaling point: one Optuna study per point, behind one Ray Tune ``Searcher``.

``tune.grid_search`` cannot be combined with ``OptunaSearch``, and one global study would let trials of
different sizes inform each other. :class:`PointSearcher` walks the grid itself: it hands out trial ``t`` of
every point before trial ``t + 1`` of any, so each study's sampler sees the earlier trials of its own point.
:class:`PerPointScheduler` likewise keeps one ASHA or median-stopping scheduler per point, so early stopping
only ever compares trials of the same point.

With ``hpo.share: neighbours`` a point's study is warm-started from its grid neighbours (:func:`neighbours`):
trial ``t ≥ 1`` of a point first tries the best configuration found so far at a finished neighbouring point that
it has not tried yet (same model size first: its learning rate carries over as is; from another size the learning
rate is rescaled by √(N_neighbour / N), i.e. inversely with the trunk width, as μP prescribes for Adam), then its
own study's draws. Trial 0 is always the point's own draw, so every point still explores.
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
SHARE = ("none", "neighbours")  #: the values of ``hpo.share``


def neighbours(points: list[Point]) -> dict[str, list[str]]:
    """Each point's grid neighbours (same arch, subset, source and seed): the next smaller and larger data size
    at its model size, then the next smaller and larger model size at its data size."""
    lines: dict[tuple, list[Point]] = {}
    for p in points:
        same = (p.arch, p.subset, p.source_n, p.seed)
        lines.setdefault(same + ("D", p.n_params), []).append(p)
        lines.setdefault(same + ("N", p.n_train), []).append(p)
    out: dict[str, list[str]] = {p.key: [] for p in points}
    for axis in ("D", "N"):
        for line_key, line in lines.items():
            if line_key[4] != axis:
                continue
            line.sort(key=lambda q: q.n_train if axis == "D" else q.n_params)
            for i, q in enumerate(line):
                out[q.key] += [line[j].key for j in (i - 1, i + 1) if 0 <= j < len(line)]
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
        """The best configuration of the first finished neighbour whose best this point has not tried, rescaled to
        this point's size; None when there is none."""
        point = self.points[key]
        tried = [t.params for t in study.trials]
        for near in self.near.get(key, []):
            results = [r for r in self.results.get(near, []) if all(k in r[0] for k in dists)]
            if not results:
                continue
            params, _, source = min(results, key=lambda r: r[1])
            params = {k: params[k] for k in dists}
            if "lr" in params and self.points[near].n_params != point.n_params:
                low, high = dists["lr"].low, dists["lr"].high
                params["lr"] = min(high, max(low, params["lr"] * (self.points[near].n_params / point.n_params) ** 0.5))
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
