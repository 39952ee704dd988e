"""The templates of an ejected model file (tools/serving/standalone.py): one class or function per
block kind, copied verbatim into the generated file when its spec uses that kind.

They restate model/blocks.py and model/relations.py for inference, with plain
constructor arguments (widths, norm, act, dropout) instead of the registry's parameter
models, and the same submodule names and order, so a checkpoint's state_dict loads into
the generated model with strict=True. This module imports torch only, as the generated
file must; tests/test_export.py checks both compute the same.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
               "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU,
               "none": nn.Identity}


def norm_layer(kind, width):
    """A batch or layer norm of `width` units (identity for 'none')."""
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


class FeatureGate(nn.Module):
    """HoME's feature gate: x * 2 sigmoid(x A_i B_i), one rank-r gate per expert i."""

    def __init__(self, in_dim, rank, count=None):
        super().__init__()
        self.count, self.rank = count, rank
        self.down = nn.Linear(in_dim, (count or 1) * rank, bias=False)
        self.up = nn.Parameter(torch.zeros(count or 1, rank, in_dim))

    def forward(self, x):
        a = self.down(x).view(x.shape[0], -1, self.rank).transpose(0, 1)  # (n, B, r)
        g = 2.0 * torch.sigmoid(torch.bmm(a, self.up)).transpose(0, 1)  # (B, n, in)
        y = x.unsqueeze(1) * g
        return y if self.count is not None else y[:, 0]


class MLP(nn.Module):
    """Linear -> norm -> activation -> dropout per width; the identity with no widths."""

    def __init__(self, in_dim, widths, norm="none", act="relu", dropout=0.0, feature_gate=0):
        super().__init__()
        layers = [FeatureGate(in_dim, feature_gate)] if feature_gate else []
        for width in widths:
            layers.append(nn.Linear(in_dim, width))
            if norm != "none":
                layers.append(norm_layer(norm, width))
            if act != "none":
                layers.append(ACTIVATIONS[act]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = width
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)  # (B, in) -> (B, out)


class GateNU(nn.Module):
    """PEPNet's gate: gamma * sigmoid(W2 relu(W1 z + b1) + b2)."""

    def __init__(self, in_dim, out_dim, gamma):
        super().__init__()
        self.hidden, self.out = nn.Linear(in_dim, out_dim), nn.Linear(out_dim, out_dim)
        self.gamma = gamma

    def forward(self, z):
        return self.gamma * torch.sigmoid(self.out(torch.relu(self.hidden(z))))


class PEPNet(nn.Module):
    """An MLP whose every layer (no widths: its input) is scaled by GateNU([by ; x])."""

    def __init__(self, in_dim, by_dim, gamma, widths, norm="none", act="relu", dropout=0.0):
        super().__init__()
        self.mlp = MLP(in_dim, widths, norm, act, dropout)
        starts = [i for i, m in enumerate(self.mlp.net) if isinstance(m, nn.Linear)]
        self.chunks = list(zip(starts, [*starts[1:], len(self.mlp.net)]))
        self.gates = nn.ModuleList(GateNU(by_dim + in_dim, w, gamma)
                                   for w in (widths or (in_dim,)))

    def forward(self, x, by):
        z = torch.cat([by, x.detach()], 1)  # (B, by + in)
        if not self.chunks:
            return x * self.gates[0](z)
        h = x
        for (a, b), gate in zip(self.chunks, self.gates):
            h = self.mlp.net[a:b](h) * gate(z)
        return h


