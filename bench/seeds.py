"""A shipped spec's validation metrics over seeds (the README's "measured" column of the
architectures table; docs/benchmarks.md, "Measured architectures").

Trains the spec as written (its data, weighting and epochs) once per seed (the model's
initialisation and the batch order; the data's own seed stays the spec's), and prints each
run's best-epoch validation metrics and the mean ± standard deviation per metric. `--edit
OLD=>NEW` rewrites the spec's text first (a variant without re-writing the file):

    python bench/seeds.py specs/cross_stitch.mtl
    python bench/seeds.py specs/home.mtl --edit ", feature_gate=4)=>)"   # without the gate
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from mtl_dsl.api import check_text, train_checked


def spec_text(path: Path, edits: list[str]) -> str:
    """The spec's text with every OLD=>NEW edit applied (each must match)."""
    text = path.read_text()
    for edit in edits:
        old, _, new = edit.partition("=>")
        if old not in text:
            raise SystemExit(f"--edit: {old!r} is not in {path}")
        text = text.replace(old, new)
    return text


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
    args = ap.parse_args()
    text = spec_text(args.spec, args.edit)
    values: dict[str, list[float]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        metrics = run(text, args.spec, seed)
        print(seed, {t: {k: round(v, 4) for k, v in m.items()} for t, m in metrics.items()},
              flush=True)
        for task, m in metrics.items():
            for key, v in m.items():
                values.setdefault(f"{task}.{key}", []).append(v)
    for name, vs in values.items():
        spread = statistics.stdev(vs) if len(vs) > 1 else 0.0
        print(f"{name}: {statistics.mean(vs):.4f} ± {spread:.4f}")


if __name__ == "__main__":
    main()
