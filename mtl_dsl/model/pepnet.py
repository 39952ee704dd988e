"""PEPNet (Chang et al., KDD 2023): gate neural units that scale a network's input (EPNet)
or each of its layers (PPNet) from personalisation priors (docs/architectures.md, "PEPNet").

`tower t = pepnet(x, 64, 32, by=prior, gamma=2)`: every layer's output is multiplied by
GateNU_l([prior ; sg(x)]); with no widths the block is EPNet, x itself scaled by
GateNU([prior ; sg(x)]). sg is the stop-gradient: the gates read the input but train only
through the scaling, so the priors personalise without reshaping the shared embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .blocks import MLP


class GateNU(nn.Module):
    """gamma * sigmoid(W2 relu(W1 z + b1) + b2): a 2-layer gate in (0, gamma), hidden width
    = output width."""

    def __init__(self, in_dim: int, out_dim: int, gamma: float):
        super().__init__()
        self.hidden, self.out = nn.Linear(in_dim, out_dim), nn.Linear(out_dim, out_dim)
        self.gamma = gamma

    def forward(self, z: Tensor) -> Tensor:
        return self.gamma * torch.sigmoid(self.out(torch.relu(self.hidden(z))))


class PEPNet(nn.Module):
    """An MLP whose every layer (or, with no widths, whose input) is scaled by a GateNU of
    [by ; sg(x)]; the layers are the MLP's own (Linear -> norm -> act -> dropout)."""

    def __init__(self, in_dim: int, by_dim: int, widths: Sequence[int] = (), gamma: float = 2.0,
                 act: str = "relu", dropout: float = 0.0, norm: str = "none"):
        super().__init__()
        self.mlp = MLP(in_dim, widths, act, dropout, norm)
        starts = [i for i, m in enumerate(self.mlp.net) if isinstance(m, nn.Linear)]
        self.chunks = list(zip(starts, [*starts[1:], len(self.mlp.net)]))
        self.gates = nn.ModuleList(GateNU(by_dim + in_dim, w, gamma)
                                   for w in (tuple(widths) or (in_dim,)))
        self.out_dim = self.mlp.out_dim

    def forward(self, x: Tensor, by: Tensor) -> Tensor:
        z = torch.cat([by, x.detach()], 1)  # (B, by + in)
        if not self.chunks:  # EPNet
            return x * self.gates[0](z)
        h = x
        for (a, b), gate in zip(self.chunks, self.gates):
            h = self.mlp.net[a:b](h) * gate(z)  # (B, w_l)
        return h

    @property
    def last_weight(self) -> nn.Parameter | None:
        """The last Linear weight (GradNorm's W when this tower is shared)."""
        return self.mlp.last_weight
