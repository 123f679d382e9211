import json
import math
import subprocess
import sys

import pytest

from gnn.errors import InputError
from gnn.splits import grouped_split
from gnn.store import Store
from gnn.train import TrainConfig, train


def _split_sizes(store_dir) -> dict[str, int]:
    """Entries in each split of a store with the default split fractions and seed."""
    return {k: len(v) for k, v in grouped_split(Store(store_dir).formulas).items()}


def test_short_training_lowers_the_loss(synth_dir):
    history = []
    m = train(TrainConfig(data=str(synth_dir), arch="cgc", n_params=2e4, epochs=6, lr=3e-3, num_threads=2),
              callback=lambda e, metrics, ckpt: history.append(metrics))
    assert len(history) == 6
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert m["val_loss"] < history[0]["val_loss"]
    sizes = _split_sizes(synth_dir)  # no fraction or n_train: the whole training split
    assert (m["n_train"], m["n_val"], m["n_test"]) == (sizes["train"], sizes["val"], sizes["test"])
    assert sum(sizes.values()) == 300 and 200 < sizes["train"] < 260
    for key in ("val_eps_mae", "val_eps_re_r2", "val_eps_im_r2", "val_eps_sc", "val_drude_mae", "val_drude_mape",
                "test_loss", "n_params", "wall_time_s", "samples_per_s", "peak_memory_mb"):
        assert key in m
    assert abs(m["n_params"] - 2e4) <= 600


def test_resume_from_checkpoint_equals_uninterrupted_run(synth_dir, tmp_path):
    base = dict(data=str(synth_dir), arch="transformer", n_params=1.5e4, fraction=0.5, epochs=4, seed=7,
                num_threads=1)
    full = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "a")))

    class Crash(Exception):
        pass

    def crash_after_second_epoch(epoch, metrics, ckpt):
        if epoch == 1:
            raise Crash()

    with pytest.raises(Crash):
        train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "b")), callback=crash_after_second_epoch)
    seen = []
    resumed = train(TrainConfig(**base, checkpoint_dir=str(tmp_path / "b")),
                    callback=lambda e, m, c: seen.append(e))
    assert seen == [2, 3]
    for key in ("val_loss", "test_loss", "val_eps_mae", "test_drude_mae", "best_epoch", "steps"):
        assert resumed[key] == full[key], key


def test_scalar_targets_train(shared_data, tmp_path):
    from gnn.readers import import_store

    store = import_store("petousis", shared_data / "petousis2017_dielectric.csv", tmp_path / "p",
                         targets=["n", "band_gap"], progress=False)
    m = train(TrainConfig(data=str(store), arch="transformer", n_params=2e4, epochs=2, num_threads=2))
    assert {"val_n_mae", "val_band_gap_mae", "test_n_r2"} <= set(m)
    assert m["val_loss"] == pytest.approx(m["val_n_mae"] + m["val_band_gap_mae"], rel=1e-6)


@pytest.mark.parametrize("change,field", [({"fraction": 0.0}, "fraction"), ({"arch": "gin"}, "arch"),
                                          ({"n_params": 10}, "n_params"), ({"targets": ["gap"]}, "targets"),
                                          ({"n_train": 10**6}, "n_train")])
def test_bad_training_input(synth_dir, change, field):
    with pytest.raises(InputError, match=f"field '{field}'"):
        train(TrainConfig(**{"data": str(synth_dir), "epochs": 1, **change}))


def test_cli_train_prints_one_json_object(synth_dir):
    res = subprocess.run([sys.executable, "-m", "analysis.cli", "train", "--data", str(synth_dir), "--arch", "cgc",
                          "--n-params", "1e4", "--fraction", "0.25", "--seed", "0", "--epochs", "2", "--threads", "1",
                          "--json"], capture_output=True, text=True, check=True)
    m = json.loads(res.stdout)
    assert m["n_train"] == math.ceil(0.25 * _split_sizes(synth_dir)["train"])
    assert m["epochs"] == 2 and abs(m["n_params"] - 1e4) <= 300
    info = subprocess.run([sys.executable, "-m", "analysis.cli", "data", "info", str(synth_dir), "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["n_structures"] == 300


def test_package_names_load_on_first_use():
    code = ("import sys, gnn.errors; heavy = {'torch', 'numpy', 'torch_geometric'} & set(sys.modules); "
            "from gnn import train, TrainConfig; import gnn, gnn.train; "
            "assert callable(train) and gnn.train is train and TrainConfig.__module__ == 'gnn.train'; "
            "print(sorted(heavy))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"  # `import gnn.errors` (what analysis needs) loads no torch or numpy
