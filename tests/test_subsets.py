"""Coverage subsets: each strategy gives the sizes and contents it promises, nested, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from gnn import subsets
from gnn.errors import InputError
from gnn.splits import grouped_split, nested_subset
from gnn.store import Store

STRATEGIES = ["random", "stratified", "stratified:elements", "exclude:contains:Fe", "exclude:rich:Cu:0.3",
              "exclude:system:cubic", "diverse"]


@pytest.fixture(scope="module")
def store(synth_dir):
    return Store(synth_dir)


@pytest.fixture(scope="module")
def train(store):
    return grouped_split(store.formulas)["train"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sizes_nesting_determinism_and_the_fixed_splits(store, train, strategy):
    small, large = (subsets.select(store, train, strategy, n_train=n, subset_seed=3) for n in (40, 120))
    assert len(small) == 40 and len(large) == 120 and len(set(large)) == 120
    assert set(small) <= set(large)  # a data axis grows one subset, it does not redraw it
    assert set(large) <= set(train)  # never a validation or test structure
    again = subsets.select(store, train, strategy, n_train=120, subset_seed=3)
    assert np.array_equal(np.sort(large), np.sort(again))


def test_random_is_the_nested_subset_of_before(store, train):
    assert np.array_equal(subsets.select(store, train, "random", n_train=50, subset_seed=2),
                          nested_subset(train, n_train=50, subset_seed=2))


def test_exclude_rules_leave_out_what_they_name(store, train):
    frac = subsets.fractions(store)
    fe, cu = 26, 29
    assert (frac[train, fe] > 0).any() and (frac[train, cu] >= 0.3).any()  # the rules have something to remove
    no_fe = subsets.select(store, train, "exclude:contains:Fe", n_train=100)
    assert (frac[no_fe, fe] == 0).all()
    lean_cu = subsets.eligible(store, train, "exclude:rich:Cu:0.3")
    assert (frac[lean_cu, cu] < 0.3).all() and len(lean_cu) == int((frac[train, cu] < 0.3).sum())
    systems = subsets.strata(store, "system")
    not_cubic = subsets.eligible(store, train, "exclude:system:cubic")
    assert (systems[not_cubic] != subsets.SYSTEMS.index("cubic")).all()
    with pytest.raises(InputError, match="can draw from"):
        subsets.select(store, train, "exclude:contains:Fe", n_train=len(train))


@pytest.mark.parametrize("by", ["system", "elements"])
def test_stratified_prefixes_keep_the_proportions(store, train, by):
    labels = subsets.strata(store, by)[train]
    share = {lab: np.mean(labels == lab) for lab in np.unique(labels)}
    for n in (30, 60, 150):
        picked = subsets.strata(store, by)[subsets.select(store, train, f"stratified:{by}", n_train=n)]
        for lab, s in share.items():  # every stratum within one structure of its proportional share
            assert abs(np.sum(picked == lab) - s * n) <= 1.0 + 1e-9


def test_diverse_subsets_are_more_diverse_than_random_ones(store, train):
    diverse = subsets.subset_stats(store, subsets.select(store, train, "diverse", n_train=40))["subset_diversity"]
    random = [subsets.subset_stats(store, subsets.select(store, train, "random", n_train=40, subset_seed=s))
              ["subset_diversity"] for s in range(10)]
    assert diverse > max(random)


@pytest.mark.parametrize("bad,message", [("clustered", "unknown subset strategy"), ("exclude:rich:Xx", "not an element"),
                                         ("exclude:rich:Fe:1.5", r"\(0, 1\]"), ("stratified:colour", "unknown"),
                                         ("exclude:system:round", "unknown")])
def test_bad_strategies_are_named(bad, message):
    with pytest.raises(InputError, match=message):
        subsets.parse(bad, field="subset")
