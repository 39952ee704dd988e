"""Fuzz the front end: mutants of every shipped spec (and raw bytes) must end in diagnostics or
success, never in an exception; accepted ones must compile and run one forward and backward
pass on a tiny batch built from the spec, with exactly the parameter count `mtl check`
estimated (language/size.py).

    python bench/fuzz.py --minutes 10 [--seed 0] [--save crashes/]

prints specs tried / accepted / diagnosed / crashed and the slowest check. tests/test_fuzz.py
drives the same mutations and checks through hypothesis, for a bounded time.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mtl_dsl.api import check_text  # noqa: E402
from mtl_dsl.language.diagnostics import MtlError  # noqa: E402

SPECS = {p: p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.mtl"))}
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\d[\w.+-]*|[A-Za-z_][\w.]*|->|==|!=|<=|>=|'
                   r"\n|[ \t]+|.", re.S)
EXTREMES = ["0", "-1", "1", "1e-300", "1e308", "1e999", "-1e999", "0.5", "65536", "65537",
            "4294967296", "99999999999", "100000000000000000000", "9223372036854775807",
            "9" * 5000, "2147483648", "1000000000", "1024", "1025", "-0", "1.5", "nan"]
INSERTS = ["(", ")", "[", "]", ",", "=", ":", "->", "*", "&", "|", "!", '"', "\\", "\t", "\f",
           "\u2028", "\x00", "é", "\ufeff", "\r", "#", ".", "-", "+", "\u00a0", "😀", "\x1b[31m",
           '"a\\qb"', '"\t"', "over", "from", "task", "label", "mlp", "auto", "ple", "heac"]
MUTATIONS = ("delete", "duplicate", "swap", "number", "insert", "swap_lines", "truncate",
             "dup_line", "rename", "chain", "repeat_line")
SMALL_VOCAB = 7  # rows given to vocab=auto tables when an accepted mutant is compiled
RUN_LIMIT = 20_000_000  # accepted models larger than this are checked but not run


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def mutate(text: str, rng: random.Random, steps: int = 1) -> str:
    """`steps` grammar-aware mutations of a spec."""
    for _ in range(steps):
        text = MUTATORS[rng.choice(MUTATIONS)](text, rng)
    return text


def _tok_op(op):
    def run(text: str, rng: random.Random) -> str:
        toks = tokens(text)
        if not toks:
            return text
        op(toks, rng)
        return "".join(toks)
    return run


def _delete(toks, rng):
    del toks[rng.randrange(len(toks))]


def _duplicate(toks, rng):
    i = rng.randrange(len(toks))
    toks.insert(i, toks[i])


def _swap(toks, rng):
    i, j = rng.randrange(len(toks)), rng.randrange(len(toks))
    toks[i], toks[j] = toks[j], toks[i]


def _number(toks, rng):
    numbers = [i for i, t in enumerate(toks) if t[:1].isdigit()]
    if numbers:
        toks[rng.choice(numbers)] = rng.choice(EXTREMES)


def _insert(toks, rng):
    toks.insert(rng.randrange(len(toks) + 1), rng.choice(INSERTS))


def _rename(toks, rng):
    names = [i for i, t in enumerate(toks) if t[:1].isalpha() or t[:1] == "_"]
    if names:
        toks[rng.choice(names)] = toks[rng.choice(names)]


def _lines(op):
    def run(text: str, rng: random.Random) -> str:
        lines = text.split("\n")
        op(lines, rng)
        return "\n".join(lines)
    return run


def _swap_lines(lines, rng):
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]


def _dup_line(lines, rng):
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])


def _repeat_line(lines, rng):
    """A line many times over (duplicate declarations, thousands of unused features)."""
    i = rng.randrange(len(lines))
    lines[i:i + 1] = [lines[i]] * rng.choice([10, 100, 1000])


def _truncate(text: str, rng: random.Random) -> str:
    return text[:rng.randrange(len(text) + 1)]


def _chain(text: str, rng: random.Random) -> str:
    """A long chain of one operator over names of the spec (flat, as users write them)."""
    names = [t for t in tokens(text) if t[:1].isalpha()] or ["x"]
    op = rng.choice([" * ", " & ", " | ", " + ", ", "])
    chain = op.join(rng.choice(names) for _ in range(rng.choice([3, 50, 99, 150, 500])))
    kind = rng.choice(["label l = {}", "task z: binary(label=y) = {}", "input i = concat({})",
                       "gate g = softmax(x) over {}", "train x=[{}]"])
    return text + "\n" + kind.format(chain) + "\n"


MUTATORS = {"delete": _tok_op(_delete), "duplicate": _tok_op(_duplicate),
            "swap": _tok_op(_swap), "number": _tok_op(_number), "insert": _tok_op(_insert),
            "rename": _tok_op(_rename), "swap_lines": _lines(_swap_lines),
            "dup_line": _lines(_dup_line), "repeat_line": _lines(_repeat_line),
            "truncate": _truncate, "chain": _chain}


@dataclass
class Outcome:
    """What one input did: accepted (and ran), diagnosed, or crashed (with the traceback)."""

    kind: str
    seconds: float
    error: str = ""
    ran: bool = False


def check(text: str, path: Path | None = None) -> tuple[Outcome, object]:
    """The front end on one text; any exception other than MtlError is a crash."""
    start = time.perf_counter()
    try:
        checked = check_text(text, "fuzz.mtl", str(path) if path else None)
    except MtlError:
        return Outcome("diagnosed", time.perf_counter() - start), None
    except Exception:  # noqa: BLE001 - what the fuzzer is looking for
        return Outcome("crashed", time.perf_counter() - start, traceback.format_exc()), None
    kind = "accepted" if checked.ok else "diagnosed"
    return Outcome(kind, time.perf_counter() - start), checked


def run_model(checked) -> str | None:
    """Compile an accepted spec and run one forward and backward pass on a tiny batch;
    the problem as text (None when all is well)."""
    import torch

    from mtl_dsl.language.graph import table_of
    from mtl_dsl.model.compiler import compile_model

    size = checked.size
    vocab = {name: SMALL_VOCAB for name in size.by_data}
    torch.manual_seed(0)
    model = compile_model(checked.spec, checked.graph, vocab_sizes=vocab)
    counted = sum(p.numel() for p in model.parameters())
    owners = {f.name: f for f in checked.spec.features}
    expected = size.params + sum(SMALL_VOCAB * owners[n].params.dim for n in size.by_data)
    if counted != expected:
        return f"mtl check estimated {expected:,} parameters, the model has {counted:,}"
    batch = {}
    for f in checked.spec.features:
        if f.kind == "dense":
            batch[f.name] = torch.randn(4, f.params.size)
            continue
        owner = owners[table_of(checked.spec, f)]
        rows = vocab.get(owner.name) or owner.params.table_rows() or SMALL_VOCAB
        shape = (4,) if f.kind == "sparse" else (4, 3)
        batch[f.name] = torch.randint(0, rows, shape)
    model.train()
    out = model(batch)
    loss = sum(o.float().mean() for o in out.values())
    loss.backward()
    return None


def run_one(text: str, path: Path | None = None, execute: bool = True) -> Outcome:
    outcome, checked = check(text, path)
    if outcome.kind != "accepted" or not execute or checked.size is None or \
            checked.size.params > RUN_LIMIT:
        return outcome
    try:
        problem = run_model(checked)
    except Exception:  # noqa: BLE001
        problem = traceback.format_exc()
    if problem is not None:
        return Outcome("crashed", outcome.seconds, "accepted, then: " + problem)
    outcome.ran = True
    return outcome


@dataclass
class Tally:
    tried: int = 0
    counts: dict = field(default_factory=lambda: {"accepted": 0, "diagnosed": 0, "crashed": 0})
    ran: int = 0
    slowest: float = 0.0
    slowest_size: int = 0
    slowest_text: str = ""
    crashes: list = field(default_factory=list)

    def add(self, text: str, outcome: Outcome) -> None:
        self.tried += 1
        self.counts[outcome.kind] += 1
        self.ran += outcome.ran
        if outcome.seconds > self.slowest:
            self.slowest, self.slowest_size, self.slowest_text = outcome.seconds, len(text), text
        if outcome.kind == "crashed":
            self.crashes.append((text, outcome.error))

    def line(self) -> str:
        c = self.counts
        return (f"tried {self.tried:,}  accepted {c['accepted']:,} (ran {self.ran:,})  "
                f"diagnosed {c['diagnosed']:,}  crashed {c['crashed']:,}  slowest check "
                f"{self.slowest:.3f} s ({self.slowest_size:,} chars)")


def raw_text(rng: random.Random) -> str:
    """Random bytes as a spec file's text would be read (UTF-8, invalid bytes replaced)."""
    data = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    return data.decode("utf-8", errors="replace")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, help="write each crashing input and its traceback here")
    ap.add_argument("--no-run", action="store_true", help="check only; do not compile")
    args = ap.parse_args()
    rng, tally = random.Random(args.seed), Tally()
    paths = list(SPECS)
    deadline = time.monotonic() + args.minutes * 60
    while time.monotonic() < deadline:
        if rng.random() < 0.05:
            text, path = raw_text(rng), None
        else:
            path = rng.choice(paths)
            text = mutate(SPECS[path], rng, rng.choice([1, 1, 1, 2, 3, 5]))
        tally.add(text, run_one(text, path, not args.no_run))
        if tally.tried % 5000 == 0:
            print(tally.line(), flush=True)
    print(tally.line())
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / "slowest.mtl").write_text(tally.slowest_text, encoding="utf-8",
                                               errors="replace")
    for i, (text, error) in enumerate(tally.crashes[:20]):
        print(f"--- crash {i}: {error.strip().splitlines()[-1]}")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / f"crash{i}.mtl").write_text(text, encoding="utf-8", errors="replace")
            (args.save / f"crash{i}.txt").write_text(error)
    sys.exit(1 if tally.crashes else 0)


if __name__ == "__main__":
    main()
