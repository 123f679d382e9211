"""Which training structures a run sees: nested subsets chosen by a coverage strategy.

Every strategy orders the training split once (deterministically, from ``subset_seed``); a run with ``n_train``
takes the first ``n_train`` of that order, so each strategy's smaller subsets lie inside its larger ones and a
data axis measures the strategy, not a reshuffle. Validation and test splits never change.

Strategies (the ``subset`` axis of a sweep, ``TrainConfig.subset``):

    random                 a seeded permutation (the default; :func:`gnn.splits.nested_subset`)
    stratified[:BY]        proportional to strata, interleaved so every prefix keeps the proportions;
                           BY = system (crystal system from spglib at symprec 0.25 Å, loose enough to
                           see through small strains; the default) or
                           elements (number of distinct elements: unary, binary, ternary, …)
    exclude:RULE           random order over the structures the rule leaves in; RULE =
                           contains:El (no El at all), rich:El[:FRAC] (El's atomic fraction < FRAC, default 0.5),
                           system:NAME (not of that crystal system)
    diverse                farthest-point sampling on the descriptors below, from a seeded first structure

Descriptors (one row per structure): the atomic fractions of elements 1…100, the standardised volume per atom
and the standardised log number of atoms per cell, each scaled by 0.5. A subset's *diversity* is the RMS
distance of its descriptors to their centroid (:func:`subset_stats`), logged with every run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from gnn.errors import InputError
from gnn.splits import nested_subset

SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
_SYSTEM_START = (1, 3, 16, 75, 143, 168, 195)  #: first space-group number of each crystal system
STRATA = ("system", "elements")
SYMPREC = 0.25  #: Å; the synthetic metals are strained by ~2 %, which 0.1 Å reads as triclinic


def parse(strategy: str, **where) -> tuple[str, tuple]:
    """``strategy`` → (kind, arguments); an unknown or malformed strategy is an :class:`InputError`."""
    parts = str(strategy).split(":")
    kind = parts[0]
    bad = InputError(f"unknown subset strategy {strategy!r}; choose random, stratified[:system|:elements], "
                     "exclude:contains:El, exclude:rich:El[:FRAC], exclude:system:NAME or diverse", **where)
    if kind in ("random", "diverse") and len(parts) == 1:
        return kind, ()
    if kind == "stratified" and len(parts) <= 2:
        by = parts[1] if len(parts) == 2 else "system"
        if by not in STRATA:
            raise bad
        return kind, (by,)
    if kind == "exclude" and len(parts) >= 3:
        rule, arg = parts[1], parts[2]
        if rule == "system" and len(parts) == 3 and arg in SYSTEMS:
            return kind, (rule, arg)
        if rule in ("contains", "rich") and len(parts) <= (3 if rule == "contains" else 4):
            from pymatgen.core import Element  # only here: training from a built store needs no pymatgen

            if not Element.is_valid_symbol(arg):
                raise InputError(f"{arg!r} is not an element symbol (in {strategy!r})", **where)
            frac = 0.5
            if len(parts) == 4:
                try:
                    frac = float(parts[3])
                except ValueError:
                    raise InputError(f"{parts[3]!r} is not a fraction (in {strategy!r})", **where) from None
                if not 0 < frac <= 1:
                    raise InputError(f"the fraction must be in (0, 1] (in {strategy!r})", **where)
            return kind, (rule, int(Element(arg).Z), frac)
    raise bad


def _structure_ids(store) -> tuple[np.ndarray, np.ndarray]:
    ptr = store.tensors["node_ptr"].numpy()
    sizes = np.diff(ptr)
    return np.repeat(np.arange(len(sizes)), sizes), sizes


def fractions(store) -> np.ndarray:
    """``[n, 101]`` atomic fraction of each element (column Z) in every structure."""
    sid, sizes = _structure_ids(store)
    z = store.tensors["numbers"].numpy().astype(int)
    counts = np.zeros((len(sizes), 101))
    np.add.at(counts, (sid, np.clip(z, 0, 100)), 1.0)
    return counts / sizes[:, None]


def descriptors(store) -> np.ndarray:
    """``[n, 102]`` composition/structure descriptors (see the module docstring)."""
    _, sizes = _structure_ids(store)
    volume = np.abs(np.linalg.det(store.tensors["cell"].double().numpy())) / sizes
    extra = np.stack([volume, np.log(sizes)], axis=1)
    extra = (extra - extra.mean(0)) / np.maximum(extra.std(0), 1e-9)
    return np.concatenate([fractions(store)[:, 1:], 0.5 * extra], axis=1).astype(np.float32)


def crystal_systems(store, progress: bool = False) -> np.ndarray:
    """Index into :data:`SYSTEMS` of every structure (spglib at :data:`SYMPREC`; triclinic when it finds nothing)."""
    os.environ.setdefault("SPGLIB_WARNING", "OFF")  # spglib prints its failed refinements to stderr otherwise
    import spglib
    from tqdm.auto import tqdm

    t = store.tensors
    ptr = t["node_ptr"].numpy()
    out = np.zeros(len(store), dtype=int)
    for i in tqdm(range(len(store)), desc="crystal systems", unit="structure", disable=None if progress else True):
        cell = t["cell"][i].double().numpy()
        pos = t["pos"][ptr[i]:ptr[i + 1]].double().numpy()
        frac = pos @ np.linalg.inv(cell)
        with warnings.catch_warnings():  # spglib 2.5+ warns about its error-handling switch at every call
            warnings.simplefilter("ignore", DeprecationWarning)
            data = spglib.get_symmetry_dataset((cell, frac % 1.0, t["numbers"][ptr[i]:ptr[i + 1]].numpy()),
                                               symprec=SYMPREC)
        number = data.number if data is not None else 1
        out[i] = int(np.searchsorted(_SYSTEM_START, number, side="right") - 1)
    return out


def strata(store, by: str) -> np.ndarray:
    """Stratum label of every structure: crystal system index, or number of distinct elements."""
    if by == "system":
        return _cached(store, "strata-system", lambda: crystal_systems(store))
    return (fractions(store) > 0).sum(axis=1)


def eligible(store, train_idx: np.ndarray, strategy: str) -> np.ndarray:
    """The training indices a strategy may draw from (all of them, except for ``exclude``)."""
    kind, args = parse(strategy)
    if kind != "exclude":
        return np.asarray(train_idx)
    rule = args[0]
    if rule == "system":
        keep = strata(store, "system")[train_idx] != SYSTEMS.index(args[1])
    else:
        f = fractions(store)[train_idx, args[1]]
        keep = f == 0 if rule == "contains" else f < args[2]
    return np.asarray(train_idx)[keep]


def order(store, train_idx: np.ndarray, strategy: str, subset_seed: int = 0, n_max: int | None = None) -> np.ndarray:
    """Training indices in the strategy's order (its first n are the subset of size n); at least ``n_max`` long
    for ``diverse``, whose farthest-point order is only computed that far (the rest follows at random)."""
    kind, args = parse(strategy)
    rng = np.random.default_rng(subset_seed)
    pool = eligible(store, train_idx, strategy)
    if kind in ("random", "exclude"):
        return pool[rng.permutation(len(pool))]
    if kind == "stratified":
        labels = strata(store, args[0])[pool]
        key = np.empty(len(pool))
        for lab in np.unique(labels):  # j-th member of a stratum of size m sits at (j + u)/m: proportional prefixes
            members = np.flatnonzero(labels == lab)
            members = members[rng.permutation(len(members))]
            key[members] = (np.arange(len(members)) + rng.uniform(0.0, 1.0)) / len(members)
        return pool[np.lexsort((rng.random(len(pool)), key))]
    n_max = len(pool) if n_max is None else min(int(n_max), len(pool))
    name = f"diverse-seed{subset_seed}-{_digest(pool)}"
    cached = _load(store, name)
    if cached is None or len(cached) < n_max:
        cached = _farthest_points(descriptors(store)[pool], n_max, rng)
        _write_cache(store, name, cached)
    first = np.asarray(cached[:n_max])
    rest = np.setdiff1d(np.arange(len(pool)), first)
    return pool[np.concatenate([first, rest[rng.permutation(len(rest))]])]


def _farthest_points(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy farthest-point order of the rows of ``x`` (first row at random): ``[n]`` row indices."""
    chosen = np.empty(n, dtype=int)
    chosen[0] = rng.integers(len(x))
    dist = np.linalg.norm(x - x[chosen[0]], axis=1)
    for k in range(1, n):
        chosen[k] = int(np.argmax(dist))
        np.minimum(dist, np.linalg.norm(x - x[chosen[k]], axis=1), out=dist)
    return chosen


