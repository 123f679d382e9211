"""Start a model from pretrained weights: load them, freeze layers, parse a fine-tuning strategy.

Fine-tuning strategies (``TrainConfig.strategy``, used with ``TrainConfig.init_from``):

    full       every parameter is trained
    heads      only the output heads are trained (the pretrained backbone is frozen)
    freeze:K   the embedding and the first K interaction blocks are frozen, the rest is trained

:func:`gnn.train.train` uses these to start from a model file; :mod:`gnn.transfer` (pretrain → fine-tune)
sits above both.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gnn.errors import InputError
from gnn.store import SPECTRUM

BACKBONE = ("embed.", "rbf.", "blocks.", "pool.")  #: parameter-name prefixes of everything but the heads


def parse_strategy(strategy: str, num_layers: int | None = None, **where) -> tuple[str, int]:
    """``full`` / ``heads`` / ``freeze:K`` → (kind, K)."""
    if strategy in ("full", "heads"):
        return strategy, 0
    if strategy.startswith("freeze:"):
        try:
            k = int(strategy.split(":", 1)[1])
        except ValueError:
            k = -1
        if k >= 0 and (num_layers is None or k <= num_layers):
            return "freeze", k
        raise InputError(f"freeze:K needs 0 ≤ K ≤ the number of interaction blocks"
                         f"{f' ({num_layers})' if num_layers is not None else ''}, got {strategy!r}", **where)
    raise InputError(f"unknown fine-tuning strategy {strategy!r}; choose full, heads or freeze:K", **where)


def load_pretrained(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Copy every parameter of the file ``path`` (written by :func:`gnn.train.export_best`, or a training
    checkpoint) whose name and shape match into ``model`` — the scalar head only when it predicts the same
    targets; buffers (target statistics) stay the model's. Returns the names copied."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt["model"]
    own = dict(model.named_parameters())
    source_scalars = [t for t in ckpt.get("model_config", {}).get("targets", []) if t != SPECTRUM]
    same_scalars = source_scalars == list(model.scalars)  # the scalar head's outputs are these targets, in order
    copied = [name for name, value in state.items() if name in own and own[name].shape == value.shape
              and (same_scalars or not name.startswith("heads.scalars."))]
    if not any(name.startswith("blocks.") for name in copied):
        raise InputError("the pretrained model shares no interaction block with this one (a different arch or "
                         "width?)", file=str(path), field="init_from")
    with torch.no_grad():
        for name in copied:
            own[name].copy_(state[name])
    return copied


def freeze(model: torch.nn.Module, strategy: str) -> int:
    """Set ``requires_grad`` by the strategy; returns the number of trainable parameters left."""
    kind, k = parse_strategy(strategy, len(model.blocks), field="strategy")
    if kind == "heads":
        frozen = BACKBONE
    elif kind == "freeze":
        frozen = ("embed.", "rbf.") + tuple(f"blocks.{i}." for i in range(k))
    else:
        frozen = ()
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(frozen))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
