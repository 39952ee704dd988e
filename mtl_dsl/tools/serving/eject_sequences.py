"""The templates of an ejected model file for DUPN's sequence encoders (model/sequences.py):
attention pooling, the causal Transformer layer and the last-state pooling. Kept apart from
tools/serving/eject_blocks.py (the same rules: torch only, the model's submodule names and order, so
a checkpoint loads with strict=True); tools/serving/standalone.py reads both files' templates."""

import math

import torch
import torch.nn as nn


class AttentionPool(nn.Module):
    """a_t = softmax_t(v . tanh(W h_t + U q + b)) over the real ids; pooled = sum a_t h_t."""

    def __init__(self, dim, query_dim, width):
        super().__init__()
        self.state = nn.Linear(dim, width)
        self.query = nn.Linear(query_dim, width, bias=False) if query_dim else None
        self.score = nn.Linear(width, 1, bias=False)

    def forward(self, h, mask, q):
        z = self.state(h)  # (B, L, w)
        if self.query is not None:
            z = z + self.query(q).unsqueeze(1)
        scores = self.score(torch.tanh(z)).squeeze(-1)  # (B, L)
        a = torch.softmax(scores.masked_fill(~mask, -1e9), dim=1) * mask
        return (a.unsqueeze(-1) * h).sum(1)  # (B, d)


class CausalTransformer(nn.Module):
    """One post-norm, single-head, causal Transformer encoder layer with learnt positions."""

    def __init__(self, dim, max_len):
        super().__init__()
        self.position = nn.Parameter(torch.zeros(max_len, dim))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        future = torch.ones(max_len, max_len, dtype=torch.bool).triu(1)
        self.register_buffer("future", future, persistent=False)

    def forward(self, x):
        L, d = x.shape[1], x.shape[2]
        z = x + self.position[:L]
        q, k, v = self.qkv(z).chunk(3, dim=-1)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(d)  # (B, L, L)
        a = torch.softmax(scores.masked_fill(self.future[:L, :L], float("-inf")), dim=-1)
        h = self.norm1(z + self.out(a @ v))
        return self.norm2(h + self.ff(h))


def last_state(h, mask):
    """The state at each row's last real id; an empty row: 0."""
    n = mask.sum(1)
    at = (n - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.shape[2])
    return h.gather(1, at).squeeze(1) * (n > 0).unsqueeze(1).to(h.dtype)


class SequenceEncoder(nn.Module):
    """Embedded ids -> optional GRU/LSTM or causal Transformer -> mean, sum, last or attention."""

    def __init__(self, dim, encoder, pool, query_dim, width, max_len=None):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}.get(encoder)
        self.rnn = rnn(dim, dim, batch_first=True) if rnn is not None else None
        self.transformer = CausalTransformer(dim, max_len) if encoder == "transformer" else None
        self.mode = pool
        self.attention = AttentionPool(dim, query_dim, width) if pool == "attention" else None

    def forward(self, x, mask, q=None):
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
