"""Pretrain on source data, fine-tune on target data (Sim2Real transfer; Minami, Yoshida et al. 2025).

:func:`pretrain_finetune` runs two :func:`gnn.train.train` calls. The model is planned once, for the *target*
(its targets and parameter count), and the source model gets the same width, so every backbone tensor
(embedding, interaction blocks, pooling) carries over; an output head carries over too when its target and
shape are the same on both sides, otherwise it starts fresh. Target-statistics buffers always come from the
target training subset.

The fine-tuning strategies (``TrainConfig.strategy``: ``full``, ``heads``, ``freeze:K``) and the loading of
pretrained weights live one layer below, in :mod:`gnn.finetune`, which :mod:`gnn.train` uses; this module
orchestrates the two runs on top of :mod:`gnn.train`.

Pretrained models are cached next to the source store (``pretrained/<key>.pt``, written atomically), keyed by
everything that determines them, so the HPO trials and target sizes of a sweep pretrain each source size once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from gnn.finetune import BACKBONE, freeze, load_pretrained, parse_strategy
from gnn.models import plan
from gnn.store import Store
from gnn.train import CHECKPOINT, RUNTIME_FIELDS, export_best, train

__all__ = ["BACKBONE", "freeze", "load_pretrained", "parse_strategy",  # re-exported from gnn.finetune
           "pretrain", "pretrain_finetune", "pretrain_key"]


def pretrain_key(source_config) -> str:
    """What determines a pretrained model: the source store's content and the training configuration."""
    d = asdict(source_config)
    for k in ("data", *RUNTIME_FIELDS):
        d.pop(k)
    d["content_hash"] = Store(source_config.data).meta["content_hash"]
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain(source_config, callback: Callable | None = None) -> tuple[Path, dict, list[dict], bool]:
    """Train (or find in the cache) the source model: (model file, final metrics, per-epoch history, cached?)."""
    folder = Path(source_config.data) / "pretrained"
    key = pretrain_key(source_config)
    model_file, info_file = folder / f"{key}.pt", folder / f"{key}.json"
    if model_file.exists() and info_file.exists():
        info = json.loads(info_file.read_text())
        for h in info["history"]:
            if callback is not None:
                callback(h["epoch"], h, None)
        return model_file, info["result"], info["history"], True
    work = Path(tempfile.mkdtemp(prefix="matscale-pretrain-"))
    history: list[dict] = []

    def record(epoch, metrics, ckpt):
        history.append(metrics)
        if callback is not None:
            callback(epoch, metrics, ckpt)

    result = train(replace(source_config, checkpoint_dir=str(work)), callback=record)
    exported = export_best(work / CHECKPOINT, work / "pretrained.pt")
    try:  # cache for the other trials of the sweep; a read-only store keeps the file in the work folder
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{key}.tmp-{os.getpid()}"
        shutil.copy(exported, tmp)
        tmp.replace(model_file)
        tmp.with_suffix(".json").write_text(json.dumps({"result": result, "history": history}, default=float))
        tmp.with_suffix(".json").replace(info_file)
        shutil.rmtree(work, ignore_errors=True)
        return model_file, result, history, False
    except OSError:
        return exported, result, history, False


def pretrain_finetune(source_config, target_config, callback: Callable | None = None,
                      pretrain_callback: Callable | None = None) -> dict:
    """Pretrain on ``source_config.data`` and fine-tune with ``target_config`` (whose ``strategy`` applies).

    The source run is forced to the target model's width; returns the fine-tuning metrics plus
    ``pretrain_*`` metrics of the source run and ``pretrain_cached``.

    Example::

        src = TrainConfig(data="data/simulated", n_train=2000, epochs=20, targets=["eps", "drude"])
        tgt = TrainConfig(data="data/experiment", n_train=100, epochs=30, strategy="freeze:1")
        metrics = pretrain_finetune(src, tgt)
        metrics["test_loss"], metrics["pretrain_val_loss"]
    """
    target_store = Store(target_config.data)
    targets = list(target_config.targets) if target_config.targets else sorted(target_store.targets)
    grid = target_store.omega_ev
    size = plan(target_config.arch, target_config.n_params, targets, None if grid is None else len(grid),
                num_layers=target_config.num_layers, cutoff=target_config.cutoff)
    source_config = replace(source_config, arch=target_config.arch, width=size.width, ffn_width=size.ffn_width,
                            num_layers=target_config.num_layers, cutoff=target_config.cutoff)
    model_file, source_result, _, cached = pretrain(source_config, pretrain_callback)
    result = train(replace(target_config, init_from=str(model_file)), callback=callback)
    result.update({f"pretrain_{k}": v for k, v in source_result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)})
    result["pretrain_cached"] = float(cached)
    return result
