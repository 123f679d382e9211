"""HPO sharing between grid points (``hpo.share: neighbours``): who is a neighbour, what a trial takes from one,
and that nothing changes without it."""

import pickle

import pytest

from gnn.errors import InputError
from sweeps.search import PointSearcher, neighbours
from sweeps.spec import Point

SPACE = {"lr": {"log_uniform": [1e-4, 1e-2]}, "weight_decay": {"log_uniform": [1e-5, 1e-2]}, "batch_size": 32}


def _grid(seeds=(0,)):
    return [Point("cgc", n, d, s) for s in seeds for n in (1e4, 4e4, 1.6e5) for d in (100, 200, 400)]


def test_a_neighbourhood_is_one_grid_step_in_n_and_d_any_seed_nearest_first():
    points = _grid(seeds=(0, 1)) + [Point("transformer", 4e4, 200, 0)]
    near = neighbours(points)
    mid = Point("cgc", 4e4, 200, 0).key
    assert len(near[mid]) == 18 and near[mid][:2] == [mid, Point("cgc", 4e4, 200, 1).key]
    assert set(near[mid][2:6]) == {Point("cgc", 4e4, d, 0).key for d in (100, 400)} | \
        {Point("cgc", n, 200, 0).key for n in (1e4, 1.6e5)}  # one step, same seed, before diagonals
    corner = Point("cgc", 1e4, 100, 1).key
    assert set(near[corner]) == {Point("cgc", n, d, s).key for n in (1e4, 4e4) for d in (100, 200) for s in (0, 1)}
    assert near[Point("transformer", 4e4, 200, 0).key] == [Point("transformer", 4e4, 200, 0).key]


def _run(searcher, losses):
    """Hand out every trial; each finishes at once with ``losses(point_key, hparams)``."""
    out = []
    while True:
        tid = f"t{len(out)}"
        cfg = searcher.suggest(tid)
        if not isinstance(cfg, dict):
            return out
        out.append(cfg)
        searcher.on_trial_complete(tid, {"best_val_loss": losses(cfg["point"], cfg["hparams"])})


def test_a_second_trial_takes_the_neighbourhoods_best_configuration_relative_to_its_point():
    """Losses = a point level (a power law in N and D) × a penalty for lr away from 3e-3: after removing the point
    level, the neighbourhood's best configuration is the one with lr nearest 3e-3, and trial 1 takes it."""
    import math

    points = _grid(seeds=(0, 1))

    def loss(point, hp):
        n, d = (float(v) for v in point.split("-N")[1].split("-s")[0].split("-D"))
        return n ** -0.1 * d ** -0.2 * math.exp(math.log10(hp["lr"] / 3e-3) ** 2)

    trials = _run(PointSearcher(points, 2, SPACE, share="neighbours"), loss)
    by_key = {f"{c['point']}-t{c['trial_index']}": c for c in trials}
    assert all("hpo_from" not in c for c in trials if c["trial_index"] == 0)  # trial 0: the point's own draw
    second = [c for c in trials if c["trial_index"] == 1]
    assert all("hpo_from" in c for c in second)
    near = neighbours(points)
    for c in second:
        source = by_key[c["hpo_from"]]
        assert source["point"] in near[c["point"]]  # (a trial 1 finished earlier counts too)
        n_src, n = (float(k.split("-N")[1].split("-D")[0]) for k in (source["point"], c["point"]))
        assert c["hparams"]["lr"] == pytest.approx(min(1e-2, max(1e-4, source["hparams"]["lr"] * (n_src / n) ** 0.5)))
        assert c["hparams"]["batch_size"] == 32

    def off(c):
        return abs(math.log10(c["hparams"]["lr"] / 3e-3))

    first = [c for c in trials if c["trial_index"] == 0]
    assert sum(map(off, second)) / len(second) < 0.5 * sum(map(off, first)) / len(first)


