"""Two-body crystal GNNs (``cgc``, ``transformer``) sized to an exact parameter count.

Architecture (the paper's two-body family)::

    z ─ Embedding(100, w) ─┐
    |r_ij| ─ RadialBasis ──┴─ L × InteractionBlock(w, f) ─ attention pooling ─┬─ MLP(w, w, 2K) → eps [B, 2, K]
                                                                              └─ MLP(w, w, S) → scalars [B] each
                                                                                 (drude: softplus ≥ 0)

Outputs are de-standardised with training-set statistics held in buffers (not parameters), so losses
and metrics are in physical units. :func:`build_model` picks the width ``w`` (a multiple of 4) and the
feed-forward width ``f`` so the parameter count is within ±3% of the request; counting happens on the ``meta``
device, so even a 10⁸-parameter request allocates nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn.aggr import AttentionalAggregation

from gnn.defaults import DEFAULT_CUTOFF, DEFAULT_NUM_LAYERS
from gnn.errors import InputError
from gnn.layers import MLP, InteractionBlock, RadialBasis, edge_vectors
from gnn.store import NONNEGATIVE, SPECTRUM

ARCHS = ("cgc", "transformer")
NUM_ELEMENTS = 100
TOLERANCE = 0.03
WIDTH_STEP = 4
MIN_WIDTH = 8
MAX_WIDTH = 32768


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (saved in checkpoints)."""

    arch: str
    width: int
    ffn_width: int
    targets: list[str]
    n_points: int | None = None
    num_layers: int = DEFAULT_NUM_LAYERS
    num_basis: int = 32
    cutoff: float = DEFAULT_CUTOFF
    heads: int = 4
    extra: dict = field(default_factory=dict)


