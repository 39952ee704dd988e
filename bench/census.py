"""Census-income (the MMoE paper's real data set): every shipped census spec over 3 seeds.

Each spec reads `specs/data/census-income-kdd/census-income.test.gz` (vendored) directly
(a seeded 60/20/20 split stratified on income > 50K), trains with the spec's
settings, picks the epoch by the validation loss and reports the TEST AUC of each
task once, at the end. The seed sets the split, the initialisation and the batch
order, so the spread includes the split's.

    python bench/census.py                       # all six specs, seeds 1 2 3 (~10 min)
    python bench/census.py --seeds 1 --specs census_mmoe --epochs 2
    python bench/census.py --readme docs/benchmarks.md    # also rewrite the table there
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtl_dsl.api import check_file  # noqa: E402
from mtl_dsl.training.loop import train  # noqa: E402

SPECS = ("census_single_income", "census_single_marital", "census_shared_bottom",
         "census_omoe", "census_mmoe", "census_ple")
TASKS = ("income", "marital")
BEGIN, END = "<!-- census-table:begin -->", "<!-- census-table:end -->"


def run(name: str, seed: int, epochs: int | None, out: Path) -> dict:
    checked = check_file(ROOT / "specs" / f"{name}.mtl").raise_for_errors()
    result = train(checked.spec, checked.graph, epochs=epochs, out_dir=out, progress=False,
                   seed=seed)
    test = result.test_metrics or {}
    return {"spec": name, "seed": seed, "seconds": result.seconds,
            "best_epoch": result.best_epoch,
            "parameters": sum(p.numel() for p in result.model.parameters()),
            "test_auc": {t: test[t]["auc"] for t in test},
            "val_auc": {t: m["auc"] for t, m in result.best_metrics.items()}}


def _mean_std(values: list[float], digits: int = 4) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = ["| spec | income AUC (test) | never-married AUC (test) | parameters | "
             "training time (s) |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["spec"] for r in rows):
        mine = [r for r in rows if r["spec"] == name]
        aucs = {t: [r["test_auc"][t] for r in mine if t in r["test_auc"]] for t in TASKS}
        secs = [r["seconds"] for r in mine]
        lines.append(f"| `{name}` | {_mean_std(aucs['income'])} | "
                     f"{_mean_std(aucs['marital'])} | {mine[0]['parameters']:,} | "
                     f"{_mean_std(secs, 1)} |")
    return "\n".join(lines)


def write_readme(path: Path, text: str) -> None:
    readme = path.read_text()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} markers")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--specs", nargs="+", default=list(SPECS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=None, help="override the specs' epochs")
    ap.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    ap.add_argument("--readme", type=Path, default=None, help="rewrite this README's table")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for name in args.specs:
            for seed in args.seeds:
                rows.append(run(name, seed, args.epochs, Path(out)))
                r = rows[-1]
                print(f"{name} seed={seed}: test AUC " + ", ".join(
                    f"{t}={v:.4f}" for t, v in r["test_auc"].items()) +
                    f" ({r['seconds']:.1f} s, best epoch {r['best_epoch']})", flush=True)
    text = table(rows)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.readme:
        write_readme(args.readme, text)


if __name__ == "__main__":
    main()
