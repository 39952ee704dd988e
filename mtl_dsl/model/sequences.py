"""Sequence encoders (DUPN, Ni et al., KDD 2018): a behaviour sequence read by a recurrent
layer and pooled by attention queried by the item or context (docs/architectures.md, "DUPN").

A `sequence(...)` feature with `encoder=gru|lstm|transformer` or `pool=attention(...)|last`
is encoded here rather than by the embedding bag of model/blocks.py (model/tables.py decides
which, and reads the encoder's arguments from the spec): its ids (B, L) (-1 = padding, after
the ids) are looked up in the owner's table, the encoder gives states h_t (B, L, d), and the
pooling gives one (B, d) vector. Padding comes after the ids and the layers are causal (the
Transformer's attention too), so the states of real ids never see padding and no packing or
key-padding mask is needed (which keeps the model exportable to ONNX and torch.export).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor


class AttentionPool(nn.Module):
    """a_t = softmax_t(v . tanh(W h_t + U q + b)) over a row's real ids; pooled = sum a_t h_t.
    Without a query feature, U q is a learnt vector (part of b)."""

    def __init__(self, dim: int, query_dim: int | None, width: int):
        super().__init__()
        self.state = nn.Linear(dim, width)  # W, b
        self.query = nn.Linear(query_dim, width, bias=False) if query_dim else None  # U
        self.score = nn.Linear(width, 1, bias=False)  # v

    def forward(self, h: Tensor, mask: Tensor, q: Tensor | None) -> Tensor:
        z = self.state(h)  # (B, L, w)
        if self.query is not None:
            z = z + self.query(q).unsqueeze(1)
        scores = self.score(torch.tanh(z)).squeeze(-1)  # (B, L)
        a = torch.softmax(scores.masked_fill(~mask, -1e9), dim=1) * mask  # empty row: 0
        return (a.unsqueeze(-1) * h).sum(1)  # (B, d)


class CausalTransformer(nn.Module):
    """One post-norm Transformer encoder layer, single head, causal, learnt positions P:
    z = x + P[:L]; h = LN1(z + W_o softmax(q k^T / sqrt(d) + causal) v); out = LN2(h +
    W_2 relu(W_1 h + b_1) + b_2), feed-forward width 2d. Position t sees t' <= t only, so a
    real id (padding comes after the ids) never sees padding, and every row has a key."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.position = nn.Parameter(0.02 * torch.randn(max_len, dim))  # P
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        future = torch.ones(max_len, max_len, dtype=torch.bool).triu(1)
        self.register_buffer("future", future, persistent=False)  # t' > t

    def forward(self, x: Tensor) -> Tensor:
        L, d = x.shape[1], x.shape[2]
        z = x + self.position[:L]  # (B, L, d)
        q, k, v = self.qkv(z).chunk(3, dim=-1)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(d)  # (B, L, L)
        a = torch.softmax(scores.masked_fill(self.future[:L, :L], float("-inf")), dim=-1)
        h = self.norm1(z + self.out(a @ v))
        return self.norm2(h + self.ff(h))  # (B, L, d)


def last_state(h: Tensor, mask: Tensor) -> Tensor:
    """The state at each row's last real id (ids first, padding after); an empty row: 0."""
    n = mask.sum(1)  # (B,)
    at = (n - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.shape[2])
    return h.gather(1, at).squeeze(1) * (n > 0).unsqueeze(1).to(h.dtype)  # (B, d)


class SequenceEncoder(nn.Module):
    """Embedded ids -> optional GRU/LSTM (hidden width = dim) or causal Transformer layer ->
    mean, sum, last or attention. `encoder`: none, gru, lstm or transformer (whose learnt
    positions cover `max_len` ids); `pool`: mean, sum, last or attention (of hidden width
    `width`, queried by a (B, query_dim) vector when `query_dim` is given)."""

    def __init__(self, dim: int, encoder: str = "none", pool: str = "mean", max_len: int = 50,
                 query_dim: int | None = None, width: int = 32):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}.get(encoder)
        self.rnn = rnn(dim, dim, batch_first=True) if rnn is not None else None
        self.transformer = CausalTransformer(dim, max_len) if encoder == "transformer" else None
        self.mode = pool
        self.attention = AttentionPool(dim, query_dim, width) if pool == "attention" else None

    def forward(self, x: Tensor, mask: Tensor, q: Tensor | None = None) -> Tensor:
        """(B, L, d) embedded ids, (B, L) real-id mask, (B, dq) query -> (B, d)."""
        h = self.rnn(x)[0] if self.rnn is not None else x  # (B, L, d)
        if self.transformer is not None:
            h = self.transformer(h)
        if self.attention is not None:
            return self.attention(h, mask, q)
        if self.mode == "last":
            return last_state(h, mask)
        keep = mask.to(h.dtype)
        if self.mode == "mean":
            keep = keep / keep.sum(1, keepdim=True).clamp(min=1.0)
        return (keep.unsqueeze(-1) * h).sum(1)  # (B, d)
