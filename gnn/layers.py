"""Building blocks of the crystal GNNs, in the style of torch_geometric layers.

Under bf16 autocast (:mod:`gnn.precision`) the geometry — edge vectors, lengths, radial basis and envelope — is
computed in fp32 (a bf16 periodic shift ``s @ L`` of a 10 Å cell is rounded by up to ~0.05 Å, against a basis
width of 0.17 Å), and so is an output head's last layer (:class:`Float32Linear`); the message passing in between
runs in bf16.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.data import Batch


def edge_vectors(batch: Batch) -> torch.Tensor:
    r"""Periodic edge vectors :math:`\mathbf r_{ij} = \mathbf p_j - \mathbf p_i + \mathbf s_{ij} L_{g(i)}` (Å).

    Shapes: ``pos [N, 3]``, ``cell [B, 3, 3]``, ``edge_index [2, E]``, ``edge_shift [E, 3]`` → ``[E, 3]``.
    Always fp32, also under autocast.
    """
    src, dst = batch.edge_index
    with torch.autocast(batch.pos.device.type, enabled=False):
        cell = batch.cell[batch.batch[src]].float()
        shift = torch.bmm(batch.edge_shift.float().unsqueeze(1), cell).squeeze(1)
        return batch.pos[dst].float() - batch.pos[src].float() + shift


class RadialBasis(nn.Module):
    r"""Gaussian radial basis with a smooth cosine envelope that vanishes at the cutoff.

    .. math::
        e_k(d) = \exp\!\left(-\frac{(d-\mu_k)^2}{2\sigma^2}\right) u(d), \qquad
        u(d) = \tfrac12\left(\cos\frac{\pi d}{r_c} + 1\right) \mathbb 1[d < r_c]

    with centres :math:`\mu_k` evenly spaced on :math:`[0, r_c]` and :math:`\sigma = r_c / K`. No parameters.

    Args:
        cutoff: :math:`r_c` in Å. num_basis: :math:`K`.
    Shapes:
        distances ``[E]`` → features ``[E, K]`` (fp32, also under autocast).
    """

    def __init__(self, cutoff: float, num_basis: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num_basis), persistent=False)
        self.sigma = cutoff / num_basis

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        with torch.autocast(d.device.type, enabled=False):
            d = d.float()
            envelope = 0.5 * (torch.cos(math.pi * d / self.cutoff) + 1.0) * (d < self.cutoff)
            return torch.exp(-((d.unsqueeze(-1) - self.centers) ** 2) / (2 * self.sigma**2)) * envelope.unsqueeze(-1)


class Float32Linear(nn.Linear):
    r""":math:`y = x W^\top + b` computed in fp32 whatever the autocast state (an output head's last layer: its
    standardised predictions would otherwise be rounded to bf16, ~0.4 % of a target's σ).
    Shapes: ``[*, d_in]`` → ``[*, d_out]`` fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class MLP(nn.Sequential):
    """``Linear(d_in, d_hidden) → SiLU → Linear(d_hidden, d_out)``; shapes ``[*, d_in] → [*, d_out]``.

    ``fp32_out``: the last layer is a :class:`Float32Linear` (same parameters and state-dict keys).
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, fp32_out: bool = False):
        first = nn.Linear(d_in, d_hidden)  # created first: the weights' random init keeps its order
        super().__init__(first, nn.SiLU(), (Float32Linear if fp32_out else nn.Linear)(d_hidden, d_out))


class InteractionBlock(nn.Module):
    r"""One message-passing block with residuals and LayerNorm:

    .. math::
        h \leftarrow \mathrm{LN}\big(h + \mathrm{Conv}(h, e)\big), \qquad
        h \leftarrow \mathrm{LN}\big(h + \mathrm{FFN}(h)\big), \qquad \mathrm{FFN} = \mathrm{MLP}(w, f, w)

    ``arch="cgc"``: :class:`torch_geometric.nn.CGConv` (gated sum over neighbours; its own skip term is
    subtracted so the residual is counted once). ``arch="transformer"``:
    :class:`torch_geometric.nn.TransformerConv` with edge features, ``heads`` heads of width ``w / heads``.

    Args:
        arch: ``"cgc"`` or ``"transformer"``. width: :math:`w`. edge_dim: radial basis size.
        heads: attention heads. ffn_width: :math:`f` (default :math:`2w`).
    Shapes:
        ``h [N, w]``, ``edge_index [2, E]``, ``e [E, edge_dim]`` → ``[N, w]``.
    """

    def __init__(self, arch: str, width: int, edge_dim: int, heads: int = 4, ffn_width: int | None = None):
        super().__init__()
        from torch_geometric.nn import CGConv, TransformerConv

        self.arch = arch
        if arch == "cgc":
            self.conv = CGConv(width, dim=edge_dim, aggr="add", batch_norm=False)
        else:
            self.conv = TransformerConv(width, width // heads, heads=heads, edge_dim=edge_dim, root_weight=False)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.ffn = MLP(width, ffn_width or 2 * width, width)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        m = self.conv(h, edge_index, e)
        if self.arch == "cgc":
            m = m - h  # CGConv returns h + messages
        h = self.norm1(h + m)
        return self.norm2(h + self.ffn(h))
