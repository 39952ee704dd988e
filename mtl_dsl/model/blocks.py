"""The torch modules the compiler builds a model from: small, typed, batched.

Every module here is a plain `nn.Module` whose constructor takes plain values (sizes,
widths, activation, dropout, norm), so a test can build one by hand and compare it with
a textbook implementation, and `mtl export -o model.py` copies this source into the
standalone file as it is (docs/export.md): the block modules import torch and the
standard library only; the compiler (model/implementations.py) turns the spec's parameter
models into these arguments. The hot path never loops over experts in Python: an expert
group is one wide matmul followed by batched matmuls over the expert axis, and a gate
mixes experts with a broadcast multiply-and-sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .lookup import lookup

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "none": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """The activation module for a registry name; 'none' is the identity."""
    return ACTIVATIONS[name]()


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


# --------------------------------------------------------------------------
# Towers and single networks
# --------------------------------------------------------------------------

class FeatureGate(nn.Module):
    """HoME's feature gate (docs/architectures.md, "HoME"): x * 2 sigmoid(x A_i B_i), a rank-r
    (LoRA) gate per expert i that privatises what each expert reads of a shared input.

    B starts at zero, so every gate starts at exactly 1 (the net reads x unchanged). With
    `count` None it maps (B, in) -> (B, in) (one net); else (B, in) -> (B, count, in).
    """

    def __init__(self, in_dim: int, rank: int, count: int | None = None):
        super().__init__()
        self.count, self.rank = count, rank
        self.down = nn.Linear(in_dim, (count or 1) * rank, bias=False)  # A_i, side by side
        self.up = nn.Parameter(torch.zeros(count or 1, rank, in_dim))  # B_i

    def forward(self, x: Tensor) -> Tensor:
        a = self.down(x).view(x.shape[0], -1, self.rank).transpose(0, 1)  # (n, B, r)
        g = 2.0 * torch.sigmoid(torch.bmm(a, self.up)).transpose(0, 1)  # (B, n, in)
        y = x.unsqueeze(1) * g
        return y if self.count is not None else y[:, 0]


class MLP(nn.Module):
    """Linear -> norm -> activation -> dropout for every width (a tower, or a bottom).

    With no widths it is the identity, so `mlp(x)` can pass a representation on; with
    feature_gate=r, a FeatureGate comes first (net[0]).
    """

    def __init__(self, in_dim: int, widths: Sequence[int] = (), act: str = "relu",
                 dropout: float = 0.0, norm: str = "none", feature_gate: int = 0):
        super().__init__()
        layers: list[nn.Module] = [FeatureGate(in_dim, feature_gate)] if feature_gate else []
        for width in widths:
            layers.append(nn.Linear(in_dim, width))
            if norm != "none":
                layers.append(_norm(norm, width))
            if act != "none":
                layers.append(activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = width
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, in) -> (B, out)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    @property
    def last_weight(self) -> nn.Parameter | None:
        """The weight of the last Linear layer (GradNorm's W when this block is shared)."""
        linears = self.linears
        return linears[-1].weight if linears else None


class TaskHead(nn.Module):
    """The task's output layer: tower width -> 1 (binary, regression) or C (multiclass)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj(x)  # (B, C)
        return y.squeeze(-1) if self.out_dim == 1 else y  # (B,) for a single output


def activate(kind: str, y: Tensor) -> Tensor:
    """A task's raw output as served: probabilities for binary (sigmoid) and multiclass
    (softmax) tasks, the value itself for regression. The model trains on the raw outputs
    (logits); prediction, the exporters and the standalone file all apply this one rule."""
    if kind == "binary":
        return torch.sigmoid(y)  # (B,)
    if kind == "multiclass":
        return torch.softmax(y, -1)  # (B, C)
    return y  # (B,)


# --------------------------------------------------------------------------
# Expert groups: n networks evaluated as one batched computation
# --------------------------------------------------------------------------

class BatchedLinear(nn.Module):
    """n independent Linear layers applied to the expert axis of a (B, n, in) tensor.

    The weight is stored (n, in, out), the layout baddbmm reads fastest (about 3% faster
    than a transposed (n, out, in) here), initialised like nn.Linear (uniform in
    +-1/sqrt(in)); `expert(i)` gives expert i's weight the nn.Linear way round.
    """

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.shape[0] == 1:  # a shared bottom: one plain matmul, no batching
            # squeeze, not [0]: a select's backward zero-fills and copies a full gradient
            return torch.addmm(self.bias.view(-1), x.squeeze(1), self.weight.squeeze(0)
                               ).unsqueeze(1)  # (B, 1, out)
        y = torch.baddbmm(self.bias, x.transpose(0, 1), self.weight)  # (n, B, out)
        return y.transpose(0, 1)  # (B, n, out), a view

    def expert(self, i: int) -> tuple[Tensor, Tensor]:
        """Expert i's (weight (out, in), bias (out,)), as nn.Linear stores them."""
        return self.weight[i].T, self.bias[i, 0]


class ExpertNorm(nn.Module):
    """Per-expert batch or layer norm over a (B, n, h) tensor (identity for 'none').

    Batch norm of expert i's unit j is channel i*h+j of one BatchNorm1d(n*h); layer norm
    normalises each expert's h units with its own affine weight and bias, both (n, h).
    """

    def __init__(self, kind: str, n: int, width: int):
        super().__init__()
        self.kind, self.n, self.width = kind, n, width
        if kind == "batch":
            self.bn = nn.BatchNorm1d(n * width)
        elif kind == "layer":
            self.weight = nn.Parameter(torch.ones(n, width))
            self.bias = nn.Parameter(torch.zeros(n, width))

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "batch":
            B = x.shape[0]
            return self.bn(x.reshape(B, self.n * self.width)).view(B, self.n, self.width)
        if self.kind == "layer":
            return torch.addcmul(self.bias, F.layer_norm(x, (self.width,)), self.weight)
        return x  # (B, n, h)


class ExpertGroup(nn.Module):
    """`count` experts with the same MLP shape, evaluated together: output (B, n, D).

    Layer 1 of all experts is one wide Linear (in -> n*h1), the widest matmul there is;
    deeper layers are batched matmuls over the expert axis. A group of one expert is a
    shared bottom: the compiler hands its readers the (B, D) view (`squeeze`).
    """

    def __init__(self, in_dim: int, count: int, widths: Sequence[int] = (), act: str = "relu",
                 dropout: float = 0.0, norm: str = "none", feature_gate: int = 0):
        super().__init__()
        self.count, self.in_dim = count, in_dim
        widths = tuple(widths)
        # HoME's per-expert feature gates: each expert then reads its own (B, in) input
        self.feature = FeatureGate(in_dim, feature_gate, count) if feature_gate else None
        self.first = nn.Linear(in_dim, count * widths[0]) if widths else None
        self.deep = nn.ModuleList(BatchedLinear(count, a, b) for a, b in zip(widths, widths[1:]))
        # one ExpertNorm per layer, or none at all for norm='none' (no calls on the hot path)
        self.norms = nn.ModuleList(ExpertNorm(norm, count, w) for w in widths
                                   if norm != "none")
        self.act = activation(act)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None
        self.widths = widths
        self.out_dim = widths[-1] if widths else in_dim

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        if self.feature is not None:
            return self._deep(self._gated_first(self.feature(x)), B)
        if self.first is None:
            return x.unsqueeze(1).expand(B, self.count, self.in_dim)  # (B, n, in)
        return self._deep(self.first(x), B)

    def _gated_first(self, xg: Tensor) -> Tensor:
        """Layer 1 over gated inputs (B, n, in): expert i's rows of the wide Linear read
        its own input (a batched matmul); with no widths the gated inputs are the output."""
        if self.first is None:
            return xg  # (B, n, in)
        w = self.first.weight.view(self.count, self.widths[0], self.in_dim).transpose(1, 2)
        bias = self.first.bias.view(self.count, 1, self.widths[0])
        return torch.baddbmm(bias, xg.transpose(0, 1), w).transpose(0, 1)  # (B, n, h1)

    def _deep(self, h1: Tensor, B: int) -> Tensor:
        """Layer 1's norm/act/dropout, then the deeper batched layers: (B, n, D)."""
        if self.first is None:
            return h1  # gated inputs, no layers
        h = self._post(h1.reshape(B, self.count, self.widths[0]), 0)  # (B, n, h1)
        for i, layer in enumerate(self.deep, start=1):
            h = self._post(layer(h), i)  # (B, n, h_i)
        return h  # (B, n, D)

    def _post(self, h: Tensor, i: int) -> Tensor:
        """Layer i's norm -> activation -> dropout."""
        if self.norms:
            h = self.norms[i](h)
        h = self.act(h)
        return self.drop(h) if self.drop is not None else h

    @staticmethod
    def squeeze(e: Tensor) -> Tensor:
        """The (B, D) view of a group of one expert (squeeze, whose backward is a view too;
        `e[:, 0]`'s zero-fills and copies the gradient)."""
        return e.squeeze(1)

    def expert_layers(self, i: int) -> list[tuple[Tensor, Tensor]]:
        """Expert i's Linear layers as (weight (out, in), bias (out,)): for tests and export."""
        if self.first is None:
            return []
        h1 = self.widths[0]
        rows = slice(i * h1, (i + 1) * h1)
        return [(self.first.weight[rows], self.first.bias[rows])] + \
            [layer.expert(i) for layer in self.deep]

    @property
    def last_weight(self) -> nn.Parameter | None:
        """The last Linear weight of every expert at once (GradNorm's W)."""
        if self.deep:
            return self.deep[-1].weight
        return self.first.weight if self.first is not None else None


# --------------------------------------------------------------------------
# Embeddings: one concatenated table per embedding dim
# --------------------------------------------------------------------------

class Embeddings(nn.Module):
    """Every sparse feature's embedding, looked up once per dim per batch.

    Tables of the same dim live in one nn.Embedding at per-table row offsets; a feature
    that shares another's table reads the owner's rows. `tables` maps owner -> (rows, dim);
    `features` maps feature -> owner, in the order the features should sit in their dim's
    block, so a run of features an input concatenates is one (B, k*d) view of the block.
    Ids must lie in [0, vocab): an id past its table's end would read the next table's rows
    (the data encoder maps unseen values into range). `held` names dim blocks built empty
    because training holds their rows elsewhere (sharded over processes) and reads them
    through `source`.
    """

    def __init__(self, tables: dict[str, tuple[int, int]], features: dict[str, str],
                 sequences: dict[str, tuple[str, str]] | None = None,
                 encoders: dict[str, tuple[str, str | None, nn.Module]] | None = None,
                 held: tuple[str, ...] = ()):
        super().__init__()
        # sequence feature -> (owner, "mean" | "sum"): padded (B, L) ids (-1 = padding),
        # looked up in the owner's rows and pooled to (B, d)
        self.sequences = dict(sequences or {})
        # DUPN: sequence feature -> (owner, query feature | None), encoded by its module in
        # `encoders` (model/sequences.py: GRU/LSTM, attention pooling)
        self.encoded = {f: (owner, query) for f, (owner, query, _) in (encoders or {}).items()}
        self.encoders = nn.ModuleDict({f: enc for f, (_, _, enc) in (encoders or {}).items()})
        self.offset: dict[str, int] = {}
        self.dim_of = {owner: dim for owner, (_, dim) in tables.items()}
        rows: dict[int, int] = {}
        for owner, (vocab, dim) in tables.items():
            self.offset[owner] = rows.get(dim, 0)
            rows[dim] = self.offset[owner] + vocab
        self.vocab = {owner: vocab for owner, (vocab, _) in tables.items()}
        # `held` blocks are held elsewhere (sharded over processes while training): empty
        self.tables = nn.ModuleDict({f"d{d}": nn.Embedding(0 if f"d{d}" in held else n, d)
                                     for d, n in rows.items()})
        self.features = {f"d{d}": [f for f, o in features.items() if self.dim_of[o] == d]
                         for d in rows}
        self.features = {k: names for k, names in self.features.items() if names}
        # feature -> (block key, position in the block)
        self.position = {f: (k, i) for k, names in self.features.items()
                         for i, f in enumerate(names)}
        for k, names in self.features.items():
            offsets = torch.tensor([self.offset[features[f]] for f in names], dtype=torch.long)
            self.register_buffer(f"offsets_{k}", offsets, persistent=False)
        # Where lookups read rows: None reads the tables; training may install a callable
        # (block key, global rows) -> (the tensor to index, its indices), which reads only
        # the rows a batch touches (training/embeddings/engine.py, docs/scaling.md)
        self.source: Callable[[str, Tensor], tuple[Tensor, Tensor]] | None = None

    def weights(self, key: str, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(weight, indices) such that weight[indices] are block `key`'s `rows`."""
        if self.source is None:
            return self.tables[key].weight, rows
        return self.source(key, rows)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One block per dim: block key ('d16') -> (B, F_d, d), features in `position` order."""
        return {k: self.block(k, torch.stack([batch[f] for f in names], 1))  # (B, F_d)
                for k, names in self.features.items()}

    def block(self, key: str, ids: Tensor) -> Tensor:
        """The (B, F_d) ids of one block's features, in `features[key]` order -> (B, F_d, d):
        one lookup in the dim's table, each feature at its table's row offset."""
        weight, rows = self.weights(key, ids + getattr(self, f"offsets_{key}"))
        return lookup(weight, rows, self.training)  # (B, F_d, d)

    def pool(self, batch: dict[str, Tensor], blocks: dict[str, Tensor] | None = None
             ) -> dict[str, Tensor]:
        """Sequence feature -> its (B, d) vector (`sequence`); an encoded sequence's query
        is read from `blocks` (forward's)."""
        out: dict[str, Tensor] = {}
        for f in [*self.encoded, *self.sequences]:
            query = self.encoded[f][1] if f in self.encoded else None
            q = None
            if query is not None:
                blocks = blocks if blocks is not None else self(batch)
                k, i = self.position[query]
                q = blocks[k][:, i]  # (B, dq)
            out[f] = self.sequence(f, batch[f], q)  # (B, d)
        return out

    def sequence(self, feature: str, ids: Tensor, query: Tensor | None = None) -> Tensor:
        """One sequence feature's (B, L) ids (-1 = padding, after the ids) -> (B, d): run
        through its encoder (model/sequences.py), which may read `query`, the (B, dq)
        embedding of its query feature; else the mean or sum of its ids' embeddings, an
        empty row pooling to zeros."""
        if feature in self.encoded:
            owner = self.encoded[feature][0]
            key = f"d{self.dim_of[owner]}"
            weight, rows = self.weights(key, ids.clamp(min=0) + self.offset[owner])  # (B, L)
            x = F.embedding(rows, weight)  # (B, L, d)
            return self.encoders[feature](x, ids >= 0, query)  # (B, d)
        owner, mode = self.sequences[feature]
        key = f"d{self.dim_of[owner]}"
        weight, rows = self.weights(key, ids.clamp(min=0) + self.offset[owner])  # (B, L)
        keep = (ids >= 0).to(weight.dtype)  # (B, L)
        if mode == "mean":
            keep = keep / keep.sum(1, keepdim=True).clamp(min=1.0)
        return F.embedding_bag(rows, weight, mode="sum", per_sample_weights=keep)  # (B, d)

    def lookup(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Feature -> its (B, d) embedding (views of the blocks)."""
        blocks = self(batch)
        return {f: blocks[k][:, i] for f, (k, i) in self.position.items()}

    def table(self, owner: str) -> nn.Embedding:
        return self.tables[f"d{self.dim_of[owner]}"]

    def rows(self, owner: str) -> Tensor:
        """The owner's rows of its concatenated table: (vocab, dim), a view."""
        start = self.offset[owner]
        return self.table(owner).weight[start:start + self.vocab[owner]]
