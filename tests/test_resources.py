"""What one trial asks Ray for (sweeps.resources): the model's estimated GPU memory (parameters and activations,
calibrated against measured saved tensors), the GPU's memory (Ray's accelerator types, or an autoscaling cluster's
config, or resources.gpu_type) decide the share; and the errors where auto would run GPU-sized trials on CPUs."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from gnn.errors import InputError
from sweeps import cluster_check, resources
from sweeps.resources import (GPU_MEMORY_GIB, Structures, activation_bytes, gpu_memory_gib, largest_batch, slots,
                              trial_resources)
from sweeps.spec import validate

ROOT = Path(__file__).resolve().parents[1]
DEMO = Structures(atoms=5.8, edges=183)  #: the synthetic demo data at 5.5 Å (gnn.synth)


def _spec(resources="auto", n_params=(1e4, 1e6), archs=("cgc",), batch_size=32, **extra):
    raw = {"experiment": "t", "dataset": {"synthetic": {"n": 100, "points": 41, "seed": 0}}, "archs": list(archs),
           "axes": {"n_train": [50], "n_params": list(n_params), "seeds": [0]}, "budget": {"epochs": 1},
           "hpo": {"space": {"batch_size": batch_size}}, "resources": resources, **extra}
    return validate(raw, "spec.yaml")


def _aws(**gpu_worker) -> dict:
    """cluster/aws-gpu.yaml: a head with CPU 0, GPU workers at min_workers 0, as changed."""
    config = yaml.safe_load((ROOT / "cluster" / "aws-gpu.yaml").read_text())
    config["available_node_types"]["gpu_worker"].update(gpu_worker)
    return config


@pytest.fixture
def autoscaling(tmp_path, monkeypatch):
    """MATSCALE_AUTOSCALE=1 with the cluster config written from a dict (MATSCALE_CLUSTER_CONFIG)."""
    def use(config: dict) -> Path:
        path = tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("MATSCALE_AUTOSCALE", "1")
        monkeypatch.setenv("MATSCALE_CLUSTER_CONFIG", str(path))
        return path
    return use


# --- the spec's resources ---------------------------------------------------------------------------------------
def test_fixed_resources_are_the_specs():
    assert trial_resources(_spec({"cpu": 2, "gpu": 0.5}), gpus=8) == {"cpu": 2, "gpu": 0.5}


def test_auto_on_cpus_asks_no_gpu():
    assert trial_resources(_spec(), gpus=0) == {"cpu": 1, "gpu": 0}
    assert trial_resources(_spec({"gpu": "auto", "cpu": 2}), gpus=0) == {"cpu": 2, "gpu": 0}


def test_gpu_auto_with_a_gpu_type_is_a_spec_form():
    spec = _spec({"gpu": "auto", "gpu_type": "L4"})
    assert spec.resources == {"cpu": 1, "gpu": "auto", "gpu_type": "L4"}  # cpu defaults to 1
    assert resources.is_auto(spec) and resources.gpu_type(spec) == "L4"
    # the spec's type wins over what the cluster says (an H100 named by Ray: 80 GiB; L4: 24 GiB)
    g = resources.cluster_gpus(spec, {"GPU": 4, "accelerator_type:H100": 1})
    assert (g.count, g.name, g.memory_gib) == (4, "L4", 24)
    for bad, field in (({"gpu": "auto", "gpu_type": "RTX9090"}, "resources.gpu_type"),
                       ({"gpu": 0, "gpu_type": "L4"}, "resources.gpu_type"),
                       ({"gpu": "lots"}, "resources.gpu"), ({"gpus": 1}, "resources.gpus")):
        with pytest.raises(InputError, match=f"field '{field}'"):
            _spec(bad)


def test_largest_batch_the_space_can_draw():
    assert largest_batch({"batch_size": 64})[0] == 64
    assert largest_batch({"batch_size": {"choice": [16, 128, 32]}})[0] == 128
    assert largest_batch({"batch_size": {"int": [8, 96]}})[0] == 96
    assert largest_batch({"batch_size": {"log_int": [8, 256]}})[0] == 256
    assert largest_batch({})[0] == resources.DEFAULT_BATCH_SIZE


# --- the estimate -----------------------------------------------------------------------------------------------
def _saved_bytes(model, batch) -> int:
    """Bytes of the unique storages one forward pass saves for backward, parameters aside."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(batch)
    return sum(seen.values())


