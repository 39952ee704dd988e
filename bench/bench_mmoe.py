"""Training throughput: the compiled MMoE against a hand-written PyTorch MMoE of the same size.

Both models train on the same in-memory batches with the same optimizer (Adam, fused
where available), batch size and thread count; timed rounds of the two alternate in
one process and the median samples/s over rounds is compared. A third model, the
naive hand-written MMoE (an nn.ModuleList of experts looped over in Python, one
nn.Embedding per feature), is shown for context.

    python bench/bench_mmoe.py                      # 26 sparse x 16 + 13 dense, 8 experts
    python bench/bench_mmoe.py --spec specs/mmoe.mtl --batch 128
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl_dsl.model.compiler import CompiledModel, compile_model  # noqa: E402
from mtl_dsl.language.ir import Spec  # noqa: E402
from mtl_dsl.api import check_file, check_text  # noqa: E402
from mtl_dsl.training.metrics import task_loss  # noqa: E402

Batch = dict[str, torch.Tensor]
DEFAULT_VOCAB = 1000


# --------------------------------------------------------------------------
# The default model: Criteo-like input, 8 experts [256, 128], towers [64], 2 tasks
# --------------------------------------------------------------------------

def default_spec(folder: Path, sparse: int = 26, dense: int = 13, vocab: int = DEFAULT_VOCAB,
                 experts: int = 8) -> str:
    cats, nums = [f"c{i}" for i in range(sparse)], [f"i{i}" for i in range(dense)]
    header = folder / "header.csv"
    header.write_text(",".join([*cats, *nums, "click", "buy"]) + "\n")
    lines = [f'model bench_mmoe\ndata csv("{header.as_posix()}")']
    lines += [f"feature {c} = sparse(vocab={vocab}, dim=16)" for c in cats]
    lines += [f"feature {n} = dense(1)" for n in nums]
    lines += ["label click, buy", f"input x = concat({', '.join(cats + nums)})",
              f"experts e[{experts}] = mlp(x, 256, 128)",
              "gate g_ctr = softmax(x) over e", "gate g_cvr = softmax(x) over e",
              "tower t_ctr = mlp(g_ctr, 64)", "tower t_cvr = mlp(g_cvr, 64)",
              "task ctr: binary(label=click) from t_ctr",
              "task cvr: binary(label=buy) from t_cvr"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# What the hand-written models need to know about a spec
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """An MMoE's sizes: sparse vocabularies (one dim), dense width, experts, towers, heads."""

    vocabs: tuple[int, ...]
    dim: int
    dense: int
    experts: int
    widths: tuple[int, ...]
    tower: tuple[int, ...]
    outs: tuple[int, ...]


def mmoe_shape(spec: Spec, vocab: dict[str, int]) -> Shape | None:
    """The sizes when the spec is a plain MMoE (one relu expert group, one gate and one
    relu tower per task, no norm or dropout); else None."""
    if len(spec.experts) != 1 or len(spec.gates) != len(spec.tasks) or not spec.tasks:
        return None
    e = spec.experts[0]
    nets = [e.net, *(t.net for t in spec.towers)]
    if any(n.act != "relu" or n.norm != "none" or n.dropout > 0 for n in nets):
        return None
    if len({t.net.widths for t in spec.towers}) != 1 or len(spec.towers) != len(spec.tasks):
        return None
    sparse = [f for f in spec.features if f.kind == "sparse"]
    if len({f.params.dim for f in sparse}) > 1:
        return None
    return Shape(vocabs=tuple(vocab[f.name] for f in sparse),
                 dim=sparse[0].params.dim if sparse else 0,
                 dense=sum(f.width for f in spec.features if f.kind == "dense"),
                 experts=e.count, widths=e.net.widths, tower=spec.towers[0].net.widths,
                 outs=tuple(t.out_dim for t in spec.tasks))


def vocab_sizes(spec: Spec) -> dict[str, int]:
    return {f.name: f.params.vocab if isinstance(f.params.vocab, int) else DEFAULT_VOCAB
            for f in spec.features if f.kind == "sparse"}


# --------------------------------------------------------------------------
# Hand-written models
# --------------------------------------------------------------------------

def _mlp(in_dim: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(in_dim, w), nn.ReLU()]
        in_dim = w
    return nn.Sequential(*layers)


