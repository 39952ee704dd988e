"""The compiled models against torch-rechub, DeepCTR-Torch and a hand-written PyTorch reference.

Workload (one machine, one run): 200,000 rows; 26 sparse features (vocabulary 10,000,
embedding dim 16) and 13 dense ones; two binary tasks (click, and purchase only after a
click); batch 2,048; Adam 1e-3; 2 threads; float32. Models: shared-bottom (bottom
[256, 128], towers [64]), MMoE (8 experts [256, 128], towers [64]), PLE (2 levels, 2
specific experts per task + 2 shared, [256, 128], towers [64]), ESMM (towers [256, 128, 64]).

Figures, per model and library:
  step   training-step samples/s on in-memory batches (rounds of the libraries alternate in
         one process; the median round counts)
  epoch  wall time of one whole epoch through the library's own data pipeline, each in a
         fresh subprocess, the fastest of --repeats (libraries alternate): ours from the Parquet (or CSV) file through our loader (read,
         encoders fitted, tensors, shuffled slices); the reference from the same file via
         pyarrow into tensors; torch-rechub via pandas + its DataGenerator/DataLoader and
         MTLTrainer.train_one_epoch; DeepCTR-Torch via pandas + model.fit
  memory peak resident memory of that subprocess
  params parameter count

    pip install -e '.[bench]'
    python bench/bench_zoo.py                      # everything (~15 min on 2 cores)
    python bench/bench_zoo.py --models mmoe --rows 20000 --rounds 2    # a quick look
    python bench/bench_zoo.py --libs ours reference --no-epoch --roofline --rows 50000 \
        --rounds 5     # training steps against the hand-fused reference, % of a matmul roofline
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPARSE, DENSE, VOCAB, DIM = 26, 13, 10_000, 16
BATCH, LR, THREADS = 2048, 1e-3, 2
MODELS = ("shared_bottom", "mmoe", "ple", "esmm")
LIBS = ("ours", "reference", "rechub", "deepctr")
CATS = [f"c{i}" for i in range(SPARSE)]
NUMS = [f"i{i}" for i in range(DENSE)]


# --------------------------------------------------------------------------
# Data and specs
# --------------------------------------------------------------------------

def make_data(folder: Path, rows: int, fmt: str, seed: int = 0) -> Path:
    """Popularity-skewed ids, standard-normal dense values, click ~ logistic of a few
    features, purchase only on clicked rows."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    weights = 1.0 / np.arange(1, VOCAB + 1) ** 0.9
    weights /= weights.sum()
    for c in CATS:
        cols[c] = rng.choice(VOCAB, size=rows, p=weights).astype(np.int64)
    dense = rng.standard_normal((rows, DENSE)).astype(np.float32)
    for i, c in enumerate(NUMS):
        cols[c] = dense[:, i]
    score = dense[:, :4] @ np.array([0.8, -0.5, 0.3, 0.2]) + (cols["c0"] % 7 == 0) - 2.0
    click = rng.random(rows) < 1 / (1 + np.exp(-score))
    purchase = click & (rng.random(rows) < 1 / (1 + np.exp(-(dense[:, 4] - 1.0))))
    cols["click"], cols["purchase"] = click.astype(np.int64), purchase.astype(np.int64)
    table = pa.table(cols)
    path = folder / f"bench.{fmt}"
    pq.write_table(table, path) if fmt == "parquet" else pacsv.write_csv(table, path)
    return path