class CrystalGNN(nn.Module):
    """A two-body message-passing GNN on periodic graphs; ``forward(batch) -> {target: prediction}``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        if c.arch not in ARCHS:
            raise InputError(f"unknown arch {c.arch!r}; choose one of {', '.join(ARCHS)}", field="arch")
        if SPECTRUM in c.targets and not c.n_points:
            raise InputError("the spectrum target needs n_points", field="n_points")
        w = c.width
        if w % c.heads:
            raise InputError(f"width {w} is not a multiple of heads={c.heads}", field="width")
        self.embed = nn.Embedding(NUM_ELEMENTS, w)
        self.rbf = RadialBasis(c.cutoff, c.num_basis)
        self.blocks = nn.ModuleList(InteractionBlock(c.arch, w, c.num_basis, c.heads, c.ffn_width) for _ in range(c.num_layers))
        self.pool = AttentionalAggregation(gate_nn=nn.Linear(w, 1))
        self.scalars = [t for t in c.targets if t != SPECTRUM]
        self.heads = nn.ModuleDict()
        if SPECTRUM in c.targets:
            self.heads[SPECTRUM] = MLP(w, w, 2 * c.n_points, fp32_out=True)
            self.register_buffer("eps_mean", torch.zeros(2, c.n_points))
            self.register_buffer("eps_scale", torch.ones(2, 1))
        if self.scalars:
            self.heads["scalars"] = MLP(w, w, len(self.scalars), fp32_out=True)
            self.register_buffer("scalar_mean", torch.zeros(len(self.scalars)))
            self.register_buffer("scalar_scale", torch.ones(len(self.scalars)))

    @torch.no_grad()
    def set_target_stats(self, y: dict[str, torch.Tensor]) -> None:
        """Standardise outputs with training labels ``y[target]`` (``[n, 2, K]`` or ``[n]``)."""
        if SPECTRUM in y and SPECTRUM in self.heads:
            self.eps_mean.copy_(y[SPECTRUM].mean(0))
            self.eps_scale.copy_(y[SPECTRUM].std(dim=(0, 2)).clamp_min(1e-6).view(2, 1))
        for k, t in enumerate(self.scalars):
            v = y[t].float()
            if t in NONNEGATIVE:  # softplus(raw) · mean: positive, of the right size at raw ≈ 0.55
                self.scalar_mean[k], self.scalar_scale[k] = 0.0, v.mean().clamp_min(1e-6)
            else:
                self.scalar_mean[k], self.scalar_scale[k] = v.mean(), v.std().clamp_min(1e-6)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        d = edge_vectors(batch).norm(dim=-1)
        e = self.rbf(d)
        h = self.embed(batch.z)
        for block in self.blocks:
            h = block(h, batch.edge_index, e)
        g = self.pool(h, batch.batch, dim_size=batch.num_graphs)
        out = {}
        if SPECTRUM in self.heads:
            raw = self.heads[SPECTRUM](g).view(-1, 2, self.config.n_points).float()
            out[SPECTRUM] = self.eps_mean + self.eps_scale * raw
        if self.scalars:
            raw = self.heads["scalars"](g).float()
            for k, t in enumerate(self.scalars):
                r = nn.functional.softplus(raw[:, k]) if t in NONNEGATIVE else raw[:, k]
                out[t] = self.scalar_mean[k] + self.scalar_scale[k] * r
        return out


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _count(config: ModelConfig) -> int:
    with torch.device("meta"):  # nothing is allocated, whatever the size
        return count_params(CrystalGNN(config))


def plan(arch: str, n_params: float, targets: list[str], n_points: int | None = None, **kwargs) -> ModelConfig:
    """The :class:`ModelConfig` whose parameter count is closest to ``n_params`` (within ±3%)."""
    target = float(n_params)
    base = dict(arch=arch, targets=list(targets), n_points=n_points, **kwargs)
    if arch not in ARCHS:
        raise InputError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}", field="arch")

    def count(w: int, f: int) -> int:
        return _count(ModelConfig(width=w, ffn_width=f, **base))

    lo_w, hi_w = MIN_WIDTH // WIDTH_STEP, MAX_WIDTH // WIDTH_STEP
    smallest = count(MIN_WIDTH, MIN_WIDTH // 2)
    if target < smallest * (1 - TOLERANCE):
        raise InputError(f"{arch} cannot be as small as {target:.3g} parameters with these targets "
                         f"(smallest: {smallest:.3g})", field="n_params")
    if target > count(MAX_WIDTH, MAX_WIDTH) * (1 + TOLERANCE):
        raise InputError(f"{arch} is limited to width {MAX_WIDTH}; {target:.3g} parameters is too many",
                         field="n_params")
    while lo_w < hi_w:  # largest width (in steps) whose count at f = w is ≤ target
        mid = (lo_w + hi_w + 1) // 2
        if count(mid * WIDTH_STEP, mid * WIDTH_STEP) <= target:
            lo_w = mid
        else:
            hi_w = mid - 1
    best = None
    for w in {lo_w * WIDTH_STEP, (lo_w + 1) * WIDTH_STEP}:
        c0, c1 = count(w, w), count(w, w + 1)  # the count is linear in the feed-forward width
        f = int(round(w + (target - c0) / (c1 - c0)))
        f = min(max(f, w // 2), 8 * w)
        err = abs(count(w, f) - target)
        if best is None or err < best[0]:
            best = (err, w, f)
    config = ModelConfig(width=best[1], ffn_width=best[2], **base)
    achieved = _count(config)
    if abs(achieved - target) > TOLERANCE * target:
        raise InputError(f"{arch}: closest reachable count is {achieved:.4g} for {target:.4g} parameters "
                         f"(outside ±{TOLERANCE:.0%})", field="n_params")
    return config


def build_model(arch: str, n_params: float, targets: list[str], n_points: int | None = None,
                **kwargs) -> CrystalGNN:
    """A model of ``arch`` with ``n_params`` ± 3% trainable parameters; ``model.n_params`` is the exact count.

    Example::

        model = build_model("cgc", n_params=1e5, targets=["eps", "drude"], n_points=101)
        out = model(batch)   # {"eps": [B, 2, 101], "drude": [B]}
    """
    model = CrystalGNN(plan(arch, n_params, targets, n_points, **kwargs))
    model.n_params = count_params(model)
    return model


def model_from_config(config: ModelConfig | dict) -> CrystalGNN:
    """Rebuild a model from a saved :class:`ModelConfig` (or its dict)."""
    model = CrystalGNN(config if isinstance(config, ModelConfig) else ModelConfig(**config))
    model.n_params = count_params(model)
    return model


def config_dict(config: ModelConfig) -> dict:
    return asdict(config)