class TaskHead(nn.Module):
    """Tower width -> 1 output (squeezed to (B,)) or C class logits."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, x):
        y = self.proj(x)  # (B, C)
        return y.squeeze(-1) if self.out_dim == 1 else y


class BatchedLinear(nn.Module):
    """n independent Linear layers over the expert axis; weight (n, in, out)."""

    def __init__(self, n, in_dim, out_dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, out_dim))

    def forward(self, x):
        if self.weight.shape[0] == 1:
            return torch.addmm(self.bias[0], x[:, 0], self.weight[0]).unsqueeze(1)
        return torch.baddbmm(self.bias, x.transpose(0, 1), self.weight).transpose(0, 1)


class ExpertNorm(nn.Module):
    """Per-expert batch or layer norm over (B, n, h)."""

    def __init__(self, kind, n, width):
        super().__init__()
        self.kind, self.n, self.width = kind, n, width
        if kind == "batch":
            self.bn = nn.BatchNorm1d(n * width)
        elif kind == "layer":
            self.weight = nn.Parameter(torch.ones(n, width))
            self.bias = nn.Parameter(torch.zeros(n, width))

    def forward(self, x):
        if self.kind == "batch":
            B = x.shape[0]
            return self.bn(x.reshape(B, self.n * self.width)).view(B, self.n, self.width)
        if self.kind == "layer":
            return torch.addcmul(self.bias, F.layer_norm(x, (self.width,)), self.weight)
        return x


class ExpertGroup(nn.Module):
    """`count` experts of one MLP shape: one wide first Linear, then batched layers."""

    def __init__(self, in_dim, count, widths, norm="none", act="relu", dropout=0.0,
                 feature_gate=0):
        super().__init__()
        self.count, self.in_dim, self.widths = count, in_dim, widths
        self.feature = FeatureGate(in_dim, feature_gate, count) if feature_gate else None
        self.first = nn.Linear(in_dim, count * widths[0]) if widths else None
        self.deep = nn.ModuleList(BatchedLinear(count, a, b) for a, b in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(ExpertNorm(norm, count, w) for w in widths if norm != "none")
        self.act = ACTIVATIONS[act]()
        self.drop = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x):
        B = x.shape[0]
        if self.feature is not None and self.first is None:
            return self.feature(x)  # (B, n, in), each expert's gated input
        if self.first is None:
            return x.unsqueeze(1).expand(B, self.count, self.in_dim)  # (B, n, in)
        if self.feature is not None:  # expert i's rows of the first Linear read its own input
            w = self.first.weight.view(self.count, self.widths[0], self.in_dim).transpose(1, 2)
            h = torch.bmm(self.feature(x).transpose(0, 1), w).transpose(0, 1)
            h = h + self.first.bias.view(self.count, self.widths[0])
        else:
            h = self.first(x).view(B, self.count, self.widths[0])
        h = self.post(h, 0)  # (B, n, h1)
        for i, layer in enumerate(self.deep, start=1):
            h = self.post(layer(h), i)  # (B, n, h_i)
        return h  # (B, n, D)

    def post(self, h, i):
        if len(self.norms) > 0:
            h = self.norms[i](h)
        h = self.act(h)
        return self.drop(h) if self.drop is not None else h


class SoftmaxGate(nn.Module):
    """softmax(W x / T) over n experts; with top_k, the k largest logits only (inference:
    the training noise is not drawn, W_noise is kept so the checkpoint loads)."""

    def __init__(self, in_dim, n_experts, temperature=1.0, top_k=None):
        super().__init__()
        self.proj = nn.Linear(in_dim, n_experts)
        self.temperature, self.top_k = temperature, top_k
        self.noise_proj = nn.Linear(in_dim, n_experts) if top_k is not None else None

    def forward(self, x):
        logits = self.proj(x) / self.temperature  # (B, n)
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return logits.softmax(-1)  # (B, n)


class DSelectGate(nn.Module):
    """DSelect-k: q(x) = sum_i softmax(A x)_i r(S(Z_i x)), r_j = prod_l S or 1 - S by the
    bits of expert j's binary code, S the smooth step of width gamma."""

    def __init__(self, in_dim, n_experts, k, gamma):
        super().__init__()
        self.k, self.gamma = k, gamma
        self.bits = max(1, math.ceil(math.log2(n_experts)))
        self.z = nn.Linear(in_dim, k * self.bits)
        self.w = nn.Linear(in_dim, k)
        shifts = torch.arange(self.bits - 1, -1, -1)
        codes = ((torch.arange(n_experts).unsqueeze(1) >> shifts) & 1).bool()
        self.register_buffer("codes", codes, persistent=False)

    def forward(self, x):
        g = self.gamma
        t = self.z(x).view(x.shape[0], self.k, 1, self.bits)
        cubic = (-2.0 / g ** 3) * t ** 3 + (3.0 / (2.0 * g)) * t + 0.5
        s = torch.where(t <= -g / 2, torch.zeros_like(t),
                        torch.where(t >= g / 2, torch.ones_like(t), cubic))
        r = torch.where(self.codes, s, 1 - s).prod(-1)  # (B, k, n)
        return (self.w(x).softmax(-1).unsqueeze(-1) * r).sum(1)  # (B, n)


