"""Sequence encoders (DUPN, Ni et al., KDD 2018): a behaviour sequence read by a recurrent
layer and pooled by attention queried by the item or context (docs/architectures.md, "DUPN").

A `sequence(...)` feature with `encoder=gru|lstm` or `pool=attention(...)` is encoded here
rather than by the embedding bag of model/blocks.py: its ids (B, L) (-1 = padding, after the
ids) are looked up in the owner's table, the encoder gives states h_t (B, L, d), and the
pooling gives one (B, d) vector. Padding comes after the ids and the layers are causal, so
the states of real ids never see padding and no packing is needed (which keeps the model
exportable to ONNX and torch.export).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..language.registry import AttentionPoolParams, SequenceParams


class AttentionPool(nn.Module):
    """a_t = softmax_t(v . tanh(W h_t + U q + b)) over a row's real ids; pooled = sum a_t h_t.
    Without a query feature, U q is a learnt vector (part of b)."""

    def __init__(self, dim: int, query_dim: int | None, p: AttentionPoolParams):
        super().__init__()
        self.state = nn.Linear(dim, p.width)  # W, b
        self.query = nn.Linear(query_dim, p.width, bias=False) if query_dim else None  # U
        self.score = nn.Linear(p.width, 1, bias=False)  # v

    def forward(self, h: Tensor, mask: Tensor, q: Tensor | None) -> Tensor:
        z = self.state(h)  # (B, L, w)
        if self.query is not None:
            z = z + self.query(q).unsqueeze(1)
        scores = self.score(torch.tanh(z)).squeeze(-1)  # (B, L)
        a = torch.softmax(scores.masked_fill(~mask, -1e9), dim=1) * mask  # empty row: 0
        return (a.unsqueeze(-1) * h).sum(1)  # (B, d)


class SequenceEncoder(nn.Module):
    """Embedded ids -> optional GRU/LSTM (hidden width = dim) -> mean, sum or attention."""

    def __init__(self, dim: int, p: SequenceParams, query_dim: int | None = None):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}.get(p.encoder)
        self.rnn = rnn(dim, dim, batch_first=True) if rnn is not None else None
        self.mode = p.pool if isinstance(p.pool, str) else "attention"
        self.attention = AttentionPool(dim, query_dim, p.pool) \
            if isinstance(p.pool, AttentionPoolParams) else None

    def forward(self, x: Tensor, mask: Tensor, q: Tensor | None = None) -> Tensor:
        """(B, L, d) embedded ids, (B, L) real-id mask, (B, dq) query -> (B, d)."""
        h = self.rnn(x)[0] if self.rnn is not None else x  # (B, L, d)
        if self.attention is not None:
            return self.attention(h, mask, q)
        keep = mask.to(h.dtype)
        if self.mode == "mean":
            keep = keep / keep.sum(1, keepdim=True).clamp(min=1.0)
        return (keep.unsqueeze(-1) * h).sum(1)  # (B, d)


def encoded(p: SequenceParams) -> bool:
    """Whether a sequence feature needs an encoder here (else the embedding bag pools it)."""
    return p.encoder != "none" or not isinstance(p.pool, str)