def select(store, train_idx: np.ndarray, strategy: str = "random", *, fraction: float | None = None,
           n_train: int | None = None, subset_seed: int = 0) -> np.ndarray:
    """The nested subset of the training split for a run (``fraction`` is of the whole training split)."""
    if parse(strategy, field="subset")[0] == "random":
        return nested_subset(train_idx, fraction=fraction, n_train=n_train, subset_seed=subset_seed)
    if (fraction is None) == (n_train is None):
        raise InputError("give exactly one of fraction and n_train", field="fraction")
    n = int(np.ceil(fraction * len(train_idx))) if fraction is not None else int(n_train)
    available = len(eligible(store, train_idx, strategy))
    if not 1 <= n <= available:
        raise InputError(f"n_train must be between 1 and the {available} training structures that subset "
                         f"{strategy!r} can draw from, got {n}", field="n_train")
    return np.sort(order(store, train_idx, strategy, subset_seed, n_max=n)[:n])


def subset_sha(store, idx: np.ndarray) -> str:
    """A short hash of the subset's entry ids (order-free), logged with every run so its contents can be checked."""
    import hashlib

    ids = sorted(store.ids[i] for i in np.asarray(idx))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def subset_stats(store, idx: np.ndarray) -> dict[str, float]:
    """What a subset covers: distinct elements and formulas, and its diversity (RMS distance to the centroid)."""
    idx = np.asarray(idx)
    d = descriptors(store)[idx]
    formulas = {store.formulas[i] for i in idx}
    return {"subset_elements": float((d[:, :100] > 0).any(axis=0).sum()),  # the element-fraction columns
            "subset_formulas": float(len(formulas)),
            "subset_diversity": float(np.sqrt(((d - d.mean(0)) ** 2).sum(axis=1).mean()))}


def _digest(idx: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:10]


def _cache_file(store, name: str) -> Path:
    return Path(store.path) / "subsets" / f"{name}-{store.meta['content_hash'][:10]}.npy"


def _load(store, name: str) -> np.ndarray | None:
    path = _cache_file(store, name)
    return np.load(path) if path.exists() else None


def _cached(store, name: str, compute):
    """A per-store cached array (computed and written when missing; a read-only store is not cached)."""
    value = _load(store, name)
    if value is None:
        value = compute()
        _write_cache(store, name, value)
    return value


def _write_cache(store, name: str, value: np.ndarray) -> None:
    path = _cache_file(store, name)
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
        np.save(tmp, value)
        tmp.replace(path)
    except OSError:
        pass  # a store on read-only media: compute again next time
