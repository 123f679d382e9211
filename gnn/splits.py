"""Deterministic splits grouped by reduced formula, and nested training subsets.

* :func:`grouped_split`: the distinct reduced formulas are shuffled with ``split_seed`` and dealt to test,
  then validation, until each holds its share of *entries*; the rest is training. No formula is in two
  splits, and the split never depends on the training fraction or the model seed.
* :func:`nested_subset`: the training split is permuted once (``subset_seed``); a fraction f (or an absolute
  ``n_train``) takes the first ⌈f·n⌉ of that permutation, so every smaller subset lies inside every larger one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gnn.defaults import DEFAULT_SPLIT
from gnn.errors import InputError


def grouped_split(formulas: Sequence[str], fractions: tuple[float, float, float] = DEFAULT_SPLIT,
                  split_seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of ``train``, ``val`` and ``test`` (each sorted), grouped by formula."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise InputError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}",
                         field="split")
    formulas = np.asarray(formulas)
    unique, group = np.unique(formulas, return_inverse=True)
    sizes = np.bincount(group, minlength=len(unique))
    order = np.random.default_rng(split_seed).permutation(len(unique))
    n = len(formulas)
    want = {"test": fractions[2] * n, "val": fractions[1] * n}
    assign = np.full(len(unique), 0)  # 0 train, 1 val, 2 test
    filled = {"test": 0, "val": 0}
    k = 0
    for name, code in (("test", 2), ("val", 1)):
        while k < len(order) and filled[name] + sizes[order[k]] / 2 <= want[name]:
            assign[order[k]] = code
            filled[name] += sizes[order[k]]
            k += 1
    where = assign[group]
    return {"train": np.flatnonzero(where == 0), "val": np.flatnonzero(where == 1),
            "test": np.flatnonzero(where == 2)}


def nested_subset(train_idx: np.ndarray, *, fraction: float | None = None, n_train: int | None = None,
                  subset_seed: int = 0) -> np.ndarray:
    """The first ⌈f·n⌉ (or ``n_train``) entries of one fixed seeded permutation of ``train_idx``."""
    n = len(train_idx)
    if (fraction is None) == (n_train is None):
        raise InputError("give exactly one of fraction and n_train", field="fraction")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise InputError(f"fraction must be in (0, 1], got {fraction}", field="fraction")
        n_train = math.ceil(fraction * n)
    if not 1 <= n_train <= n:
        raise InputError(f"n_train must be between 1 and the training split size {n}, got {n_train}",
                         field="n_train")
    perm = np.random.default_rng(subset_seed).permutation(n)
    return np.asarray(train_idx)[perm[:n_train]]
