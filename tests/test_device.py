"""The GPU path's logic held on CPU: a trial trains on the device Ray gave it, data stay on the GPU when they fit
(else batches are prefetched), no host sync per step, a resumed run keeps its best weights on the CPU and the
peak memory is this run's."""

import importlib
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gnn.loader import GraphData, prefetch
from gnn.train import DivergedError, TrainConfig, train

gt = importlib.import_module("gnn.train")  # the module (the package's name `gnn.train` is the function)


def test_a_trial_uses_cuda_only_when_ray_gave_it_a_gpu(monkeypatch):
    import ray

    from sweeps.trial import trial_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert trial_device() == ("cpu", None)  # gpu: 0 never touches the node's GPU
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [3])
    ctx = SimpleNamespace(get_assigned_resources=lambda: {"CPU": 1.0, "GPU": 0.25})
    monkeypatch.setattr(ray, "get_runtime_context", lambda: ctx)
    assert trial_device() == ("cuda", 0.25)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert trial_device() == ("auto", None)


def test_data_stay_on_the_gpu_when_they_fit_the_runs_share(monkeypatch, synth_dir):
    data = GraphData(synth_dir, 5.5, ["eps", "drude"])
    moved = []
    monkeypatch.setattr(GraphData, "to", lambda self, device: moved.append(device) or self)
    props = SimpleNamespace(total_memory=data.nbytes * 8)  # a GPU eight times the data
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    cuda = torch.device("cuda")
    run_data = SimpleNamespace(graphs=data)
    gt._on_device(run_data, TrainConfig(data="x"), cuda)
    assert moved == [cuda]  # 1/8 of the GPU ≤ RESIDENT_FRACTION
    gt._on_device(run_data, TrainConfig(data="x", device_share=0.25), cuda)
    assert moved == [cuda]  # a quarter-GPU trial: the data would take half its share; prefetched instead
    gt._on_device(run_data, TrainConfig(data="x", device_share=0.25, data_on_device=True), cuda)
    gt._on_device(run_data, TrainConfig(data="x", data_on_device=False), cuda)
    gt._on_device(run_data, TrainConfig(data="x", data_on_device=True), torch.device("cpu"))
    assert moved == [cuda, cuda]


def test_graph_data_on_a_device_keeps_labels_for_metrics_on_the_cpu(synth_dir):
    data = GraphData(synth_dir, 5.5, ["eps", "drude"])
    moved = data.to("cpu")
    assert moved is not data and moved.y is data.y and moved.device == torch.device("cpu")
    assert data.nbytes > data.edge_index.nbytes
    a, b = data.batch([5, 0, 9]), moved.batch([5, 0, 9])
    for key in ("z", "pos", "cell", "batch", "ptr", "edge_index", "edge_shift", "y_eps", "y_drude"):
        assert torch.equal(a[key], b[key]), key


def test_prefetch_keeps_order_raises_and_stops_its_thread():
    cpu = torch.device("cpu")
    items = [torch.full((2,), float(i)) for i in range(7)]
    assert [int(x[0]) for x in prefetch(iter(items), cpu)] == list(range(7))

    def broken():
        yield items[0]
        raise ValueError("corrupt batch")

    with pytest.raises(ValueError, match="corrupt batch"):
        list(prefetch(broken(), cpu))
    before = threading.active_count()
    for x in prefetch(iter(items * 10), cpu, depth=2):
        break  # leaving early stops the producer
    assert threading.active_count() == before


def test_losses_are_summed_on_the_device_without_a_host_sync_per_step(monkeypatch, synth_dir):
    """The training loop itself (gnn/train.py) reads no tensor value per step (``.item()``, ``bool()``): on a GPU
    each would wait for the step to finish. (PyTorch's own CPU-side bookkeeping, e.g. AdamW's step counters, is
    not a device sync and not counted.)"""
    calls = {"sync": 0, "steps": 0}
    step = gt._optimizer_step

    def counting(method):
        def wrapped(self, *args):
            if sys._getframe(1).f_code.co_filename == gt.__file__:
                calls["sync"] += 1
            return method(self, *args)
        return wrapped

    def counting_step(run, loss):
        calls["steps"] += 1
        return step(run, loss)

    for name in ("item", "__bool__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    monkeypatch.setattr(gt, "_optimizer_step", counting_step)
    run = gt._setup(cfg := TrainConfig(data=str(synth_dir), n_params=1e4, batch_size=16, num_threads=1),
                    gt._prepare_data(cfg), torch.device("cpu"))
    total, count = gt._train_epoch(run, gt.LoopState(), 0)
    assert calls["steps"] >= 10 and calls["sync"] <= 1 and count > 0 and np.isfinite(total)


def test_a_nan_still_fails_the_run_within_its_epoch(synth_dir):
    seen = []
    with pytest.raises(DivergedError, match="loss is nan at epoch 0"):
        train(TrainConfig(data=str(synth_dir), n_params=1e4, lr=1e30, epochs=3, num_threads=1),
              callback=lambda e, m, c: seen.append(e))
    assert seen == []  # no epoch was reported (or checkpointed) with a NaN loss


def test_resume_keeps_the_best_weights_on_the_cpu(synth_dir, tmp_path):
    base = dict(data=str(synth_dir), n_params=1e4, fraction=0.25, epochs=2, num_threads=1,
                checkpoint_dir=str(tmp_path))

    class Stop(Exception):
        pass

    def stop(epoch, metrics, ckpt):
        raise Stop()

    with pytest.raises(Stop):
        train(TrainConfig(**base), callback=stop)
    cfg = TrainConfig(**base)
    run = gt._setup(cfg, gt._prepare_data(cfg), torch.device("cpu"))
    run.device = torch.device("cuda")  # as on a GPU node: the checkpoint must not be mapped onto the GPU
    state = gt._resume(run)
    assert state.epoch == 0 and all(v.device.type == "cpu" for v in state.best_state.values())


def test_the_peak_memory_is_this_runs(monkeypatch, synth_dir):
    class Reset(Exception):
        pass

    def reset(device):
        raise Reset(str(device))

    monkeypatch.setattr(gt, "_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    with pytest.raises(Reset, match="cuda"):  # reset before anything runs on the device
        train(TrainConfig(data=str(synth_dir), n_params=1e4, epochs=1))


@pytest.mark.parametrize("name", ["meta", "mps", "cuda:7", "foo"])
def test_devices_other_than_cpu_and_present_gpus_are_input_errors(name):
    from gnn.errors import InputError

    with pytest.raises(InputError, match="field 'device'"):
        gt._device(name)
