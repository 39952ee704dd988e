"""The plain PyTorch script `bench/bench_cli.py` times `mtl compile --train` against.

What a careful engineer writes by hand for one epoch of the benchmark workload: read the
Parquet file with pyarrow, hold out 1% of the rows for validation, train shared-bottom or
MMoE for one epoch with every trick we know of on CPU (one embedding table at per-feature
offsets whose backward is an `index_add_` into a zeroed gradient, experts as one wide matmul
then batched matmuls, fused Adam), then the validation AUC of each task and the weights saved.

    python bench/plain_epoch.py DATA.parquet shared_bottom|mmoe OUT_DIR
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SPARSE, DENSE, VOCAB, DIM = 26, 13, 10_000, 16
BATCH, LR, THREADS, VAL = 2048, 1e-3, 2, 0.01


class Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, ids):
        ctx.save_for_backward(ids)
        ctx.rows = weight.shape[0]
        return weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.rows, grad.shape[-1])
        out.index_add_(0, ids.reshape(-1), grad.reshape(-1, grad.shape[-1]))
        return out, None


def mlp(d_in, widths):
    layers = []
    for w in widths:
        layers += [nn.Linear(d_in, w), nn.ReLU()]
        d_in = w
    return nn.Sequential(*layers)


class Experts(nn.Module):
    def __init__(self, d_in, n, widths=(256, 128)):
        super().__init__()
        self.n, self.h1 = n, widths[0]
        self.first = nn.Linear(d_in, n * widths[0])
        self.w = nn.Parameter(torch.empty(n, widths[0], widths[1]).uniform_(-1 / 16, 1 / 16))
        self.b = nn.Parameter(torch.zeros(n, 1, widths[1]))

    def forward(self, x):
        h = F.relu(self.first(x)).view(x.shape[0], self.n, self.h1).transpose(0, 1)
        return F.relu(torch.baddbmm(self.b, h, self.w)).transpose(0, 1)  # (B, n, D)


class Model(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.emb = nn.Embedding(SPARSE * VOCAB, DIM)
        self.register_buffer("offsets", torch.arange(SPARSE) * VOCAB)
        d = SPARSE * DIM + DENSE
        if kind == "shared_bottom":
            self.bottom = mlp(d, (256, 128))
        else:
            self.experts, self.gates = Experts(d, 8), nn.Linear(d, 16)
        self.towers = nn.ModuleList(mlp(128, (64,)) for _ in range(2))
        self.heads = nn.ModuleList(nn.Linear(64, 1) for _ in range(2))

    def forward(self, ids, dense):
        B = ids.shape[0]
        rows = ids + self.offsets
        e = Lookup.apply(self.emb.weight, rows) if self.training else self.emb(rows)
        x = torch.cat([e.reshape(B, -1), dense], 1)
        if self.kind == "shared_bottom":
            h = self.bottom(x)
            z = [h, h]
        else:
            ex = self.experts(x)
            g = self.gates(x).view(B, 2, 8).softmax(-1)
            z = [(g[:, i].unsqueeze(-1) * ex).sum(1) for i in range(2)]
        return [head(tower(v)).squeeze(-1) for v, tower, head in zip(z, self.towers, self.heads)]


def auc(score, label):
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = label.sum()
    return (ranks[label == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(label) - pos))


def main(path, kind, out):
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    table = pq.read_table(path)
    ids = torch.from_numpy(np.stack([table[f"c{i}"].to_numpy() for i in range(SPARSE)], 1))
    dense = torch.from_numpy(np.stack([table[f"i{i}"].to_numpy() for i in range(DENSE)], 1)
                             .astype(np.float32))
    labels = torch.from_numpy(np.stack([table["click"].to_numpy(), table["purchase"].to_numpy()],
                                       1).astype(np.float32))
    perm = torch.randperm(len(labels))
    n_val = int(len(labels) * VAL)
    val, train = perm[:n_val], perm[n_val:]
    model = Model(kind)
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    order = train[torch.randperm(len(train))]
    model.train()
    for s in range(0, len(order), BATCH):
        b = order[s:s + BATCH]
        logits = model(ids[b], dense[b])
        loss = sum(F.binary_cross_entropy_with_logits(l, labels[b, i])
                   for i, l in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        scores = model(ids[val], dense[val])
    aucs = [auc(s.numpy(), labels[val, i].numpy()) for i, s in enumerate(scores)]
    torch.save(model.state_dict(), f"{out}/model.pt")
    print(f"val auc ctr={aucs[0]:.4f} cvr={aucs[1]:.4f}  {time.perf_counter() - START:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