def mix(w, experts):
    """sum_i w_i E_i: (B, n) weights, (B, n, D) experts -> (B, D)."""
    return (w.unsqueeze(-1) * experts).sum(1)


class Embeddings(nn.Module):
    """One concatenated table per embedding dim; each feature reads its rows at an offset."""

    def __init__(self, tables, offsets, encoders=None):
        super().__init__()
        self.tables = nn.ModuleDict({k: nn.Embedding(rows, dim)
                                     for k, (rows, dim) in tables.items()})
        self.encoders = nn.ModuleDict(encoders or {})  # sequence feature -> SequenceEncoder
        for k, rows in offsets.items():
            self.register_buffer("offsets_" + k, torch.tensor(rows, dtype=torch.long),
                                 persistent=False)

    def forward(self, key, ids):
        """(B, F) ids of the block's features -> (B, F, d)."""
        return self.tables[key](ids + getattr(self, "offsets_" + key))

    def pool(self, key, ids, offset, mode):
        """(B, L) ids (-1 = padding) -> their mean or sum embedding, (B, d)."""
        table = self.tables[key].weight
        keep = (ids >= 0).to(table.dtype)  # (B, L)
        if mode == "mean":
            keep = keep / keep.sum(1, keepdim=True).clamp(min=1.0)
        return F.embedding_bag(ids.clamp(min=0) + offset, table, mode="sum",
                               per_sample_weights=keep)

    def encode(self, feature, key, ids, offset, query=None):
        """(B, L) ids (-1 = padding) -> the feature's SequenceEncoder over their rows, (B, d)."""
        x = F.embedding(ids.clamp(min=0) + offset, self.tables[key].weight)  # (B, L, d)
        return self.encoders[feature](x, ids >= 0, query)


def logit(p):
    """The clamped logit of a probability (products reach 0 easily)."""
    p = p.clamp(1e-7, 1 - 1e-7)
    return torch.log(p) - torch.log1p(-p)


class AIT(nn.Module):
    """z = sum_u w_u h1(u) over u in {p, q}, w = softmax(<h2(u), h3(u)> / sqrt(k))."""

    def __init__(self, dim, k):
        super().__init__()
        self.h1, self.h2, self.h3 = nn.Linear(dim, k), nn.Linear(dim, k), nn.Linear(dim, k)
        self.k = k

    def forward(self, p, q):
        u = torch.stack([p, q], dim=1)  # (B, 2, D)
        value, key, query = self.h1(u), self.h2(u), self.h3(u)  # (B, 2, k)
        w = torch.softmax((key * query).sum(-1) / math.sqrt(self.k), dim=1)  # (B, 2)
        return (w.unsqueeze(-1) * value).sum(1)  # (B, k)


class Transfer(nn.Module):
    """One AITM edge: an MLP on z_(t-1) (what may flow), merged into q_t by an AIT."""

    def __init__(self, z_dim, q_dim, k, widths, norm="none", act="relu", dropout=0.0,
                 feature_gate=0):
        super().__init__()
        self.flow = MLP(z_dim, widths, norm, act, dropout, feature_gate)
        self.ait = AIT(q_dim, k)

    def forward(self, z_prev, q):
        return self.ait(self.flow(z_prev), q)  # (B, k)


