"""Training compute, counted rather than guessed.

A run counts the floating-point operations of its first training step — the forward pass, the loss and the
backward pass of a real batch — with :class:`torch.utils.flop_counter.FlopCounterMode`, and scales them by the
samples it trains on:

.. math::
    \\text{flops\\_per\\_sample} = F_\\text{step} / B_\\text{step}, \\qquad
    \\text{train\\_flops} = \\text{flops\\_per\\_sample} \\cdot \\sum_\\text{epochs} |D_\\text{train}|

FlopCounterMode counts matrix products (``mm``, ``addmm``, ``bmm``, attention) as 2 FLOPs per multiply-add, in
the backward pass only the gradients autograd actually computes (so a step of a stack of linear layers costs 3×
its forward products). Elementwise operations, gathers and scatters of message passing, norms and the optimiser
update are not counted: they move memory more than they compute. A batch of real crystals varies in atoms and
edges per graph, so the count is that of the first batch (its graphs, atoms and edges are those of the seeded
shuffle) per sample; validation passes are not training compute.

    device_hours = wall hours × devices held: a GPU trial's GPU share (1 for a whole GPU); on CPU the trial's threads
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def counting(enabled: bool = True):
    """``with counting() as c: ...`` then ``c.total`` is the FLOPs counted inside (0 when not ``enabled``)."""
    if not enabled:
        yield _Off()
        return
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    with mode:
        box = _Count(mode)
        yield box


class _Count:
    def __init__(self, mode):
        self.mode = mode

    @property
    def total(self) -> int:
        return int(self.mode.get_total_flops())


class _Off:
    total = 0


def device_hours(wall_s: float, device: str, share: float | None, threads: int) -> float:
    """Device-hours of a run that took ``wall_s`` seconds: GPU-hours of its share of a GPU on CUDA, else CPU
    core-hours of its ``threads``."""
    held = (share or 1.0) if device.startswith("cuda") else max(int(threads), 1)
    return wall_s / 3600.0 * held
