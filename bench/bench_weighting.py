"""Step time of every weighting method relative to fixed weights, on the same MMoE.

Each method gets its own copy of the model (same initial weights), optimizer and scheme;
every round times `--steps` training steps of each method on the same in-memory batches,
the methods in a shuffled order (so drift in machine load falls on all of them alike), and
the median over rounds is reported. A step is what training does: forward, task losses,
the scheme's total, backward, optimizer step, the scheme's after-step hook.

    python bench/bench_weighting.py                       # specs/mmoe.mtl, batch 128
    python bench/bench_weighting.py --methods fixed,pcgrad,upgrad --rounds 5
    python bench/bench_weighting.py --on representation   # gradient methods on the representation
    python bench/bench_weighting.py --large               # experts mlp(x, 256, 128), towers 64
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl_dsl.data.prepare import prepare  # noqa: E402
from mtl_dsl.data.values import label_key  # noqa: E402
from mtl_dsl.language import registry as reg  # noqa: E402
from mtl_dsl.model.compiler import compile_model  # noqa: E402
from mtl_dsl.training.metrics import task_loss  # noqa: E402
from mtl_dsl.api import check_text  # noqa: E402
from mtl_dsl.training.optim import make_optimizer  # noqa: E402
from mtl_dsl.training.groups import ParamGroups  # noqa: E402
from mtl_dsl.training.weighting.methods import build  # noqa: E402


def runnable(methods: list[str], k: int) -> list[str]:
    """Methods this spec can run (Krum needs three tasks) with their solvers installed."""
    keep = []
    for m in methods:
        p = reg.WEIGHTINGS[m]()
        if p.min_tasks > k or p.missing_modules():
            print(f"skipping {m}: needs {p.min_tasks} tasks or {p.missing_modules()}",
                  file=sys.stderr)
            continue
        keep.append(m)
    return keep


class Trainer:
    """One method's model, optimizer and scheme, stepping through the shared batches."""

    def __init__(self, spec, vocab, method: str, on: str):
        torch.manual_seed(0)
        self.spec = spec
        self.model = compile_model(spec, None, vocab)
        self.model.train()
        cls = reg.WEIGHTINGS[method]
        params = cls(on=on) if cls.family == "gradient" else cls()
        tasks = [t.name for t in spec.supervised]
        self.scheme = build(method, params, tasks)
        self.scheme.attach(ParamGroups.of(self.model, self.model.graph))
        self.optimizer = make_optimizer(spec, self.model, self.scheme)
        self.supervised = list(spec.supervised)

    def losses(self, batch, keep: tuple[str, ...] = ()):
        out, kept = self.model.forward_keeping(batch, keep)
        return {t.name: task_loss(t.kind, out[t.name], batch[label_key(t.name)])
                for t in self.supervised}, kept

    def step(self, batch) -> None:
        losses, kept = self.losses(batch, self.scheme.keeps())
        self.optimizer.zero_grad(set_to_none=True)
        self.scheme.step(losses, kept).backward()
        self.optimizer.step()
        self.scheme.after_step(lambda: self.losses(batch)[0])

    def time(self, batches) -> float:
        t = time.perf_counter()
        for b in batches:
            self.step(b)
        return (time.perf_counter() - t) / len(batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default=str(Path(__file__).resolve().parents[1] / "specs/mmoe.mtl"))
    ap.add_argument("--methods", default=",".join(reg.WEIGHTINGS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="steps per method per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--on", default="parameters", choices=("parameters", "representation"))
    ap.add_argument("--large", action="store_true",
                    help="wider experts and towers: mlp(x, 256, 128) and mlp(g, 64)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    text = Path(args.spec).read_text()
    if args.large:
        text = re.sub(r"mlp\(x, [0-9, ]+\)", "mlp(x, 256, 128)", text)
        text = re.sub(r"mlp\((g_\w+), [0-9, ]+\)", r"mlp(\1, 64)", text)
    spec = check_text(text, args.spec, args.spec).raise_for_errors().spec
    rows = max(20 * args.batch, 2000)
    if spec.data is not None and "rows" in type(spec.data.params).model_fields:
        params = spec.data.params.model_copy(update={"rows": int(rows / 0.8) + 1})
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"params": params})})
    prep = prepare(spec)
    batches = [b for b in prep.train.batches(args.batch, torch.Generator().manual_seed(0))
               if len(next(iter(b.values()))) == args.batch][:args.steps]
    k = len(spec.supervised)
    methods = runnable([m.strip() for m in args.methods.split(",") if m.strip()], k)
    if "fixed" not in methods:
        methods.insert(0, "fixed")
    trainers = {m: Trainer(spec, prep.encoders.vocab_sizes(), m, args.on) for m in methods}
    for t in trainers.values():  # warm-up: imports, solver set-up, allocator
        t.time(batches[:3])
    times: dict[str, list[float]] = {m: [] for m in methods}
    order = list(methods)
    for _ in range(args.rounds):
        random.shuffle(order)
        for m in order:
            times[m].append(trainers[m].time(batches))
    base = statistics.median(times["fixed"])
    size = sum(p.numel() for p in next(iter(trainers.values())).model.parameters())
    print(f"{spec.name}{' (large)' if args.large else ''}: {size:,} parameters, {k} tasks, "
          f"batch {args.batch}, {args.steps} steps x {args.rounds} "
          f"rounds, {args.threads} thread(s), gradients on the {args.on}; "
          f"budget (K+1)x = {k + 1}x\n")
    print("| method | family | ms / step | x fixed |")
    print("|---|---|---:|---:|")
    for m in methods:
        med = statistics.median(times[m])
        print(f"| `{m}` | {reg.WEIGHTINGS[m].family} | {1e3 * med:.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