class TaskGate(nn.Module):
    """softmax(W [e_task ; x] / T) over n experts or critics (MetaHeac)."""

    def __init__(self, in_dim, n, task_dim, use_input, temperature=1.0):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(task_dim))  # (T,)
        self.use_input = use_input
        self.proj = nn.Linear(task_dim + (in_dim if use_input else 0), n)
        self.temperature = temperature

    def forward(self, x):
        e = self.embedding.expand(x.shape[0], -1)  # (B, T)
        z = torch.cat([e, x], 1) if self.use_input else e
        return torch.softmax(self.proj(z) / self.temperature, dim=-1)  # (B, n)


class Critics(nn.Module):
    """C shared critics, each a tower ending in one logit, run as one group: (B, C)."""

    def __init__(self, in_dim, count, widths, norm="none", act="relu", dropout=0.0,
                 feature_gate=0):
        super().__init__()
        self.body = ExpertGroup(in_dim, count, widths, norm, act, dropout,
                                feature_gate) if widths else None
        self.weight = nn.Parameter(torch.zeros(count, widths[-1] if widths else in_dim))
        self.bias = nn.Parameter(torch.zeros(count))
        self.count = count

    def forward(self, h):
        if self.body is not None:
            e = self.body(h)  # (B, C, W)
        else:
            e = h.unsqueeze(1).expand(-1, self.count, -1)
        return (e * self.weight).sum(-1) + self.bias  # (B, C)


def critic_mix(w, critic_logits):
    """A task's gate-weighted mix of the critics' probabilities, as a logit: (B,)."""
    return logit((w * torch.sigmoid(critic_logits)).sum(-1))


class StitchGate(nn.Module):
    """Cross-stitch: sum_j alpha_j E_j, learnt constants over the (B, n, D) experts."""

    def __init__(self, n):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(n))  # (n,)

    def forward(self, x, experts):
        return torch.einsum("n,bnd->bd", self.alpha, experts)  # (B, D)


class FusionGate(nn.Module):
    """AdaTT/HoME: softmax(W x / T) over all experts + a residual of the own m (first) ones:
    linear (v^T E_own, or E_own when m = 1), gated (sigmoid or softmax of U x) or none."""

    def __init__(self, in_dim, n, own_count, temperature=1.0, residual="linear"):
        super().__init__()
        self.gate = SoftmaxGate(in_dim, n, temperature)
        self.own_count, self.residual = own_count, residual
        if residual == "linear" and own_count > 1:
            self.v = nn.Parameter(torch.zeros(own_count))  # (m,)
        if residual == "gated":
            self.self_gate = nn.Linear(in_dim, own_count)

    def forward(self, x, experts):
        fused = mix(self.gate(x), experts)  # (B, D)
        own = experts[:, :self.own_count]  # (B, m, D)
        if self.residual == "linear":
            fused = fused + (own[:, 0] if self.own_count == 1
                             else torch.einsum("m,bmd->bd", self.v, own))
        elif self.residual == "gated":
            u = self.self_gate(x)  # (B, m)
            fused = fused + (torch.sigmoid(u) * own[:, 0] if self.own_count == 1
                             else mix(u.softmax(-1), own))
        return fused  # (B, D)


# Which templates each template needs (the generator copies them first).
NEEDS = {"FusionGate": ["SoftmaxGate", "mix"], "MLP": ["ACTIVATIONS", "norm_layer", "FeatureGate"],
         "ExpertNorm": [], "ExpertGroup": ["ACTIVATIONS", "BatchedLinear", "ExpertNorm", "FeatureGate"],
         "Transfer": ["MLP", "AIT"], "Critics": ["ExpertGroup"], "critic_mix": ["logit"],
         "SequenceEncoder": ["AttentionPool", "CausalTransformer", "last_state"],  # DUPN
         "PEPNet": ["MLP", "GateNU"]}