@pytest.mark.parametrize("arch,n_params,batch", [("cgc", 3e4, 8), ("transformer", 2e4, 24)])
def test_activation_estimate_bounds_the_measured_saved_tensors(synth_dir, arch, n_params, batch):
    """The calibrated constants (sweeps.resources.ACTIVATION) against a measurement: at least what one forward
    pass keeps for backward, at most twice it."""
    from gnn.loader import GraphData
    from gnn.models import build_model

    data = GraphData(synth_dir, 5.5, ["eps", "drude"])
    model = build_model(arch, n_params, ["eps", "drude"], data.y["eps"].shape[-1])
    b = data.batch(np.random.default_rng(0).choice(len(data), batch, replace=False))
    measured = _saved_bytes(model, b)
    c = model.config
    est = activation_bytes(arch, c.width, c.ffn_width, c.num_layers, batch, b.z.shape[0], b.edge_index.shape[1])
    assert measured <= est <= 2 * measured, (arch, measured, est)


def test_structures_are_counted_in_the_store(synth_dir):
    s = resources.structures(synth_dir, 5.5)
    assert s.where == str(synth_dir) and 4 < s.atoms < 8 and 120 < s.edges < 260 and s.edges_sd > 0
    assert resources.structures(None, 5.5).edges == resources.DEFAULT_EDGES
    assert resources.structures(None, 11.0).edges == 8 * resources.DEFAULT_EDGES  # edges grow as the cutoff cubed


def test_a_large_cgc_never_gets_an_eighth_of_a_gpu():
    """1.3e8 parameters at batch 64: the old estimate (2 GiB + 64 B/parameter, no activations) gave 1/8 of an
    unnamed (80 GiB) GPU; with activations it is more than that, and at least half of a 24 GiB card."""
    spec = _spec(n_params=[1.3e8], batch_size=64)
    a10g = trial_resources(spec, gpus=1, gpu_memory=24)["gpu"]
    assert a10g >= 0.5
    assert trial_resources(spec, gpus=1)["gpu"] > 1 / 8  # 80 GiB
    # the batch the HPO space can draw counts: a larger one needs a larger share
    big = _spec(n_params=[1.3e8], batch_size={"choice": [32, 160]})
    assert trial_resources(big, gpus=1, gpu_memory=24)["gpu"] > a10g


def test_a_small_model_packs_eight_to_a_gpu():
    spec = _spec(n_params=[5e3])
    r = trial_resources(spec, gpus=1, gpu_memory=24, data=DEMO)
    assert r == {"cpu": 1, "gpu": 1 / 8}
    assert slots(spec, r, cpus=16, gpus=1) >= 8


def test_the_share_is_that_of_the_largest_model_over_archs():
    spec = _spec(n_params=[1e4, 2.5e7], archs=["cgc", "transformer"])
    rows = resources.needs(spec)
    assert {(n.arch, n.n_params) for n in rows} == {(a, n) for a in ("cgc", "transformer") for n in (1e4, 2.5e7)}
    assert trial_resources(spec, gpus=1, gpu_memory=24)["gpu"] == max(resources.share_of(n.gib, 24) for n in rows)
    assert trial_resources(spec, gpus=1, gpu_memory=24, n_params=1e4)["gpu"] == 1 / 8


def test_a_model_that_does_not_fit_one_gpu_names_the_field():
    with pytest.raises(InputError, match=r"spec.yaml: field 'axes.n_params'.*GiB.*one T4 GPU \(16 GiB\)"):
        trial_resources(_spec(n_params=[1e9]), gpus=1, gpu_memory=16, gpu_name="T4")
    with pytest.raises(InputError, match=r"field 'hpo.space.batch_size'.*GiB at batch size 4096.*24 GiB.*at most"):
        trial_resources(_spec(n_params=[1.3e8], batch_size=4096), gpus=1, gpu_memory=24)


