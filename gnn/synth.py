"""Built-in benchmark data: metallic crystals with physically modelled optical labels.

Structures: AFLOW prototypes from pymatgen's library (≤ ``max_sites`` sites, ≤ 3 species), decorated with
random metals, scaled so the volume per atom follows the metallic radii, then strained and rattled.

Labels (a fixed "physics" that does not depend on ``seed``; the seed only draws structures and noise):

* Bonds: every pair (i, j) at distance d gets a smooth weight w_ij = 1 / (1 + exp((d / (r_i + r_j) − 1.18) / 0.04))
  from the metallic radii r; the coordination of atom i is CN_i = Σ_j w_ij.
* Drude frequency: free-electron plasma frequency ħω_p = 37.13 eV · sqrt(n_e / Å⁻³), n_e = Σ valence / V,
  times an environment factor averaged over atoms that lowers it for partly filled d shells, for
  charge transfer (electronegativity differences to neighbours) and for low coordination, times a
  pair-specific factor.
* Interband ε(ω) = 1 + Σ_k s_k E_k² / (E_k² − ω² − iγ_k ω) (Lorentz oscillators, Kramers–Kronig consistent):
  one oscillator per bonded element pair (energy from the electronegativity difference and d filling,
  scaled by (d₀/d)² with the mean bond length, strength ∝ bond weight per atom), one d-band oscillator per
  transition or noble metal (energy from the d filling, bandwidth ∝ √CN), one broad s/p oscillator near
  ħω_p. Each element pair also carries fixed pseudo-random offsets, so learning keeps paying off as more
  pairs are seen many times.
* Gaussian noise of standard deviation ``noise`` on Re ε, Im ε and ω_D: the expected MAE of a perfect
  model is ``noise · sqrt(2/π)`` (the loss floor).
* An optional systematic ``gap`` makes a stand-in for *experimental* data measured on the same kind of
  materials (the target of a Sim2Real transfer study): every oscillator energy shifted by ``shift_ev``, every
  width multiplied by ``broaden`` and ω_D by ``drude_scale``; the structures come from the same distribution.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from gnn.defaults import DEFAULT_CUTOFF, DEFAULT_POINTS, OMEGA_MAX_EV
from gnn.errors import InputError
from gnn.geometry import neighbor_list
from gnn.ingest import write_store
from gnn.store import SPECTRUM, Entry

METALS = ("Li Be Na Mg Al K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Rb Sr Y Zr Nb Mo Ru Rh Pd Ag Cd In Sn "
          "Cs Ba La Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi").split()
PLASMA_EV = 37.13  #: ħω_p = 37.13 eV · sqrt(n_e [Å⁻³]) for free electrons
PHYSICS_SALT = b"matscale-synth-v1"


def omega_grid(points: int = DEFAULT_POINTS) -> np.ndarray:
    """The frequency grid ω (eV): ``points`` values on [0, :data:`OMEGA_MAX_EV`] (2001 reproduces the paper's grid)."""
    return np.linspace(0.0, OMEGA_MAX_EV, points)


@lru_cache(maxsize=None)
def _element_table() -> dict[str, np.ndarray]:
    """Per-metal features indexed like METALS: radius (Å), electronegativity, valence, d filling."""
    from pymatgen.core import Element

    radius, chi, valence, d_fill = [], [], [], []
    for sym in METALS:
        e = Element(sym)
        with warnings.catch_warnings():  # Sn, Pb, Bi have no metallic radius: use the atomic one
            warnings.simplefilter("ignore")
            radius.append(float(e.metallic_radius or e.atomic_radius))
        chi.append(float(e.X))
        g = e.group
        valence.append({1: 1, 2: 2, 11: 1, 12: 2}.get(g, 2 if 3 <= g <= 10 else g - 10))
        d_fill.append(g - 2 if 3 <= g <= 12 else (10 if e.row >= 4 and g >= 13 else 0))
    return {"radius": np.array(radius), "chi": np.array(chi), "valence": np.array(valence, dtype=float),
            "d_fill": np.array(d_fill, dtype=float)}


def _pair_random(a: int, b: int, k: int) -> float:
    """Fixed pseudo-random number in [0, 1) for the unordered element pair (a, b) and slot k."""
    lo, hi = min(a, b), max(a, b)
    h = hashlib.blake2b(PHYSICS_SALT + bytes([lo, hi, k]), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64


@lru_cache(maxsize=None)
def _pair_table() -> np.ndarray:
    """``[n_metals, n_metals, 4]`` fixed pair-specific random numbers."""
    n = len(METALS)
    t = np.empty((n, n, 4))
    for a in range(n):
        for b in range(n):
            t[a, b] = [_pair_random(a, b, k) for k in range(4)]
    return t


@lru_cache(maxsize=None)
def prototypes(max_sites: int = 12) -> list[tuple[str, np.ndarray, np.ndarray, list[int]]]:
    """AFLOW prototypes usable as metallic frames: (label, lattice, fractional coords, species slot per site)."""
    import pymatgen.analysis.prototypes as aflow
    from pymatgen.core import Structure

    raw = json.load(gzip.open(Path(aflow.__file__).with_name("aflow_prototypes.json.gz"), "rt"))
    out = []
    for item in raw:
        s = Structure.from_dict(item["snl"])
        if not s.is_ordered or len(s) > max_sites:
            continue
        species = sorted({site.specie.symbol for site in s})
        if len(species) > 3:
            continue
        slots = [species.index(site.specie.symbol) for site in s]
        label = item.get("tags", {}).get("aflow", "") or s.composition.reduced_formula
        out.append((label, np.array(s.lattice.matrix), np.array(s.frac_coords), slots))
    return out


def _draw_frame(rng: np.random.Generator, el: dict):
    """A random prototype decorated with distinct metals, scaled to the metallic radii, strained and rattled."""
    protos = prototypes()
    label, lattice, frac, slots = protos[rng.integers(len(protos))]
    kinds = rng.choice(len(METALS), size=max(slots) + 1, replace=False)
    idx = kinds[np.array(slots)]  # metal index per site
    r = el["radius"][idx]
    target_volume = (4.0 / 3.0 * np.pi * r**3).sum() / 0.70 * rng.uniform(0.95, 1.05)  # packing ≈ 0.70
    lattice = lattice * (target_volume / abs(np.linalg.det(lattice))) ** (1.0 / 3.0)
    strain = rng.normal(0.0, 0.02, size=(3, 3))
    lattice = lattice @ (np.eye(3) + 0.5 * (strain + strain.T))
    pos = frac @ lattice + rng.normal(0.0, 0.03, size=frac.shape)
    return label, lattice, pos, idx


GAP_KEYS = {"shift_ev": 0.0, "broaden": 1.0, "drude_scale": 1.0}


def check_gap(gap: dict | None, **where) -> dict:
    """The gap with defaults filled in; unknown keys or non-physical values are :class:`InputError`."""
    if gap is not None and not isinstance(gap, dict):
        raise InputError(f"must be a mapping of {', '.join(GAP_KEYS)}, got {gap!r:.60}", field="gap", **where)
    gap = dict(gap or {})
    unknown = sorted(set(gap) - set(GAP_KEYS))
    if unknown:
        raise InputError(f"unknown gap key (allowed: {', '.join(GAP_KEYS)})", field=f"gap.{unknown[0]}", **where)
    out = {}
    for k, default in GAP_KEYS.items():
        value = gap.get(k, default)
        try:
            out[k] = float("nan") if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            out[k] = float("nan")
        if not np.isfinite(out[k]):
            raise InputError(f"{k} must be a finite number, got {value!r}", field=f"gap.{k}", **where)
    if out["broaden"] <= 0 or out["drude_scale"] <= 0:
        raise InputError(f"broaden and drude_scale must be positive, got broaden {out['broaden']:g}, "
                         f"drude_scale {out['drude_scale']:g}", field="gap", **where)
    return out


def _structure_and_labels(rng: np.random.Generator, grid: np.ndarray, noise: float, gap: dict | None = None):
    el = _element_table()
    while True:  # redraw frames with overlapping atoms or an atom that would be lonely at a 5 Å cutoff
        label, lattice, pos, idx = _draw_frame(rng, el)
        r = el["radius"][idx]
        src, dst, shift = neighbor_list(pos, lattice, cutoff=max(5.0, 2.9 * r.max()))
        d = np.linalg.norm(pos[dst] + shift @ lattice - pos[src], axis=1)
        near = d < 5.0
        if np.unique(src[near]).size == len(idx) and (d / (r[src] + r[dst])).min() > 0.75:
            break
    volume = abs(np.linalg.det(lattice))
    w = 1.0 / (1.0 + np.exp((d / (r[src] + r[dst]) - 1.18) / 0.04))
    cn = np.bincount(src, weights=w, minlength=len(idx))
    chi, dfill, val = el["chi"][idx], el["d_fill"][idx], el["valence"][idx]
    dchi2 = np.bincount(src, weights=w * (chi[src] - chi[dst]) ** 2, minlength=len(idx)) / np.maximum(cn, 1e-3)
    pair = _pair_table()

    # Drude frequency (eV)
    n_e = val.sum() / volume
    f_d = dfill / 10.0
    env = np.exp(-2.4 * f_d * (1.0 - f_d)) * (1.0 - 0.5 * np.tanh(2.0 * dchi2)) * (np.clip(cn, 1.0, None) / 12.0) ** 0.3
    pair_factor = np.average(0.8 + 0.4 * pair[idx[src], idx[dst], 0], weights=w + 1e-9)
    drude = 0.6 * PLASMA_EV * np.sqrt(n_e) * env.mean() * pair_factor

    # interband oscillators (energy E, width γ, strength s)
    osc = []
    n_atoms = len(idx)
    a_idx, b_idx = np.minimum(idx[src], idx[dst]), np.maximum(idx[src], idx[dst])
    for a, b in set(zip(a_idx.tolist(), b_idx.tolist())):
        m = (a_idx == a) & (b_idx == b)
        weight = w[m].sum() / n_atoms
        if weight < 1e-3:
            continue
        d0 = el["radius"][a] + el["radius"][b]
        d_mean = np.average(d[m], weights=w[m])
        p = pair[a, b]
        energy = (0.8 + 1.6 * abs(el["chi"][a] - el["chi"][b]) + 0.12 * (el["d_fill"][a] + el["d_fill"][b]) / 2
                  + 1.5 * p[1]) * (d0 / d_mean) ** 2
        osc.append((energy, 0.25 + 0.6 * p[2], (0.3 + 1.2 * p[3]) * weight / 6.0))
    for i in range(n_atoms):
        if dfill[i] > 0:
            energy = (0.6 + 0.35 * dfill[i] * (1.0 - 0.4 * (dfill[i] >= 10))) * np.sqrt(max(cn[i], 1.0) / 12.0)
            osc.append((energy, 0.4 + 0.05 * dfill[i], 0.6 * (0.3 + dfill[i] * (10 - dfill[i]) / 25.0) / n_atoms))
    osc.append((max(PLASMA_EV * np.sqrt(n_e) * 0.8, 4.0), 3.0, 0.8))
    e_k, g_k, s_k = (np.array(v)[:, None] for v in zip(*osc))
    if gap:  # the systematic difference between "experiment" and "simulation"
        e_k, g_k, drude = e_k + gap["shift_ev"], g_k * gap["broaden"], drude * gap["drude_scale"]
    denom = e_k**2 - grid**2 - 1j * g_k * grid
    eps = 1.0 + (s_k * e_k**2 / denom).sum(axis=0)
    y_eps = np.stack([eps.real, eps.imag])
    if noise > 0:
        y_eps = y_eps + rng.normal(0.0, noise, size=y_eps.shape)
        drude = abs(drude + rng.normal(0.0, noise))
    species = [METALS[k] for k in idx]
    return label, lattice, pos, species, y_eps, float(drude)


def _make_chunk(args) -> list:
    seed, lo, hi, points, noise, gap = args
    grid = omega_grid(points)
    out = []
    for i in range(lo, hi):
        rng = np.random.default_rng([seed, i])  # entry i depends only on (seed, i): any worker count
        out.append(_structure_and_labels(rng, grid, noise, gap))
    return out


def generate(n: int, *, points: int = DEFAULT_POINTS, seed: int = 0, noise: float = 0.05, gap: dict | None = None,
             workers: int | None = None, progress: bool = True) -> list[Entry]:
    """``n`` synthetic metal entries with targets ``eps`` (on :func:`omega_grid`) and ``drude``; ``gap``
    (``shift_ev``, ``broaden``, ``drude_scale``) turns them into a systematically different "experiment"."""
    from pymatgen.core import Lattice, Structure
    from tqdm.auto import tqdm

    if n < 1:
        raise InputError(f"--n must be ≥ 1, got {n}", field="n")
    if points < 2:
        raise InputError(f"--points must be ≥ 2, got {points}", field="points")
    if noise < 0:
        raise InputError(f"--noise must be ≥ 0, got {noise}", field="noise")
    gap = check_gap(gap) if gap else None
    prototypes()  # load once in the parent so forked workers share it
    chunk = 500
    jobs = [(seed, lo, min(lo + chunk, n), points, noise, gap) for lo in range(0, n, chunk)]
    workers = workers or min(len(os.sched_getaffinity(0)), len(jobs))
    entries = []
    with tqdm(total=n, desc="synthesising", unit="structure", disable=None if progress else True) as bar:
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        results = pool.map(_make_chunk, jobs) if pool else map(_make_chunk, jobs)
        for (_, lo, *_), rows in zip(jobs, results):
            for k, (label, lattice, pos, species, y_eps, drude) in enumerate(rows):
                s = Structure(Lattice(lattice), species, pos, coords_are_cartesian=True)
                entries.append(Entry(id=f"synth-{seed}-{lo + k:07d}", structure=s,
                                     targets={SPECTRUM: y_eps, "drude": drude}, source="synthetic",
                                     extra={"prototype": label}))
            bar.update(len(rows))
        if pool:
            pool.shutdown()
    return entries


def synth_store(n: int, out: str | Path, *, points: int = DEFAULT_POINTS, seed: int = 0, noise: float = 0.05,
                gap: dict | None = None, cutoff: float = DEFAULT_CUTOFF, overwrite: bool = False,
                progress: bool = True) -> Path:
    """Generate ``n`` entries and write them as a store (``matscale data synth``)."""
    entries = generate(n, points=points, seed=seed, noise=noise, gap=gap, progress=progress)
    return write_store(entries, out, kind="synthetic", source=f"synthetic(n={n}, seed={seed}" +
                       (f", gap={check_gap(gap)}" if gap else "") + ")",
                       omega_ev=omega_grid(points), cutoff=cutoff, overwrite=overwrite, progress=progress,
                       extra_meta={"synthetic": {"n": n, "points": points, "seed": seed, "noise": noise,
                                                 "gap": check_gap(gap) if gap else None,
                                                 "loss_floor_mae": noise * float(np.sqrt(2 / np.pi))}})
