"""Estimated trial and sweep times (sweeps/estimate.py) and the dry run that prints them, for every kind of spec:
synthetic, an existing store with coverage subsets, imports (extxyz made here; Petousis from ../shared/data),
transfer (pretraining included) and a GPU spec on a machine without GPUs; times from finished runs."""

from __future__ import annotations

import csv
import io
import re
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from sweeps import estimate
from sweeps.driver import run_sweep, store_location
from sweeps.spec import duration, load_spec, makespan

ROW = re.compile(r"^\S+-t\d+\s")  #: a trial row of the dry-run table


def write_spec(folder: Path, **changes) -> Path:
    spec = {"experiment": "tiny-estimate",
            "dataset": {"synthetic": {"n": 80, "points": 21, "seed": 0}, "data_dir": str(folder / "data")},
            "archs": ["cgc"], "axes": {"n_train": [20, 40], "n_params": [5.0e3], "seeds": [0]},
            "budget": {"epochs": 3, "patience": 2}, "hpo": {"trials_per_point": 2, "space": {"batch_size": 16}},
            "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "storage_path": str(folder / "ray")}
    spec.update(changes)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def dry_run(path: Path) -> tuple[str, dict, list[list[str]]]:
    """The dry run's output, its summary and the cells of its trial rows."""
    out = io.StringIO()
    summary = run_sweep(load_spec(path), dry_run=True, out=out)
    text = out.getvalue()
    print(text)
    return text, summary, [line.split() for line in text.splitlines() if ROW.match(line)]


def seconds(cell: str) -> float:
    """A duration cell (``45s``, ``4m05s``, ``1h02m``) in seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([dhms])", cell))


def assert_timed(text: str, rows: list[list[str]], planned: int, time_col: int = 5) -> None:
    assert len(rows) == planned
    assert all(re.fullmatch(r"(\d+[dhms])+", r[time_col]) for r in rows), rows  # no "?"
    assert re.search(r"^total cost [\d.,]+ CPU-hours: .* over \d+ trials .*; about \S+ on this machine",
                     text, re.M), text
    assert "every trial at its full budget" in text and "upper bounds" in text  # patience is on


# --- the model of a trial's time --------------------------------------------------------------------------------
def test_fit_rates_recovers_fixed_and_per_sample_costs():
    rows = [(w, 3.0 + 0.002 * w) for w in (100, 400, 1600, 3200)]
    r = estimate.fit_rates(rows)
    assert r.setup_s == pytest.approx(3.0) and r.sample_s == pytest.approx(0.002)
    one = estimate.fit_rates([(500, 10.0), (500, 12.0)])  # one size: proportional through it
    assert one.setup_s == 0 and one.sample_s == pytest.approx(11.0 / 500)
    flat = estimate.fit_rates([(100, 10.0), (200, 9.0), (300, 8.0)])  # never a negative cost per sample
    assert flat.sample_s == 0 and flat.setup_s == pytest.approx(9.0)
    assert estimate.fit_rates([]) is None


def test_rates_count_epochs_samples_and_the_step_cap():
    r = estimate.Rates(setup_s=2.0, sample_s=0.01, epoch_s=0.5)
    assert r.seconds(100, 4, 32) == pytest.approx(2.0 + 4 * 0.5 + 400 * 0.01)
    # max_steps 5 with 4 steps per epoch: 2 epochs run, 5 batches of 32 samples
    assert r.seconds(100, 4, 32, max_steps=5) == pytest.approx(2.0 + 2 * 0.5 + 160 * 0.01)
    assert r.scaled(10).sample_s == pytest.approx(0.1) and r.scaled(10).setup_s == 2.0


def test_duration_and_wall_time():
    assert [duration(s) for s in (4.4, 65, 3720, 90000)] == ["4s", "1m05s", "1h02m", "1d01h"]
    assert makespan([10, 10, 10, 10], 2) == 20 and makespan([30, 10, 10, 10], 2) == 30
    assert makespan([5, 5], 8) == 5


def test_batch_size_is_the_slowest_the_search_may_draw():
    assert estimate.batch_size({"batch_size": 64}) == (64, "")
    size, note = estimate.batch_size({"batch_size": {"choice": [32, 16]}})
    assert size == 16 and "smallest" in note
    assert estimate.batch_size({})[0] == estimate.DEFAULT_BATCH_SIZE


# --- source 1: finished runs ------------------------------------------------------------------------------------
def fake_run(arch, n_params, n_train, epochs, wall, **extra):
    return SimpleNamespace(data=SimpleNamespace(
        metrics={"trial_wall_time_s": wall, "n_train": n_train, "epochs": epochs, "n_params_target": n_params, **extra},
        tags={"matscale.arch": arch}, params={"device": "cpu"}))


def test_history_fits_each_model_and_takes_pretraining_out():
    runs = [fake_run("cgc", 5e3, n, 4, 2.0 + 0.001 * n * 4) for n in (100, 200, 400)]
    runs.append(fake_run("cgc", 2e4, 100, 4, 50.0 + 4.0, pretrain_cached=0.0, pretrain_wall_time_s=50.0,
                         pretrain_n_train=500, pretrain_epochs=10))
    runs.append(fake_run("cgc", 2e4, 100, 4, 4.0, pretrain_cached=1.0, pretrain_wall_time_s=50.0))
    runs.append(fake_run("cgc", 5e3, None, 4, 1.0))  # no size: left out
    h = estimate.history_of(runs)
    assert h.runs == 5 and h.devices == ["cpu"]
    assert h.rates[("cgc", 5e3)].setup_s == pytest.approx(2.0)
    assert h.rates[("cgc", 5e3)].sample_s == pytest.approx(0.001)
    assert h.rates[("cgc", 2e4)].seconds(100, 4, 32) == pytest.approx(4.0)  # without its pretraining
    assert h.pretrain[("cgc", 2e4)].seconds(500, 10, 32) == pytest.approx(50.0)


def test_history_reads_nothing_that_is_not_there_and_never_hangs(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    h = estimate.from_runs(spec)
    assert h.rates == {} and "no tracking store" in h.why_not
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no mlflow.db, no lock, no data
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec.tracking_uri = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    h = estimate.from_runs(spec)
    assert h.rates == {} and "not reachable" in h.why_not and time.monotonic() - t0 < 10


def test_dry_run_times_from_finished_runs_without_timing_or_building(tmp_path):
    """A SQLite store with finished trials of the experiment: the times are theirs; nothing is timed or built."""
    from sweeps import record, tracking

    path = write_spec(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    exp = tracking.experiment_id(c, "tiny-estimate")
    for n, wall in ((20, 7.0), (40, 9.0), (40, 9.0)):
        run = c.create_run(exp, tags={record.KIND: record.KIND_TRIAL, record.ARCH: "cgc"})
        tracking.log_batch(c, run.info.run_id, metrics={"trial_wall_time_s": wall, "n_train": n, "epochs": 3,
                                                        "n_params_target": 5e3}, params={"device": "cpu"})
        c.set_terminated(run.info.run_id, record.FINISHED)
    text, summary, rows = dry_run(path)
    assert "times: from 3 finished runs of this experiment (cpu; Ray and MLflow included)" in text
    assert "timed on this machine" not in text and "building" not in text
    assert not (tmp_path / "data").exists()
    assert [r[5] for r in rows] == ["7s", "7s", "9s", "9s"]
    assert "total cost 0.0089 CPU-hours: 32s of trial time over 4 trials" in text


# --- source 2: timed on this machine, for every kind of spec ----------------------------------------------------
def test_dry_run_of_a_synthetic_spec_builds_the_store_and_times_every_trial(tmp_path):
    path = write_spec(tmp_path, axes={"data_fractions": [0.5, 1.0], "n_params": [5.0e3], "seeds": [0]})
    text, summary, rows = dry_run(path)
    assert text.startswith(f"building the store {store_location(load_spec(path))}")
    assert_timed(text, rows, 4)
    assert "times: timed on this machine (cpu, 1 thread per trial): 1 run of 3 epochs" in text
    assert "no finished runs to time from: no tracking store" in text
    assert not (tmp_path / "mlflow.db").exists()
    full, half = seconds(rows[2][5]), seconds(rows[0][5])
    assert full >= half  # twice the data
    assert len(summary["trial_seconds"]) == 2 and all(s > 0 for s in summary["trial_seconds"])
    again, _, rows2 = dry_run(path)  # the store is there now: built once
    assert "building" not in again and len(rows2) == 4


def test_dry_run_of_a_store_spec_with_coverage_subsets(tmp_path, synth_dir, monkeypatch):
    monkeypatch.setitem(estimate.PROBE_MAX_PARAMS, "cpu", 5e3)  # a "large" model: timed smaller, scaled
    path = write_spec(tmp_path, dataset={"store": str(synth_dir), "cutoff": 5.5},
                      axes={"n_train": [30, 60], "n_params": [2.0e4], "subset": ["random", "stratified"],
                            "seeds": [0]},
                      hpo={"trials_per_point": 1, "space": {"batch_size": {"choice": [16, 32]}},
                           "early_stopping": {"type": "asha", "grace_epochs": 1}})
    text, _, rows = dry_run(path)
    assert "building" not in text
    assert_timed(text, rows, 4)
    assert sum(r[-1] == "stratified" for r in rows) == 2
    assert "batch size 16, the smallest hpo.space.batch_size may draw" in text
    assert "early stopping (asha, patience 2)" in text
    assert "cgc 2e4 timed at 5e3 parameters and scaled by the parameter count" in text


def _extxyz(path: Path, n: int) -> Path:
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    from gnn.synth import generate

    frames = []
    for e in generate(n, points=21, seed=3, progress=False):
        atoms = AseAtomsAdaptor.get_atoms(e.structure)
        atoms.info.update({"id": e.id, "drude": float(e.targets["drude"])})
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return path


def test_dry_run_of_an_extxyz_import_spec(tmp_path):
    src = _extxyz(tmp_path / "set.extxyz", 80)
    path = write_spec(tmp_path, dataset={"import": {"kind": "extxyz", "src": str(src), "targets": ["drude"]},
                                         "data_dir": str(tmp_path / "data")}, targets=["drude"],
                      axes={"data_fractions": [0.5, 1.0], "n_params": [5.0e3], "seeds": [0]})
    text, _, rows = dry_run(path)
    assert "building the store" in text
    assert_timed(text, rows, 4)


def test_dry_run_of_a_petousis_import_spec(tmp_path, shared_data):
    """The shipped petousis spec's import, on its first 90 structures (needs ../shared/data)."""
    src = tmp_path / "petousis.csv"
    with open(shared_data / "petousis2017_dielectric.csv", newline="") as f_in, open(src, "w", newline="") as f_out:
        f_out.write(f_in.readline())  # the reference line
        rows = csv.reader(f_in)
        writer = csv.writer(f_out)
        for i, row in enumerate(rows):
            if i > 90:
                break
            writer.writerow(row)
    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps/specs/petousis.yaml").read_text())
    path = write_spec(tmp_path, dataset={**shipped["dataset"], "import": {**shipped["dataset"]["import"],
                                                                          "src": str(src)},
                                         "data_dir": str(tmp_path / "data")},
                      targets=shipped["targets"], budget=shipped["budget"], hpo=shipped["hpo"],
                      axes={"data_fractions": [0.5, 1.0], "n_params": [2.0e4], "seeds": [0]})
    text, _, rows = dry_run(path)
    assert "building the store" in text
    assert_timed(text, rows, 2 * 3)
    assert "early stopping (median, patience 8)" in text


def test_dry_run_of_a_transfer_spec_includes_pretraining_once(tmp_path, synth_dir):
    path = write_spec(tmp_path, dataset={"synthetic": {"n": 80, "points": 41, "seed": 5, "noise": 0.1,
                                                       "gap": {"shift_ev": 0.4}}, "data_dir": str(tmp_path / "data")},
                      targets=["eps", "drude"],
                      transfer={"source": {"store": str(synth_dir)}, "pretrain": {"epochs": 4, "batch_size": 16}},
                      axes={"source_n": [60, 200], "target_n": [20, 40], "n_params": [5.0e3], "seeds": [0]})
    text, summary, rows = dry_run(path)
    assert "times: timed on this machine (cpu, 1 thread per trial): 2 runs" in text  # target and source
    assert_timed(text, rows, 3 * 2 * 2)
    column = {(r[3], r[7], r[0][-2:]): r[8] for r in rows}  # (n_train, source_n, t0/t1) -> pretrain column
    assert column[("20", "0", "t0")] == "-"  # the baseline pretrains nothing
    assert re.fullmatch(r"\d+s", column[("20", "60", "t0")]) and re.fullmatch(r"\d+s", column[("20", "200", "t0")])
    assert column[("20", "60", "t1")] == column[("40", "60", "t0")] == column[("40", "200", "t1")] == "reused"
    # per point (target 20: S0, S60, S200; target 40: the same): the first target size pretrains, once per source size
    pre = summary["pretrain_seconds"]
    assert pre[0] == pre[3] == pre[4] == pre[5] == 0 and 0 < pre[1] < pre[2]
    assert "(3 epochs + 4 pretraining epochs)" in text


def test_pretraining_cached_before_the_sweep_is_not_counted(tmp_path, synth_dir, monkeypatch):
    """The cache key the estimate looks for is the one a transfer trial (sweeps.trial) pretrains under."""
    import gnn.transfer
    from sweeps import trial as trial_mod
    from sweeps.spec import Point

    source = tmp_path / "source"
    shutil.copytree(synth_dir, source)
    path = write_spec(tmp_path, dataset={"store": str(synth_dir), "cutoff": 5.5}, targets=["drude"],
                      transfer={"source": {"store": str(source)}, "pretrain": {"epochs": 2}},
                      axes={"source_n": [60], "target_n": [20], "n_params": [5.0e3], "seeds": [0]})
    spec = load_spec(path)
    point = Point("cgc", 5e3, 20, 0, source_n=60)
    keys = []

    class Stop(Exception):
        pass

    def fake_pretrain(config, callback=None):
        keys.append(gnn.transfer.pretrain_key(config))
        raise Stop

    monkeypatch.setattr(gnn.transfer, "pretrain", fake_pretrain)
    ctx = trial_mod.TrialContext(store=str(synth_dir), cutoff=5.5, targets=spec.targets, loss_weights={},
                                 budget=spec.budget, tracking_uri="", experiment_id="", parent_run_id="",
                                 sweep_id="", spec_hash="", num_threads=1,
                                 transfer={**spec.transfer, "source_store": str(source)})
    trial = trial_mod.TrialConfig.of(point, 0)
    client = SimpleNamespace(get_metric_history=lambda run_id, metric: [])
    with pytest.raises(Stop):
        trial_mod._pretrain_finetune(client, "run", trial, ctx, trial_mod._train_config(trial, ctx, tmp_path), None)
    assert not estimate._pretrain_cached(spec, point, synth_dir, source, 1)
    (source / "pretrained").mkdir()
    for suffix in (".pt", ".json"):
        (source / "pretrained" / f"{keys[0]}{suffix}").write_text("{}")
    assert estimate._pretrain_cached(spec, point, synth_dir, source, 1)
    monkeypatch.undo()
    text, _, rows = dry_run(path)
    assert [r[8] for r in rows] == ["-", "-", "cached", "reused"]
    assert "1 run of 3 epochs" in text  # the target's; nothing to pretrain, so the source is not timed


def test_dry_run_of_a_gpu_spec_on_a_machine_without_gpus_builds_and_times_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the spec is timed here")
    path = write_spec(tmp_path, resources={"cpu": 4, "gpu": 1})
    text, summary, rows = dry_run(path)
    assert not (tmp_path / "data").exists() and "building" not in text
    assert all(r[5] == "?" for r in rows) and len(rows) == 4
    assert "no times: the spec asks for 1 GPU per trial and this machine has none" in text
    assert "total cost not estimated" in text


def test_gpu_specs_total_gpu_hours(tmp_path):
    """A GPU spec's total is in GPU-hours (the GPU share × trial time), CPU-hours beside it."""
    from sweeps.spec import plan_table

    spec = load_spec(write_spec(tmp_path, resources={"cpu": 4, "gpu": 0.5}))
    points = spec.points()
    times = estimate.Times(trial_s=[1800.0, 3600.0], pretrain_s=[0.0, 0.0], pretrain_note=["", ""],
                           resources={"cpu": 4, "gpu": 0.5}, slots=2, machine="16 cores, 1 GPU",
                           notes=["times: from 9 finished runs of this experiment (cuda; Ray and MLflow included)"])
    text = plan_table(spec, points, True, times)
    # 2 trials per point: 2 × 0.5 h + 2 × 1 h = 3 h of trials; × 0.5 GPU = 1.5 GPU-hours, × 4 CPUs = 12 CPU-hours
    assert "total cost 1.5 GPU-hours (12 CPU-hours): 3h00m of trial time over 4 trials (4 CPU + 0.5 GPU each)" in text
    assert "about 1h30m on this machine (16 cores, 1 GPU: 2 trials at once)" in text