def spec_text(model: str, data: Path) -> str:
    kind = "parquet" if data.suffix == ".parquet" else "csv"
    lines = [f"model zoo_{model}", f'data {kind}("{data.as_posix()}")']
    lines += [f"feature {c} = sparse(vocab={VOCAB}, dim={DIM})" for c in CATS]
    lines += [f"feature {n} = dense(norm=none)" for n in NUMS]
    lines += ["label click, purchase", f"input x = concat({', '.join(CATS + NUMS)})"]
    tasks = ["task ctr: binary(label=click) from t_ctr",
             "task cvr: binary(label=purchase) from t_cvr"]
    if model == "shared_bottom":
        lines += ["experts bottom = mlp(x, 256, 128)", "tower t_ctr = mlp(bottom, 64)",
                  "tower t_cvr = mlp(bottom, 64)", *tasks]
    elif model == "mmoe":
        lines += ["experts e[8] = mlp(x, 256, 128)", "gate g_ctr = softmax(x) over e",
                  "gate g_cvr = softmax(x) over e", "tower t_ctr = mlp(g_ctr, 64)",
                  "tower t_cvr = mlp(g_cvr, 64)", *tasks]
    elif model == "ple":
        lines += ["extract p = ple(x, levels=2, specific=2, shared=2, expert=mlp(256, 128), "
                  "tasks=[ctr, cvr])", "tower t_ctr = mlp(p.ctr, 64)",
                  "tower t_cvr = mlp(p.cvr, 64)", *tasks]
    else:
        lines += ["label ctcvr_label = click & purchase",
                  "tower t_ctr = mlp(x, 256, 128, 64)", "tower t_cvr = mlp(x, 256, 128, 64)",
                  "task ctr: binary(label=click) from t_ctr",
                  "task cvr: binary(label=purchase, loss=none, where=click) from t_cvr",
                  "task ctcvr: binary(label=ctcvr_label) = ctr * cvr"]
    lines.append(f"train epochs=1 batch={BATCH} lr={LR} threads={THREADS} val=0.01")
    return "\n".join(lines) + "\n"


def load_spec(model: str, data: Path):
    from mtl_dsl.api import check_text

    return check_text(spec_text(model, data), f"zoo_{model}.mtl").raise_for_errors()


# --------------------------------------------------------------------------
# The hand-written reference: every trick, nothing generic
# --------------------------------------------------------------------------

class IndexAddLookup(torch.autograd.Function):
    """rows = weight[ids]; backward: index_add_ of the output gradients into a zeroed dense
    gradient (the same sums as aten's embedding_dense_backward, in about half the time on CPU;
    only the order of summation of a repeated id's rows may differ)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows = weight.shape[0]
        return weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ids,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.rows, grad.shape[-1])
        out.index_add_(0, ids.reshape(-1), grad.reshape(-1, grad.shape[-1]))
        return out, None


def adam(params) -> torch.optim.Adam:
    """Adam with torch's fused kernel where it has one for CPU (torch >= 2.4), else foreach."""
    try:
        return torch.optim.Adam(params, lr=LR, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=LR, foreach=True)