def test_gpu_memory_from_rays_accelerator_type():
    assert gpu_memory_gib({"GPU": 4, "accelerator_type:T4": 1}) == 16
    assert gpu_memory_gib({"GPU": 4, "accelerator_type:H100": 1, "accelerator_type:L4": 1}) == 24  # the smallest
    assert gpu_memory_gib({"GPU": 4}) == GPU_MEMORY_GIB


# --- autoscaling clusters ---------------------------------------------------------------------------------------
def test_node_types_name_the_gpu_from_resources_or_the_instance():
    t = {x.name: x for x in cluster_check.node_types(_aws(resources={"CPU": 4, "GPU": 1}))}
    assert (t["gpu_worker"].gpu, t["gpu_worker"].accelerator, t["gpu_worker"].max_workers) == (1, "A10G", 8)
    assert t["head"].cpu == 0 and t["head"].head
    for instance, gpu in (("g6.xlarge", "L4"), ("p4d.24xlarge", "A100-40G"), ("p4de.24xlarge", "A100-80G"),
                          ("p5.48xlarge", "H100"), ("g4dn.xlarge", "T4")):
        assert cluster_check._instance_gpu({"InstanceType": instance}) == gpu
    assert cluster_check._instance_gpu({"machineType": "n1-standard-8", "guestAccelerators": [
        {"acceleratorType": "nvidia-tesla-a100", "acceleratorCount": 1}]}) == "A100-40G"
    assert cluster_check._instance_gpu({"machineType": "g2-standard-8"}) == "L4"
    for name, gpu in (("aws-gpu.yaml", "A10G"), ("gcp-gpu.yaml", "L4")):  # the shipped configs name their GPU
        worker = {x.name: x for x in cluster_check.read_node_types(ROOT / "cluster" / name)}["gpu_worker"]
        assert worker.declared == worker.instance == gpu


def test_autoscaling_cluster_without_gpus_yet_sizes_for_the_config_gpu(autoscaling):
    """GPU workers at min_workers 0 and a CPU-0 head: Ray has no GPU when the sweep starts; the config's g5.xlarge
    worker gives A10G (24 GiB) shares. The old code gave every trial gpu 0."""
    autoscaling(_aws(resources={"CPU": 4, "GPU": 1}))
    spec = _spec(n_params=[1e4, 2.5e7])
    g = cluster_check.sweep_gpus(spec, {"CPU": 0.0})
    assert (g.count, g.name, g.memory_gib) == (8, "A10G", 24)
    r = trial_resources(spec, gpus=g.count, gpu_memory=g.memory_gib)
    assert r["gpu"] > 0
    assert r["gpu"] == max(resources.share_of(n.gib, 24) for n in resources.needs(spec))


def test_driver_on_an_autoscaling_cluster_asks_for_gpus_and_keeps_enough_trials_pending(autoscaling, monkeypatch,
                                                                                          tmp_path):
    import ray

    from sweeps import driver

    autoscaling(_aws(resources={"CPU": 4, "GPU": 1}))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 0.0, "memory": 1e9})
    spec = _spec(n_params=[5e3], dataset={"synthetic": {"n": 100, "points": 41, "seed": 0},
                                          "data_dir": str(tmp_path / "data")})
    r = driver.trial_resources(spec)
    assert r["gpu"] == pytest.approx(1 / 8)
    # 8 workers × 1 GPU at 1/8 each, 8 × 4 CPUs at 1 each: 32 trials at once (the head's 0 CPUs gave 1 before)
    assert driver._slots(spec, r) == 32


def test_auto_without_any_gpu_on_an_autoscaling_cluster_names_resources(autoscaling):
    autoscaling(_aws(resources={"CPU": 8}))
    with pytest.raises(InputError, match="spec.yaml: field 'resources'.*gpu_type"):
        cluster_check.sweep_gpus(_spec(), {"CPU": 0.0})
    g = cluster_check.sweep_gpus(_spec({"gpu": "auto", "gpu_type": "L4"}), {"CPU": 0.0})  # the spec names it
    assert (g.count, g.memory_gib) == (1, 24)


