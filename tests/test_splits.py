import numpy as np
import pytest

from gnn.errors import InputError
from gnn.splits import grouped_split, nested_subset


def formulas(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return [f"F{k}" for k in rng.zipf(1.6, size=n) % 700]


def test_grouped_split_is_disjoint_by_formula_and_deterministic():
    f = formulas()
    s = grouped_split(f)
    assert sum(len(v) for v in s.values()) == len(f)
    sets = {k: {f[i] for i in v} for k, v in s.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    for name, share in (("val", 0.1), ("test", 0.1), ("train", 0.8)):
        assert abs(len(s[name]) / len(f) - share) < 0.04
    again = grouped_split(f)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    assert not np.array_equal(grouped_split(f, split_seed=1)["test"], s["test"])


def test_nested_subsets_grow_inside_each_other():
    train = grouped_split(formulas())["train"]
    prev = set()
    for frac in (0.05, 0.1, 0.25, 0.5, 1.0):
        sub = nested_subset(train, fraction=frac)
        assert len(sub) == int(np.ceil(frac * len(train)))
        assert prev <= set(sub.tolist())
        prev = set(sub.tolist())
    assert set(nested_subset(train, n_train=100).tolist()) <= set(nested_subset(train, n_train=101).tolist())
    assert prev == set(train.tolist())


@pytest.mark.parametrize("kwargs,field", [({"fraction": 0.0}, "fraction"), ({"fraction": 1.2}, "fraction"),
                                          ({"n_train": 10**6}, "n_train"), ({}, "fraction")])
def test_subset_bad_input(kwargs, field):
    with pytest.raises(InputError, match=f"field '{field}'"):
        nested_subset(np.arange(100), **kwargs)