def test_rescaled_learning_rate_across_model_sizes_and_bounds():
    from sweeps.search import distributions

    space = {"lr": {"log_uniform": [1e-4, 1e-2]}}
    small, large = Point("cgc", 1e4, 100, 0), Point("cgc", 4e4, 100, 0)
    s = PointSearcher([small, large], 2, space, share="neighbours")
    dists = distributions(space)[0]
    assert s._shared(large.key, s._study(large.key), dists) is None  # no neighbour has finished
    s.results = {small.key: [({"lr": 4e-3}, 0.7, "s-t0"), ({"lr": 2e-3}, 0.5, "s-t1")]}
    params, source = s._shared(large.key, s._study(large.key), dists)
    assert source == "s-t1" and params["lr"] == pytest.approx(2e-3 * 0.5)  # the best one, × sqrt(1e4 / 4e4)
    s.results = {large.key: [({"lr": 9e-3}, 0.5, "l-t0")]}
    params, _ = s._shared(small.key, s._study(small.key), dists)
    assert params["lr"] == 1e-2  # 9e-3 × 2, clipped to the search space


def test_without_sharing_nothing_changes():
    points = _grid()
    plain = _run(PointSearcher(points, 2, SPACE), lambda p, hp: hp["lr"])
    again = _run(PointSearcher(points, 2, SPACE, share="none"), lambda p, hp: hp["lr"])
    assert [c["hparams"] for c in plain] == [c["hparams"] for c in again]
    assert not any("hpo_from" in c for c in plain)


def test_a_shared_configuration_is_not_tried_twice_and_state_survives_pickling():
    points = [Point("cgc", 1e4, d, 0) for d in (100, 200)]
    s = PointSearcher(points, 3, {"lr": {"log_uniform": [1e-4, 1e-2]}}, share="neighbours")
    trials = _run(s, lambda p, hp: hp["lr"])
    taken = [c["hparams"]["lr"] for c in trials if c["point"] == points[1].key]
    assert len(set(taken)) == 3
    restored = PointSearcher([], 1, {})
    restored.set_state(pickle.loads(pickle.dumps(s.get_state())))
    assert restored.share == "neighbours" and restored.results.keys() == s.results.keys()


def test_spec_share_is_checked_and_keeps_old_hashes(tmp_path):
    import yaml

    from sweeps.spec import load_spec

    base = {"experiment": "e", "dataset": {"synthetic": {"n": 100}}, "archs": ["cgc"],
            "axes": {"n_train": [50], "n_params": [1e4], "seeds": [0]}, "budget": {"epochs": 2},
            "hpo": {"trials_per_point": 2}}

    def spec(hpo):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump({**base, "hpo": {**base["hpo"], **hpo}}))
        return load_spec(path)

    assert spec({}).hash == spec({"share": "none"}).hash != spec({"share": "neighbours"}).hash
    assert spec({"share": "neighbours"}).hpo["share"] == "neighbours"
    with pytest.raises(InputError, match="hpo.share.*neighbours or none"):
        spec({"share": "neighbors-ish"})


@pytest.mark.slow
def test_a_sharing_sweep_records_where_a_configuration_came_from(tmp_path):
    """Two points one data size apart, one trial at a time: each point's trial 1 takes the other point's finished
    trial 0 configuration, and its run says so."""
    import ray

    from sweeps import record, tracking
    from sweeps.driver import run_sweep
    from sweeps.spec import load_spec
    from test_sweeps import write_spec

    spec = load_spec(write_spec(tmp_path, tmp_path / "data", max_concurrent=1, budget={"epochs": 1, "patience": 2},
                                hpo={"trials_per_point": 2, "share": "neighbours",
                                     "space": {"lr": {"log_uniform": [1e-4, 1e-2]}, "batch_size": 32}}))
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        assert run_sweep(spec, progress=False)["status"] == "FINISHED"
    finally:
        ray.shutdown()
    c = tracking.client(tracking.normalise_uri(spec.tracking_uri))
    runs = record.trial_runs(c, c.get_experiment_by_name(spec.experiment).experiment_id, spec.hash)
    by_key = {r.data.tags[record.TRIAL_KEY]: r for r in runs}
    shared = [r for r in runs if record.HPO_FROM in r.data.tags]
    assert len(runs) == 4 and len(shared) == 2
    for r in shared:
        source = by_key[r.data.tags[record.HPO_FROM]]
        assert r.data.tags[record.TRIAL_KEY].endswith("-t1") and source.data.tags[record.TRIAL_KEY].endswith("-t0")
        assert r.data.tags[record.POINT] != source.data.tags[record.POINT]
        assert float(r.data.params["hp.lr"]) == pytest.approx(float(source.data.params["hp.lr"]))  # same N