class HandMMoE(nn.Module):
    """MMoE as one would write it knowing the tricks: one embedding table with offsets,
    all experts' first layers as one matmul, baddbmm for the deeper ones, all gates as
    one matmul, and a broadcast multiply-and-sum to mix."""

    def __init__(self, s: Shape):
        super().__init__()
        self.s, n = s, s.experts
        self.emb = nn.Embedding(sum(s.vocabs), s.dim) if s.vocabs else None
        offsets = torch.tensor([0, *s.vocabs[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets[:len(s.vocabs)])
        d_in = len(s.vocabs) * s.dim + s.dense
        self.first = nn.Linear(d_in, n * s.widths[0])
        self.deep = nn.ParameterList()
        for a, b in zip(s.widths, s.widths[1:]):
            self.deep.append(nn.Parameter(torch.empty(n, a, b).uniform_(-a ** -0.5, a ** -0.5)))
            self.deep.append(nn.Parameter(torch.zeros(n, 1, b)))
        self.gates = nn.Linear(d_in, len(s.outs) * n)
        self.towers = nn.ModuleList(_mlp(s.widths[-1], s.tower) for _ in s.outs)
        self.heads = nn.ModuleList(nn.Linear(s.tower[-1] if s.tower else s.widths[-1], o)
                                   for o in s.outs)

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> list[torch.Tensor]:
        B, n = dense.shape[0], self.s.experts
        parts = [self.emb(ids + self.offsets).view(B, -1)] if self.s.vocabs else []
        x = torch.cat([*parts, dense], 1)  # (B, d_in)
        h = F.relu(self.first(x)).view(B, n, -1).transpose(0, 1)  # (n, B, h1)
        for w, b in zip(self.deep[::2], self.deep[1::2]):
            h = F.relu(torch.baddbmm(b, h, w))  # (n, B, h)
        e = h.transpose(0, 1)  # (B, n, D)
        g = self.gates(x).view(B, len(self.s.outs), n).softmax(-1)  # (B, K, n)
        return [head(tower((g[:, k].unsqueeze(-1) * e).sum(1))).squeeze(-1)
                for k, (tower, head) in enumerate(zip(self.towers, self.heads))]


class NaiveMMoE(nn.Module):
    """The textbook version: an nn.Embedding per feature, a Python loop over experts."""

    def __init__(self, s: Shape):
        super().__init__()
        self.s = s
        self.embs = nn.ModuleList(nn.Embedding(v, s.dim) for v in s.vocabs)
        d_in = len(s.vocabs) * s.dim + s.dense
        self.experts = nn.ModuleList(_mlp(d_in, s.widths) for _ in range(s.experts))
        self.gates = nn.ModuleList(nn.Linear(d_in, s.experts) for _ in s.outs)
        self.towers = nn.ModuleList(_mlp(s.widths[-1], s.tower) for _ in s.outs)
        self.heads = nn.ModuleList(nn.Linear(s.tower[-1] if s.tower else s.widths[-1], o)
                                   for o in s.outs)

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([emb(ids[:, i]) for i, emb in enumerate(self.embs)] + [dense], 1)
        e = torch.stack([f(x) for f in self.experts], 1)  # (B, n, D)
        return [head(tower((gate(x).softmax(-1).unsqueeze(-1) * e).sum(1))).squeeze(-1)
                for gate, tower, head in zip(self.gates, self.towers, self.heads)]


# --------------------------------------------------------------------------
# Data, losses, timing
# --------------------------------------------------------------------------

def make_batches(spec: Spec, vocab: dict[str, int], batch: int, count: int, seed: int = 0
                 ) -> list[tuple[Batch, dict[str, torch.Tensor]]]:
    """Random feature batches (dict per feature) with labels per task."""
    g = torch.Generator().manual_seed(seed)
    owner = {f.name: (f.params.share or f.name) for f in spec.features if f.kind == "sparse"}
    out = []
    for _ in range(count):
        x: Batch = {}
        for f in spec.features:
            if f.kind == "sparse":
                x[f.name] = torch.randint(0, vocab[owner[f.name]], (batch,), generator=g)
            else:
                x[f.name] = torch.randn(batch, f.width, generator=g)
        y = {t.name: _label(t.kind, t.out_dim, batch, g) for t in spec.tasks}
        out.append((x, y))
    return out


def _label(kind: str, classes: int, batch: int, g: torch.Generator) -> torch.Tensor:
    if kind == "binary":
        return torch.randint(0, 2, (batch,), generator=g).float()
    if kind == "multiclass":
        return torch.randint(0, classes, (batch,), generator=g)
    return torch.randn(batch, generator=g)


def hand_inputs(spec: Spec, x: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The hand-written models read all ids as one (B, F) tensor and all dense as (B, D)."""
    sparse = [x[f.name] for f in spec.features if f.kind == "sparse"]
    dense = [x[f.name] for f in spec.features if f.kind == "dense"]
    B = dense[0].shape[0] if dense else sparse[0].shape[0]
    ids = torch.stack(sparse, 1) if sparse else torch.zeros(B, 0, dtype=torch.long)
    return ids, torch.cat(dense, 1) if dense else torch.zeros(B, 0)


def trainer(spec: Spec, model: nn.Module, batches, hand: bool) -> Callable[[int], None]:
    """A closure running `steps` Adam steps over the batches (cycled)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **_adam_flags())
    kinds = [t.kind for t in spec.tasks]
    names = [t.name for t in spec.tasks]
    prepared = [(hand_inputs(spec, x) if hand else x, [y[n] for n in names]) for x, y in batches]
    state = {"i": 0}

    def run(steps: int) -> None:
        for _ in range(steps):
            x, ys = prepared[state["i"] % len(prepared)]
            state["i"] += 1
            outs = model(*x) if hand else list(model(x).values())
            loss = sum(task_loss(k, o, y) for k, o, y in zip(kinds, outs, ys))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def _adam_flags() -> dict[str, bool]:
    try:
        torch.optim.Adam([nn.Parameter(torch.zeros(1))], fused=True)
        return {"fused": True}
    except (RuntimeError, TypeError):
        return {"foreach": True}


def bench(runs: dict[str, Callable[[int], None]], batch: int, rounds: int, steps: int
          ) -> dict[str, list[float]]:
    """Interleaved timed rounds (the order reversed every other round, so drift in the
    machine's load hits every model alike); samples/s of every round for every model."""
    for run in runs.values():
        run(2)  # warm-up: allocator, kernels, optimizer state
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            runs[name](steps)
            rates[name].append(steps * batch / (time.perf_counter() - start))
    return rates


def table(rates: dict[str, list[float]], params: dict[str, int], reference: str | None) -> str:
    """Median samples/s, and the median of per-round ratios to the reference (rounds
    run back to back, so a ratio compares two runs under the same machine load)."""
    rows = ["| model | params | samples/s (median) | min | max | ratio (median of rounds) |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, r in rates.items():
        ratio = "-"
        if reference:
            ratio = f"{statistics.median(a / b for a, b in zip(r, rates[reference])):.3f}"
        rows.append(f"| {name} | {params[name]:,} | {statistics.median(r):,.0f} | "
                    f"{min(r):,.0f} | {max(r):,.0f} | {ratio} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def load_spec(path: str | None, folder: Path):
    checked = check_file(path) if path else check_text(default_spec(folder), "bench_mmoe.mtl")
    return checked.raise_for_errors()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", help="a .mtl spec to bench instead of the default MMoE")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--steps", type=int, default=3, help="training steps per timed round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-naive", action="store_true", help="skip the naive hand-written model")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        checked = load_spec(args.spec, Path(tmp))
    spec, vocab = checked.spec, vocab_sizes(checked.spec)
    compiled: CompiledModel = compile_model(spec, checked.graph, vocab_sizes=vocab)
    batches = make_batches(spec, vocab, args.batch, count=8)
    models: dict[str, tuple[nn.Module, bool]] = {"compiled (mtl-dsl)": (compiled, False)}
    shape = mmoe_shape(spec, vocab)
    if shape is not None:
        models["hand-written (batched)"] = (HandMMoE(shape), True)
        if not args.no_naive:
            models["hand-written (naive loop)"] = (NaiveMMoE(shape), True)
    runs = {name: trainer(spec, m, batches, hand) for name, (m, hand) in models.items()}
    params = {name: sum(p.numel() for p in m.parameters()) for name, (m, _) in models.items()}
    rates = bench(runs, args.batch, args.rounds, args.steps)
    print(f"spec: {spec.name}  batch: {args.batch}  threads: {torch.get_num_threads()}  "
          f"rounds: {args.rounds} x {args.steps} steps  torch {torch.__version__}  "
          f"optimizer: Adam {_adam_flags()}\n")
    reference = "hand-written (batched)" if shape is not None else None
    print(table(rates, params, reference))
    if shape is None:
        print("\n(no hand-written counterpart: the spec is not a plain MMoE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
