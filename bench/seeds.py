"""A shipped spec's validation metrics over seeds (the README's "measured" column of the
architectures table; docs/benchmarks.md, "Measured architectures").

Trains the spec as written (its data, weighting and epochs) once per seed (the model's
initialisation and the batch order; the data's own seed stays the spec's), and prints each
run's best-epoch validation metrics and the mean ± standard deviation per metric. `--edit
OLD=>NEW` rewrites the spec's text first (a variant without re-writing the file):

    python bench/seeds.py specs/cross_stitch.mtl
    python bench/seeds.py specs/home.mtl --edit ", feature_gate=4)=>)"   # without the gate

`--against OLD=>NEW` trains a second variant on the same seeds and prints, per metric, each
variant's mean ± sd and the paired difference (variant minus spec) with its two-sided 95%
t-interval (`mtl compare`'s rule, tools/experiments/significance.py), e.g. the embedding
optimizers against today's dense Adam (docs/benchmarks.md, "Embedding optimizers"):

    python bench/seeds.py specs/esmm.mtl --seeds 1,2,3,4,5 \
        --edit "seed=7 =>seed=7 embedding_optimizer=dense " \
        --against "embedding_optimizer=dense=>embedding_optimizer=lazy_adam"
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from mtl_dsl.api import check_text, train_checked
from mtl_dsl.tools.experiments.significance import interval




def run(text: str, path: Path, seed: int) -> dict[str, dict[str, float]]:
    """One training run's best-epoch validation metrics, in a throw-away folder."""
    checked = check_text(text, path=str(path)).raise_for_errors()
    with tempfile.TemporaryDirectory() as out:
        return train_checked(checked, seed=seed, out_dir=out, progress=False).best_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    ap.add_argument("--edit", action="append", default=[], help="OLD=>NEW on the spec text")
    ap.add_argument("--against", action="append", default=[],
                    help="OLD=>NEW on the edited text: a second variant, paired by seed")
    args = ap.parse_args()
    text = edited(args.spec.read_text(), args.edit, "--edit", str(args.spec))
    variants = {"spec": text}
    if args.against:
        variants["variant"] = edited(text, args.against, "--against", "the edited spec")
    values: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    for seed in (int(s) for s in args.seeds.split(",")):
        for label, variant in variants.items():
            metrics = run(variant, args.spec, seed)
            print(seed, label, {t: {k: round(v, 4) for k, v in m.items()}
                                for t, m in metrics.items()}, flush=True)
            for task, m in metrics.items():
                for key, v in m.items():
                    values[label].setdefault(f"{task}.{key}", []).append(v)
    for name, vs in values["spec"].items():
        print(f"{name}: " + "; ".join(f"{label} {statistics.mean(v[name]):.4f} ± "
                                      f"{_sd(v[name]):.4f}" for label, v in values.items()))
        if "variant" in values:
            diffs = [b - a for a, b in zip(vs, values["variant"][name])]
            ci = interval(diffs)
            print(f"  variant - spec: {statistics.mean(diffs):+.4f}, 95% interval "
                  + (f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "n/a"))


def edited(text: str, edits: list[str], option: str, where: str) -> str:
    """`text` with every OLD=>NEW edit applied (each must match, else `option`'s error)."""
    for edit in edits:
        old, _, new = edit.partition("=>")
        if old not in text:
            raise SystemExit(f"{option}: {old!r} is not in {where}")
        text = text.replace(old, new)
    return text


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
