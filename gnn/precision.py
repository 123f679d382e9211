"""Numeric precision of a run: ``fp32``, or ``bf16`` mixed precision (autocast).

Under ``bf16`` the matrix products of message passing run in bfloat16 while the geometry (edge vectors, lengths,
radial basis) and each output head's last layer stay fp32 (:mod:`gnn.layers`); the loss, the optimiser and the
weights are always fp32. ``auto`` is ``bf16`` on CUDA (where the GPU supports it) and ``fp32`` elsewhere; ``bf16`` also works on CPU (slower
there on most machines; tests use it to hold the mixed-precision path without a GPU).
"""

from __future__ import annotations

import torch

from gnn.defaults import PRECISIONS
from gnn.errors import InputError


def check(precision: str, *, field: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else an :class:`InputError` naming ``field``."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}", field=field)
    return precision


def resolve(precision: str, device: torch.device) -> str:
    """``fp32`` or ``bf16``: what ``precision`` means on ``device``."""
    check(precision)
    if precision == "auto":  # pre-Ampere GPUs (T4, V100) only emulate bf16
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved ``precision`` on ``device`` (disabled for ``fp32``)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