def test_gpu_type_on_a_cluster_without_gpus_or_autoscaling_names_resources_gpu(monkeypatch):
    monkeypatch.delenv("MATSCALE_AUTOSCALE", raising=False)
    with pytest.raises(InputError, match="field 'resources.gpu'.*L4.*none"):
        cluster_check.sweep_gpus(_spec({"gpu": "auto", "gpu_type": "L4"}), {"CPU": 8.0})
    assert cluster_check.sweep_gpus(_spec(), {"CPU": 8.0}).count == 0  # plain auto: CPU trials, as before


def _matscale(args: list[str], capsys) -> tuple[int, str, str]:
    from analysis.cli import main

    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_dry_run_of_auto_on_an_autoscaling_cluster_without_gpus_exits_2_in_one_line(autoscaling, tmp_path, capsys):
    autoscaling(_aws(resources={"CPU": 8}))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "t", "dataset": {"synthetic": {"n": 80, "points": 21, "seed": 0},
                                       "data_dir": str(tmp_path / "data")},
        "archs": ["cgc"], "axes": {"n_train": [20], "n_params": [5e3], "seeds": [0]}, "budget": {"epochs": 1},
        "resources": "auto", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "storage_path": str(tmp_path / "ray")}))
    rc, _, err = _matscale(["sweep", path, "--dry-run"], capsys)
    assert rc == 2, err
    err = err.strip()
    assert err.startswith(f"error: {path}: field 'resources'") and "\n" not in err and "Traceback" not in err


def test_dry_run_prints_the_packing_per_model(autoscaling, tmp_path):
    autoscaling(_aws(resources={"CPU": 4, "GPU": 1}))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "t", "dataset": {"synthetic": {"n": 80, "points": 21, "seed": 0},
                                       "data_dir": str(tmp_path / "data")},
        "archs": ["cgc"], "axes": {"n_train": [20], "n_params": [5e3, 2.5e7], "seeds": [0]},
        "budget": {"epochs": 1}, "hpo": {"space": {"batch_size": {"choice": [16, 64]}}}, "resources": "auto",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "storage_path": str(tmp_path / "ray")}))
    import io

    from sweeps.driver import run_sweep
    from sweeps.spec import load_spec

    buf = io.StringIO()
    run_sweep(load_spec(path), dry_run=True, out=buf)
    out = buf.getvalue()
    assert "GPU packing on A10G (24 GiB" in out and "batch 64" in out
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line.startswith("cgc ")}
    assert rows["5e3"][4:] == ["0.125", "8"]  # share, trials per GPU
    assert "every trial asks 1 CPU +" in out and "one share for the whole sweep" in out


def test_cluster_check_prints_the_packing_and_rejects_a_wrong_accelerator(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"experiment": "t", "dataset": {"synthetic": {"n": 80, "points": 21, "seed": 0}},
                                    "archs": ["cgc"], "axes": {"n_train": [20], "n_params": [5e3], "seeds": [0]},
                                    "budget": {"epochs": 1}, "resources": "auto"}))
    rc, out, err = _matscale(["cluster", "check", ROOT / "cluster" / "aws-gpu.yaml", "--spec", spec], capsys)
    assert rc == 0, err
    assert "trials (1 CPU, 0.125 GPU) fit worker types gpu_worker" in out and "GPU packing on A10G (24 GiB" in out
    config = _aws()
    config["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"] = "p4d.24xlarge"  # left: A10G
    bad = tmp_path / "cluster.yaml"
    bad.write_text(yaml.safe_dump(copy.deepcopy(config)))
    rc, _, err = _matscale(["cluster", "check", bad], capsys)
    assert rc == 2 and "field 'available_node_types.gpu_worker.resources'" in err and "A100-40G" in err
    assert "\n" not in err.strip() and "Traceback" not in err


def test_old_style_namespace_specs_still_work():
    """Callers with a bare object (resources, n_params) and fixed resources need no spec."""
    assert trial_resources(SimpleNamespace(resources={"cpu": 1, "gpu": 1}, n_params=[1e4]), gpus=1) == \
        {"cpu": 1, "gpu": 1}