class Experts(nn.Module):
    """n experts [in -> widths]: the first layer of all as one wide matmul, then baddbmm."""

    def __init__(self, d_in: int, n: int, widths: tuple[int, ...] = (256, 128)):
        super().__init__()
        self.n, self.h1 = n, widths[0]
        self.first = nn.Linear(d_in, n * widths[0])
        self.w = nn.ParameterList()
        self.b = nn.ParameterList()
        for a, b in zip(widths, widths[1:]):
            self.w.append(nn.Parameter(torch.empty(n, a, b).uniform_(-a ** -0.5, a ** -0.5)))
            self.b.append(nn.Parameter(torch.empty(n, 1, b).uniform_(-a ** -0.5, a ** -0.5)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, n, D)
        B = x.shape[0]
        h = F.relu(self.first(x)).view(B, self.n, self.h1).transpose(0, 1)  # (n, B, h1)
        for w, b in zip(self.w, self.b):
            h = F.relu(torch.baddbmm(b, h, w))  # (n, B, h)
        return h.transpose(0, 1)  # (B, n, D)


def mlp(d_in: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(d_in, w), nn.ReLU()]
        d_in = w
    return nn.Sequential(*layers)


def mix(w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    return (w.unsqueeze(-1) * e).sum(1)  # (B, n, 1) * (B, n, D) -> (B, D)


class Reference(nn.Module):
    """All four models; `forward(ids, dense)` -> {task: logit}."""

    def __init__(self, model: str):
        super().__init__()
        self.model = model
        self.emb = nn.Embedding(SPARSE * VOCAB, DIM)
        self.register_buffer("offsets", torch.arange(SPARSE) * VOCAB)
        d = SPARSE * DIM + DENSE
        if model == "shared_bottom":
            self.bottom = mlp(d, (256, 128))
        elif model == "mmoe":
            self.experts = Experts(d, 8)
            self.gates = nn.Linear(d, 2 * 8)
        elif model == "ple":
            self.l1 = nn.ModuleList(Experts(d, 2) for _ in range(3))  # ctr, cvr, shared
            self.g1 = nn.Linear(d, 2 * 4 + 6)  # ctr, cvr gates (4 experts), shared gate (6)
            self.l2 = nn.ModuleList(Experts(128, 2) for _ in range(3))
            self.g2 = nn.ModuleList(nn.Linear(128, 4) for _ in range(2))
        tower = (256, 128, 64) if model == "esmm" else (64,)
        d_tower = d if model == "esmm" else 128
        self.towers = nn.ModuleList(mlp(d_tower, tower) for _ in range(2))
        self.heads = nn.ModuleList(nn.Linear(64, 1) for _ in range(2))

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        B = ids.shape[0]
        rows = ids + self.offsets
        e = IndexAddLookup.apply(self.emb.weight, rows) if self.training and \
            torch.is_grad_enabled() else self.emb(rows)  # (B, F, d)
        x = torch.cat([e.view(B, -1), dense], 1)  # (B, d)
        if self.model == "shared_bottom":
            h = self.bottom(x)
            inputs = [h, h]
        elif self.model == "mmoe":
            e = self.experts(x)  # (B, 8, 128)
            g = self.gates(x).view(B, 2, 8).softmax(-1)
            inputs = [mix(g[:, 0], e), mix(g[:, 1], e)]
        elif self.model == "ple":
            inputs = self._ple(x, B)
        else:
            inputs = [x, x]
        logits = [head(tower(z)).squeeze(-1) for z, tower, head in
                  zip(inputs, self.towers, self.heads)]
        if self.model != "esmm":
            return {"ctr": logits[0], "cvr": logits[1]}
        p = torch.sigmoid(logits[0]) * torch.sigmoid(logits[1])
        return {"ctr": logits[0], "cvr": logits[1], "ctcvr": torch.logit(p, eps=1e-7)}

    def _ple(self, x: torch.Tensor, B: int) -> list[torch.Tensor]:
        e_ctr, e_cvr, e_sh = (group(x) for group in self.l1)  # (B, 2, 128) each
        g = self.g1(x)
        w_ctr, w_cvr = g[:, :4].softmax(-1), g[:, 4:8].softmax(-1)
        w_sh = g[:, 8:].softmax(-1)
        z_ctr = mix(w_ctr, torch.cat([e_ctr, e_sh], 1))
        z_cvr = mix(w_cvr, torch.cat([e_cvr, e_sh], 1))
        z_sh = mix(w_sh, torch.cat([e_ctr, e_cvr, e_sh], 1))
        f_ctr, f_cvr, f_sh = self.l2[0](z_ctr), self.l2[1](z_cvr), self.l2[2](z_sh)
        out_ctr = mix(self.g2[0](z_ctr).softmax(-1), torch.cat([f_ctr, f_sh], 1))
        out_cvr = mix(self.g2[1](z_cvr).softmax(-1), torch.cat([f_cvr, f_sh], 1))
        return [out_ctr, out_cvr]


def ref_loss(model: str, out: dict, click: torch.Tensor, purchase: torch.Tensor):
    bce = F.binary_cross_entropy_with_logits
    if model == "esmm":
        return bce(out["ctr"], click) + bce(out["ctcvr"], click * purchase)
    return bce(out["ctr"], click) + bce(out["cvr"], purchase)


# --------------------------------------------------------------------------
# The zoos
# --------------------------------------------------------------------------

def rechub_model(model: str):
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import ESMM, MMOE, PLE, SharedBottom

    sparse = [SparseFeature(c, vocab_size=VOCAB, embed_dim=DIM) for c in CATS]
    dense = [DenseFeature(n) for n in NUMS]
    tower = {"dims": [64]}
    expert = {"dims": [256, 128]}
    if model == "shared_bottom":
        return SharedBottom(sparse + dense, ["classification"] * 2, expert, [tower, tower])
    if model == "mmoe":
        return MMOE(sparse + dense, ["classification"] * 2, 8, expert, [tower, tower])
    if model == "ple":
        return PLE(sparse + dense, ["classification"] * 2, 2, 2, 2, expert, [tower, tower])
    # ESMM sizes its towers as (#features x embed_dim): sparse features only
    return ESMM(sparse[:13], sparse[13:], {"dims": [256, 128, 64]}, {"dims": [256, 128, 64]})


def deepctr_model(model: str):
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models.multitask import ESMM, MMOE, PLE, SharedBottom

    cols = [SparseFeat(c, vocabulary_size=VOCAB, embedding_dim=DIM) for c in CATS] + \
        [DenseFeat(n, 1) for n in NUMS]
    common = {"l2_reg_embedding": 0.0, "l2_reg_linear": 0.0, "task_types": ("binary", "binary")}
    if model == "shared_bottom":
        m = SharedBottom(cols, bottom_dnn_hidden_units=(256, 128), tower_dnn_hidden_units=(64,),
                         task_names=("ctr", "cvr"), **common)
    elif model == "mmoe":
        m = MMOE(cols, num_experts=8, expert_dnn_hidden_units=(256, 128),
                 gate_dnn_hidden_units=(), tower_dnn_hidden_units=(64,),
                 task_names=("ctr", "cvr"), **common)
    elif model == "ple":
        m = PLE(cols, shared_expert_num=2, specific_expert_num=2, num_levels=2,
                expert_dnn_hidden_units=(256, 128), gate_dnn_hidden_units=(),
                tower_dnn_hidden_units=(64,), task_names=("ctr", "cvr"), **common)
    else:
        m = ESMM(cols, tower_dnn_hidden_units=(256, 128, 64), task_names=("ctr", "ctcvr"),
                 **common)
    return m


# --------------------------------------------------------------------------
# Training steps on in-memory batches
# --------------------------------------------------------------------------

def batches(count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        click = (torch.rand(BATCH, generator=g) < 0.3).float()
        out.append({"ids": torch.randint(0, VOCAB, (BATCH, SPARSE), generator=g),
                    "dense": torch.randn(BATCH, DENSE, generator=g),
                    "click": click,
                    "purchase": click * (torch.rand(BATCH, generator=g) < 0.3).float()})
    return out


class Trainer:
    """One library's model and a `step(batch)` doing forward, loss, backward, Adam."""

    def __init__(self, lib: str, model: str, data: Path):
        self.lib, self.model_name = lib, model
        torch.manual_seed(0)
        if lib == "ours":
            from mtl_dsl.model.compiler import compile_model
            from mtl_dsl.training.loop import make_optimizer
            from mtl_dsl.training.weighting.methods import make

            checked = load_spec(model, data)
            self.spec = checked.spec
            self.net = compile_model(checked.spec, checked.graph, {c: VOCAB for c in CATS})
            self.scheme = make(checked.spec)
            self.opt = make_optimizer(checked.spec, self.net, self.scheme)
        elif lib == "reference":
            self.net = Reference(model)
            self.opt = adam(self.net.parameters())
        elif lib == "rechub":
            self.net = rechub_model(model)
            self.opt = torch.optim.Adam(self.net.parameters(), lr=LR)
        else:
            self.net = deepctr_model(model)
            self.opt = torch.optim.Adam(self.net.parameters(), lr=LR)
        self.net.train()

    def params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def inputs(self, b: dict) -> object:
        if self.lib == "ours":
            x = {c: b["ids"][:, i] for i, c in enumerate(CATS)}
            x |= {n: b["dense"][:, i:i + 1] for i, n in enumerate(NUMS)}
            for t in self.spec.tasks:
                x[f"label:{t.name}"] = {"ctr": b["click"], "cvr": b["purchase"],
                                        "ctcvr": b["click"] * b["purchase"]}[t.name]
            return x
        if self.lib == "rechub":
            x = {c: b["ids"][:, i] for i, c in enumerate(CATS)}
            return x | {n: b["dense"][:, i] for i, n in enumerate(NUMS)}
        if self.lib == "deepctr":
            return torch.cat([b["ids"].float(), b["dense"]], 1)
        return b

    def step(self, x: object, b: dict) -> None:
        if self.lib == "ours":
            from mtl_dsl.training.metrics import task_loss

            out = self.net(x)
            losses = {t.name: task_loss(t.kind, out[t.name], x[f"label:{t.name}"])
                      for t in self.spec.supervised}
            loss = self.scheme.step(losses)
        elif self.lib == "reference":
            loss = ref_loss(self.model_name, self.net(b["ids"], b["dense"]), b["click"],
                            b["purchase"])
        elif self.lib == "rechub":
            y = self.net(x)
            if self.model_name == "esmm":  # [cvr, ctr, ctcvr]; ctr and ctcvr are trained
                loss = F.binary_cross_entropy(y[:, 1], b["click"]) + \
                    F.binary_cross_entropy(y[:, 2], b["click"] * b["purchase"])
            else:
                loss = sum(F.binary_cross_entropy(y[:, i], b[k]) / 2
                           for i, k in enumerate(("click", "purchase")))
        else:
            y = self.net(x)
            second = b["click"] * b["purchase"] if self.model_name == "esmm" else b["purchase"]
            loss = F.binary_cross_entropy(y[:, 0], b["click"]) + \
                F.binary_cross_entropy(y[:, 1], second)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def step_flops(model: str) -> float:
    """Matmul FLOPs of one training step of the reference: every Linear / expert weight
    multiplies each of the B rows once forward and twice backward (input and weight
    gradients), 2 FLOPs a multiply-add: 6 * B * (matmul weights). Biases, activations,
    softmaxes, the lookup and Adam are left out: this is the work a roofline bounds."""
    net = Reference(model)
    weights = sum(p.numel() for n, p in net.named_parameters()
                  if p.ndim >= 2 and not n.startswith("emb"))
    return 6.0 * BATCH * weights


def roofline(size: int = 2048, reps: int = 5) -> float:
    """fp32 GFLOP/s of a large square matmul on torch's threads: the best of `reps`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


def step_report(results: dict, peak: float) -> str:
    """Step rates only: samples/s (wall and CPU time) against the reference, matmul
    GFLOP/s (wall) and its % of `peak`."""
    lines = [f"| model | library | step samples/s | vs reference | samples/CPU-s | "
             f"vs reference | matmul GFLOP/s | % of {peak:.0f} GFLOP/s |",
             "|---|---|---|---|---|---|---|---|"]
    for model, per_lib in results.items():
        ref = per_lib.get("reference", {})
        per_sample = step_flops(model) / BATCH
        for lib, r in per_lib.items():
            rate, cpu = r["step_samples_per_s"], r["step_samples_per_cpu_s"]
            ratio = f"{rate / ref['step_samples_per_s']:.2f}×" if ref else "-"
            cpu_ratio = f"{cpu / ref['step_samples_per_cpu_s']:.2f}×" if ref else "-"
            gflops = rate * per_sample / 1e9
            lines.append(f"| {model} | {lib} | {rate:,.0f} | {ratio} | {cpu:,.0f} | "
                         f"{cpu_ratio} | {gflops:.1f} | {100 * gflops / peak:.0f}% |")
    return "\n".join(lines)


def step_rates(model: str, libs: list[str], data: Path, rounds: int, steps: int
               ) -> dict[str, dict]:
    """Median samples/s per library over alternating timed rounds: per wall second, and per
    CPU second of this process (all its threads): on a machine other processes load, the
    CPU-time figure is the steadier measure of the work a step does."""
    trainers = {lib: Trainer(lib, model, data) for lib in libs}
    data_b = batches(4)
    prepared = {lib: [(t.inputs(b), b) for b in data_b] for lib, t in trainers.items()}
    rates: dict[str, list[float]] = {lib: [] for lib in libs}
    cpu_rates: dict[str, list[float]] = {lib: [] for lib in libs}
    for lib, t in trainers.items():  # warm-up
        for x, b in prepared[lib][:2]:
            t.step(x, b)
    for _ in range(rounds):
        for lib, t in trainers.items():
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(steps):
                x, b = prepared[lib][i % len(prepared[lib])]
                t.step(x, b)
            rates[lib].append(steps * BATCH / (time.perf_counter() - start))
            cpu_rates[lib].append(steps * BATCH / (time.process_time() - cpu))
    return {lib: {"step_samples_per_s": statistics.median(r),
                  "step_samples_per_cpu_s": statistics.median(cpu_rates[lib]),
                  "params": trainers[lib].params()} for lib, r in rates.items()}


# --------------------------------------------------------------------------
# Whole epochs through each library's pipeline, one subprocess each
# --------------------------------------------------------------------------

def epoch(lib: str, model: str, data: Path) -> dict:
    """Runs in a fresh process: read the file, build the library's pipeline, train 1 epoch."""
    torch.set_num_threads(THREADS)
    _imports(lib)  # a library's import time is not part of its epoch
    start = time.perf_counter()
    if lib == "ours":
        n = _epoch_ours(model, data)
    elif lib == "reference":
        n = _epoch_reference(model, data)
    elif lib == "rechub":
        n = _epoch_rechub(model, data)
    else:
        n = _epoch_deepctr(model, data)
    seconds = time.perf_counter() - start
    return {"epoch_s": seconds, "rows": n, "peak_mib": _peak_mib()}


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _imports(lib: str) -> None:
    if lib == "ours":
        import mtl_dsl.model.compiler  # noqa: F401
        import mtl_dsl.data.prepare  # noqa: F401
        import mtl_dsl.language.check  # noqa: F401
        import mtl_dsl.training.loop  # noqa: F401
    elif lib == "rechub":
        import pandas  # noqa: F401
        import torch_rechub.trainers  # noqa: F401
    elif lib == "deepctr":
        import deepctr_torch.models.multitask  # noqa: F401
        import pandas  # noqa: F401
    import pyarrow.csv  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import torch._dynamo  # noqa: F401  (torch.optim imports it on first use: 2 s)
    import pyarrow.parquet  # noqa: F401


def _epoch_ours(model: str, data: Path) -> int:
    """Our loader end to end: the spec's source read by pyarrow, labels checked, encoders
    fitted on all rows, one encode into tensors, shuffled slices; our training step."""
    from mtl_dsl.data.encoders import Encoders
    from mtl_dsl.data.frames import load
    from mtl_dsl.data.labels import encode_labels
    from mtl_dsl.data.tensors import to_tensors
    from mtl_dsl.data.values import label_key
    from mtl_dsl.model.compiler import compile_model
    from mtl_dsl.training.metrics import task_loss
    from mtl_dsl.training.loop import make_optimizer
    from mtl_dsl.training.weighting.methods import make

    checked = load_spec(model, data)
    spec = checked.spec
    frame = load(spec)
    labels = encode_labels(spec, frame)
    n = len(labels[label_key(spec.tasks[0].name)])
    encoders = Encoders.fit(spec, frame, np.arange(n))
    tensors = to_tensors({**encoders.encode(frame), **labels})
    torch.manual_seed(0)
    net = compile_model(spec, checked.graph, encoders.vocab_sizes())
    scheme = make(spec)
    opt = make_optimizer(spec, net, scheme)
    for batch in tensors.batches(BATCH, torch.Generator().manual_seed(0)):
        out = net(batch)
        losses = {t.name: task_loss(t.kind, out[t.name], batch[label_key(t.name)])
                  for t in spec.supervised}
        opt.zero_grad(set_to_none=True)
        scheme.step(losses).backward()
        opt.step()
    return n


def _epoch_reference(model: str, data: Path) -> int:
    table = _read(data)
    ids = torch.from_numpy(np.stack([table[c].to_numpy() for c in CATS], 1))
    dense = torch.from_numpy(np.stack([table[c].to_numpy() for c in NUMS], 1).astype(np.float32))
    click = torch.from_numpy(table["click"].to_numpy().astype(np.float32))
    purchase = torch.from_numpy(table["purchase"].to_numpy().astype(np.float32))
    torch.manual_seed(0)
    net = Reference(model)
    opt = adam(net.parameters())
    perm = torch.randperm(len(click))
    ids, dense, click, purchase = ids[perm], dense[perm], click[perm], purchase[perm]
    for s in range(0, len(click), BATCH):
        sl = slice(s, s + BATCH)
        loss = ref_loss(model, net(ids[sl], dense[sl]), click[sl], purchase[sl])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(click)


def _read(data: Path):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    return pq.read_table(data) if data.suffix == ".parquet" else pacsv.read_csv(data)


def _pandas(data: Path):
    import pandas as pd

    return pd.read_parquet(data) if data.suffix == ".parquet" else pd.read_csv(data)


def _epoch_rechub(model: str, data: Path) -> int:
    import functools

    import tqdm
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    tqdm.tqdm = functools.partial(tqdm.tqdm, disable=True)  # no progress bar on stderr
    df = _pandas(data)
    x = {c: df[c].values for c in CATS + NUMS}
    if model == "esmm":
        y = np.stack([df["purchase"], df["click"], df["click"] * df["purchase"]], 1)
        types = ["classification"] * 3
    else:
        y = np.stack([df["click"], df["purchase"]], 1)
        types = ["classification"] * 2
    torch.manual_seed(0)
    net = rechub_model(model)
    trainer = MTLTrainer(net, types, optimizer_params={"lr": LR, "weight_decay": 0.0},
                         n_epoch=1, device="cpu", model_path=tempfile.gettempdir())
    train_dl, _, _ = DataGenerator(x, y).generate_dataloader(x, y, x, y, batch_size=BATCH)
    trainer.train_one_epoch(train_dl)
    return len(df)


def _epoch_deepctr(model: str, data: Path) -> int:
    df = _pandas(data)
    x = {c: df[c].values for c in CATS + NUMS}
    second = df["click"] * df["purchase"] if model == "esmm" else df["purchase"]
    y = np.stack([df["click"].values, second.values], 1).astype(np.float32)
    torch.manual_seed(0)
    net = deepctr_model(model)
    net.compile("adam", loss=["binary_crossentropy", "binary_crossentropy"])
    net.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    return len(df)


def epoch_in_subprocess(lib: str, model: str, data: Path) -> dict:
    cmd = [sys.executable, __file__, "--epoch-child", lib, model, str(data)]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------

def available(lib: str) -> bool:
    mod = {"rechub": "torch_rechub", "deepctr": "deepctr_torch"}.get(lib)
    if mod is None:
        return True
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


def _shown(value: float | None, form: str) -> str:
    """A figure, or "-" where there is none (no reference, no epoch run)."""
    return "-" if value is None else form.format(value)


def report(results: dict, libs: list[str]) -> str:
    lines = ["| model | library | params | step samples/s | step vs ref | epoch s | "
             "epoch rows/s | epoch: ours faster by | peak MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for model, per_lib in results.items():
        ref = per_lib.get("reference", {})
        ours = per_lib.get("ours", {})
        for lib in libs:
            r = per_lib.get(lib, {})
            if "error" in r or not r:
                lines.append(f"| {model} | {lib} | - | - | - | {r.get('error', 'n/a')} | | | |")
                continue
            step_ratio = r["step_samples_per_s"] / ref["step_samples_per_s"] if ref else None
            epoch_s = r.get("epoch_s")  # none with --no-epoch: shown as "-", never as nan
            rows_s = r["rows"] / epoch_s if epoch_s else None
            faster = epoch_s / ours["epoch_s"] if ours.get("epoch_s") and epoch_s else None
            lines.append(f"| {model} | {lib} | {r['params']:,} | {r['step_samples_per_s']:,.0f} | "
                         f"{_shown(step_ratio, '{:.2f}×')} | {_shown(epoch_s, '{:.1f}')} | "
                         f"{_shown(rows_s, '{:,.0f}')} | {_shown(faster, '{:.2f}×')} | "
                         f"{_shown(r.get('peak_mib'), '{:,.0f}')} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--epoch-child":
        lib, model, data = sys.argv[2], sys.argv[3], Path(sys.argv[4])
        print(json.dumps(epoch(lib, model, data)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds of training steps")
    ap.add_argument("--steps", type=int, default=8, help="steps per round")
    ap.add_argument("--repeats", type=int, default=2,
                    help="whole epochs per library (the fastest counts: the machine is noisy)")
    ap.add_argument("--no-epoch", action="store_true", help="skip the whole-epoch figures")
    ap.add_argument("--roofline", action="store_true",
                    help="with --no-epoch: also a large fp32 matmul's GFLOP/s and each step's "
                         "share of it")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="torch threads of the step rates (1: CPU time without idle spinning)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    libs = [lib for lib in args.libs if available(lib)]
    missing = sorted(set(args.libs) - set(libs))
    if missing:
        print(f"not installed, skipped: {', '.join(missing)} (pip install -e '.[bench]')")
    results: dict[str, dict] = {}
    peak = roofline() if args.roofline else 0.0  # measured before and after: the best counts
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), args.rows, args.format)
        for model in args.models:
            results[model] = step_rates(model, libs, data, args.rounds, args.steps)
            for _ in range(0 if args.no_epoch else args.repeats):  # libraries alternate
                for lib in libs:
                    r = epoch_in_subprocess(lib, model, data)
                    best = results[model][lib]
                    if "error" in r or "error" in best:
                        best.setdefault("error", r.get("error"))
                    elif r["epoch_s"] < best.get("epoch_s", float("inf")):  # best of repeats
                        best |= r
            print(f"{model}: " + ", ".join(
                f"{lib} {r['step_samples_per_s']:,.0f}/s" for lib, r in results[model].items()),
                flush=True)
    print(f"\n{args.rows:,} rows ({args.format}), batch {BATCH}, {args.threads} threads, "
          f"torch {torch.__version__}\n")
    if args.no_epoch and args.roofline:
        print(step_report(results, max(peak, roofline())))
    else:
        print(report(results, libs))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
