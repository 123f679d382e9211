"""The simulated trial (``simulate:`` in a spec, for measuring the sweep machinery at scale): a known law,
deterministic per trial, resumable, and checked like every spec section."""

import math

import pytest
import yaml

from gnn.errors import InputError
from gnn.train import TrainConfig
from sweeps import simulate
from sweeps.spec import load_spec

SIM = simulate.check({"epoch_s": 0.0, "noise": 0.0}, lambda key: {"field": key})


def _config(tmp_path, **kw):
    return TrainConfig(**{"data": "unused", "arch": "cgc", "n_params": 1e4, "n_train": 100, "seed": 0, "epochs": 4,
                          "lr": 1e-3, "checkpoint_dir": str(tmp_path), **kw})


def test_the_simulated_loss_is_the_law_at_the_best_epoch(tmp_path):
    seen = []
    m = simulate.train(_config(tmp_path), SIM, callback=lambda e, metrics, ckpt: seen.append((e, ckpt)))
    law = SIM["E"] + SIM["A"] * 1e4 ** -SIM["alpha"] + SIM["B"] * 100 ** -SIM["beta"]
    assert m["val_loss"] == pytest.approx(law * (1 + math.exp(-2.0)))  # the last epoch, 3: factor 1 + e^-2
    assert [e for e, _ in seen] == [0, 1, 2, 3] and all(c.endswith("checkpoint.pt") for _, c in seen)
    assert m["epochs"] == 4 and m["n_params"] == 10000 and m["device"] == "simulated"


def test_a_restarted_simulated_trial_repeats_its_curve(tmp_path):
    noisy = {**SIM, "noise": 0.1}
    full = simulate.train(_config(tmp_path / "a", lr=3e-3), noisy)

    class Crash(Exception):
        pass

    def crash(epoch, metrics, ckpt):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        simulate.train(_config(tmp_path / "b", lr=3e-3), noisy, callback=crash)
    seen = []
    again = simulate.train(_config(tmp_path / "b", lr=3e-3), noisy, callback=lambda e, m, c: seen.append(e))
    assert seen == [2, 3] and again["val_loss"] == full["val_loss"]
    other = simulate.train(_config(tmp_path / "c", lr=3e-3, seed=1), noisy)
    assert other["val_loss"] != full["val_loss"]  # another seed, another draw


def test_simulate_section_is_checked_and_hashed_only_when_present(tmp_path):
    base = {"experiment": "e", "dataset": {"synthetic": {"n": 100}}, "archs": ["cgc"],
            "axes": {"n_train": [50], "n_params": [1e4], "seeds": [0]}, "budget": {"epochs": 2}}

    def spec(**extra):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump({**base, **extra}))
        return load_spec(path)

    plain = spec()
    assert plain.simulate is None and spec(simulate={"epoch_s": 0.1}).hash != plain.hash
    assert spec(simulate={"epoch_s": 0.1}).simulate["epoch_s"] == 0.1
    for bad, field in (({"epoch_s": -1}, "simulate.epoch_s"), ({"sleep": 1}, "simulate.sleep"),
                       ({"noise": "x"}, "simulate.noise"), ("fast", "simulate")):
        with pytest.raises(InputError, match=field.replace(".", r"\.")):
            spec(simulate=bad)
