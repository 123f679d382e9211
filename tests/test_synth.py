import numpy as np

from gnn.store import Store
from gnn.synth import generate, omega_grid


def test_deterministic_by_seed_and_independent_of_workers():
    a = generate(40, points=21, seed=5, workers=1, progress=False)
    b = generate(40, points=21, seed=5, workers=2, progress=False)
    c = generate(40, points=21, seed=6, workers=1, progress=False)
    for x, y in zip(a, b):
        assert x.structure == y.structure
        np.testing.assert_array_equal(x.targets["eps"], y.targets["eps"])
        assert x.targets["drude"] == y.targets["drude"]
    assert any(x.structure != z.structure for x, z in zip(a, c))


def test_labels_are_physical_without_noise():
    entries = generate(60, points=201, seed=0, noise=0.0, workers=1, progress=False)
    grid = omega_grid(201)
    for e in entries:
        eps = e.targets["eps"]
        assert eps.shape == (2, 201)
        assert (eps[1] >= -1e-12).all()  # absorption is non-negative
        assert eps[1][0] == 0.0  # Im ε(0) = 0 for Lorentz oscillators
        assert 0.3 < e.targets["drude"] < 25.0
        # Kramers–Kronig sum rule bound: Re ε(0) − 1 = (2/π) ∫ Im ε(ω)/ω dω (a Lorentz sum is exact up to
        # the part of the spectrum beyond 20 eV and the grid's resolution, so only a loose check here)
        kk = 1.0 + 2.0 / np.pi * np.trapezoid(eps[1][1:] / grid[1:], grid[1:])
        assert kk <= eps[0][0] + 0.05
    assert len({e.structure.composition.reduced_formula for e in entries}) > 40


def test_store_records_noise_floor(synth_dir):
    meta = Store(synth_dir).meta
    assert meta["synthetic"]["noise"] == 0.05
    assert abs(meta["synthetic"]["loss_floor_mae"] - 0.05 * np.sqrt(2 / np.pi)) < 1e-12
    assert Store(synth_dir).omega_ev.shape == (41,)
