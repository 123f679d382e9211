"""A simulated trial for measuring the sweep machinery at scale: it sleeps instead of training and reports a loss
from a known scaling law, through the same callback, checkpoints and MLflow records as a real trial.

A spec's ``simulate`` section switches it on (``bench/scale.py``; never for results)::

    simulate: {epoch_s: 0.05, noise: 0.02}        # also E, A, alpha, B, beta of the law below

Loss after epoch e (0-based) of a trial with N parameters (its target), D training structures, learning rate lr:

    L = (E + A·N^−alpha + B·D^−beta) · (1 + 0.3·log10(lr / 1e-3)²) · exp(noise·z) · (1 + exp(−(e + 1) / 2))

with z a standard normal drawn from the trial's seed, point and hyperparameters (so each trial's curve is fixed and
a restarted trial repeats it). The final metrics are those of the best epoch, as for a real trial.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from pathlib import Path

LAW = {"E": 0.05, "A": 8.0, "alpha": 0.3, "B": 4.0, "beta": 0.35}  #: the default truth (Chinchilla form)
KEYS = {"epoch_s", "noise", *LAW}


def check(section, where) -> dict | None:
    """The spec's ``simulate`` section with defaults (None when absent); ``where(field)`` names a bad field."""
    from gnn.errors import InputError

    if section is None:
        return None
    if not isinstance(section, dict):
        raise InputError("must be a mapping like {epoch_s: 0.05}", **where("simulate"))
    out = {"epoch_s": 0.05, "noise": 0.02, **LAW}
    for key, value in section.items():
        if key not in KEYS:
            raise InputError(f"unknown key (allowed: {', '.join(sorted(KEYS))})", **where(f"simulate.{key}"))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"must be a number ≥ 0, got {value!r}", **where(f"simulate.{key}"))
        out[key] = float(value)
    return out


def loss(sim: dict, n_params: float, n_train: int, lr: float, z: float, epoch: int) -> float:
    base = sim["E"] + sim["A"] * n_params ** -sim["alpha"] + sim["B"] * n_train ** -sim["beta"]
    return base * (1 + 0.3 * math.log10(lr / 1e-3) ** 2) * math.exp(sim["noise"] * z) * (1 + math.exp(-(epoch + 1) / 2))


def train(config, sim: dict, callback: Callable[[int, dict, str | None], bool | None] | None = None) -> dict:
    """Like :func:`gnn.train.train` for a :class:`gnn.train.TrainConfig`: per epoch, sleep ``epoch_s``, report
    through ``callback`` with a checkpoint in ``config.checkpoint_dir`` (a restarted trial resumes after its last
    checkpointed epoch), then return the final metrics of the best epoch."""
    import numpy as np
    import torch

    from gnn.train import CHECKPOINT

    t0 = time.perf_counter()
    ckpt = Path(config.checkpoint_dir) / CHECKPOINT if config.checkpoint_dir else None
    history: list[dict] = []
    if ckpt is not None and ckpt.exists():
        history = torch.load(ckpt, map_location="cpu", weights_only=False)["state"]["history"]
    n_train = int(config.n_train or 0)
    lr = float(config.lr)
    seed = zlib.crc32(f"{config.seed}-{config.arch}-{config.n_params:g}-{n_train}-{lr!r}-{config.weight_decay!r}"
                      .encode())
    z = float(np.random.default_rng(seed).standard_normal())
    for epoch in range(len(history), config.epochs):
        time.sleep(sim["epoch_s"])
        val = loss(sim, config.n_params, n_train, lr, z, epoch)
        best = min([h["val_loss"] for h in history] + [val])
        metrics = {"epoch": epoch, "train_loss": 0.9 * val, "val_loss": val, "best_val_loss": best, "lr": lr,
                   "epoch_time_s": sim["epoch_s"]}
        history.append(metrics)
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_name(f".{ckpt.name}.tmp")
            torch.save({"state": {"history": history, "epoch": epoch}}, tmp)
            tmp.replace(ckpt)
        if callback is not None and callback(epoch, metrics, str(ckpt) if ckpt else None):
            break
    best = min(history, key=lambda h: h["val_loss"])
    wall = time.perf_counter() - t0
    return {"val_loss": best["val_loss"], "test_loss": best["val_loss"] * 1.02, "n_params": int(config.n_params),
            "n_train": n_train, "epochs": len(history), "best_epoch": best["epoch"], "steps": len(history),
            "wall_time_s": wall, "train_flops": 0.0, "flops_per_sample": 0.0, "device_hours": 0.0,
            "device": "simulated", "precision": "fp32", "subset_sha": f"simulated-{n_train}", "simulated": 1}