def test_a_share_leaves_room_for_data_kept_on_the_gpu(monkeypatch):
    """gnn.train keeps the data on the GPU when they take ≤ RESIDENT_FRACTION of the trial's share: the share must
    hold them too, else trials packed by it would overfill the GPU."""
    from gnn.defaults import RESIDENT_FRACTION

    spec = _spec(n_params=[5e3])
    model_gib = resources.needs(spec, DEMO)[0].gib
    memory = model_gib / (0.9 * 2 / 8)  # a GPU on which the model alone takes 90 % of a quarter
    monkeypatch.setattr(resources, "data_gib", lambda store, cutoff=5.5: None)
    assert trial_resources(spec, gpus=1, gpu_memory=memory, data=DEMO) == {"cpu": 1, "gpu": 2 / 8}
    resident = RESIDENT_FRACTION * memory * 2 / 8 - 0.01  # small enough to stay on the GPU at a quarter
    monkeypatch.setattr(resources, "data_gib", lambda store, cutoff=5.5: resident)
    assert trial_resources(spec, gpus=1, gpu_memory=memory, data=DEMO)["gpu"] == 3 / 8
    monkeypatch.setattr(resources, "data_gib", lambda store, cutoff=5.5: memory)  # prefetched: no room needed
    assert trial_resources(spec, gpus=1, gpu_memory=memory, data=DEMO)["gpu"] == 2 / 8


def test_a_store_spec_is_sized_on_its_own_store(synth_dir):
    """A spec that names its store is planned with the store's targets and spectrum points and its counted
    structures (it was planned for 2001 points, which refused a valid 5e3-parameter model)."""
    spec = validate({"experiment": "t", "dataset": {"store": str(synth_dir)}, "archs": ["cgc"],
                     "axes": {"n_train": [50], "n_params": [5e3, 1e6], "seeds": [0]}, "budget": {"epochs": 1},
                     "hpo": {"space": {"batch_size": 32}}, "resources": {"gpu": "auto", "gpu_type": "L4"}},
                    "spec.yaml")
    rows = resources.needs(spec)
    from gnn.models import plan

    assert [n.width for n in rows] == [plan("cgc", n, ["drude", "eps"], 41).width for n in (5e3, 1e6)]
    assert trial_resources(spec, gpus=1, gpu_memory=24)["gpu"] == 1 / 8
    lines = resources.packing_lines(spec, {"cpu": 1, "gpu": 1 / 8}, resources.GPUs(1, 24, "L4", "test"))
    assert f"counted in {synth_dir}" in lines[0]


@pytest.mark.parametrize("node,field", [({"resources": {"GPU": "abc"}, "max_workers": 2}, "resources.GPU"),
                                        ({"resources": {"GPU": 1}, "max_workers": "x"}, "max_workers"),
                                        ({"resources": {"GPU": 1}, "max_workers": -3}, "max_workers")])
def test_a_malformed_node_type_names_its_field(tmp_path, node, field):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"available_node_types": {"gpu": {**node, "node_config": {}}}}))
    with pytest.raises(InputError, match=rf"cluster.yaml: field 'available_node_types.gpu.{field}'"):
        cluster_check.read_node_types(path)


@pytest.mark.parametrize("res", [{"gpu": "auto", "gpu_type": "L4"}, {"cpu": 1, "gpu": 1}])
def test_a_local_sweep_asking_for_gpus_this_machine_lacks_stops_before_creating_anything(res, tmp_path, capsys,
                                                                                         monkeypatch):
    import ray
    import torch

    monkeypatch.delenv("MATSCALE_AUTOSCALE", raising=False)
    from sweeps import driver

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh `matscale sweep` process
    monkeypatch.setattr(driver, "_ray_init", lambda address: pytest.fail("Ray started before the GPU check"))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "t", "dataset": {"synthetic": {"n": 80, "points": 21, "seed": 0},
                                       "data_dir": str(tmp_path / "data")},
        "archs": ["cgc"], "axes": {"n_train": [20], "n_params": [5e3], "seeds": [0]}, "budget": {"epochs": 1},
        "resources": res, "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "storage_path": str(tmp_path / "ray")}))
    rc, _, err = _matscale(["sweep", path], capsys)
    assert rc == 2 and err.strip().startswith(f"error: {path}: field 'resources.gpu'") and "\n" not in err.strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no tracking store, data or Ray storage
