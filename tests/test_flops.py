"""Training compute: the counted FLOPs of a step equal a hand count, and a run logs them scaled by its samples."""

import numpy as np
import pytest
import torch

from gnn import flops
from gnn.loader import GraphData
from gnn.metrics import loss_fn
from gnn.models import build_model
from gnn.store import Store
from gnn.train import TrainConfig, train


def _hand_count(model, batch) -> int:
    """FLOPs of one training step of a ``cgc`` model, by hand: every linear layer is 2·rows·d_in·d_out forward and
    twice that backward (the gradients of its weights and of its input: every input carries a gradient), and the
    periodic shift ``s @ L`` (a [1, 3] × [3, 3] product per edge) is forward only (positions carry no gradient)."""
    c = model.config
    w, f, k = c.width, c.ffn_width or 2 * c.width, c.num_basis
    e, v, g = batch.edge_index.shape[1], batch.num_nodes, batch.num_graphs
    per_block = 2 * (2 * e * (2 * w + k) * w) + 2 * v * w * f + 2 * v * f * w  # CGConv's lin_f, lin_s; the FFN
    linear = c.num_layers * per_block + 2 * v * w  # the blocks, the pooling gate
    for head in model.heads.values():  # Linear(w, w) → SiLU → Linear(w, out), on graphs
        linear += 2 * g * w * w + 2 * g * w * head[2].out_features
    return 3 * linear + 2 * e * 3 * 3


def test_counted_flops_of_a_step_equal_the_hand_count(synth_dir):
    store = Store(synth_dir)
    targets = sorted(store.targets)
    torch.manual_seed(0)
    model = build_model("cgc", 5e3, targets, len(store.omega_ev))
    batch = GraphData(store, 5.0, targets).batch(np.arange(8))
    with flops.counting() as counted:
        loss_fn(model(batch), batch, {t: 1.0 for t in targets}).backward()
    assert batch.edge_index.shape[1] > 100
    assert counted.total == _hand_count(model, batch)
    with flops.counting(False) as off:
        model(batch)
    assert off.total == 0


def test_a_run_reports_its_training_compute(synth_dir):
    m = train(TrainConfig(data=str(synth_dir), arch="cgc", n_params=5e3, n_train=40, batch_size=8, epochs=2,
                          num_threads=1, patience=None))
    assert m["flops_per_sample"] > 0
    # 2 epochs × 40 samples; a cgc step is dominated by 3 × 2·E·(2w+K)·w per block, so ≥ 12·w² flops per edge
    assert m["train_flops"] == pytest.approx(m["flops_per_sample"] * 80)
    assert m["flops_per_sample"] > 12 * m["width"] ** 2 * 10
    assert m["device_hours"] == pytest.approx(m["wall_time_s"] / 3600, rel=1e-3)  # one thread on the CPU
    assert m["threads"] == 1 and 0 < m["cpu_time_s"] and m["started_at"] > 1.7e9


def test_device_hours_count_the_devices_held():
    assert flops.device_hours(3600, "cuda:0", 0.25, 8) == 0.25
    assert flops.device_hours(3600, "cuda", None, 8) == 1.0
    assert flops.device_hours(1800, "cpu", None, 4) == 2.0
