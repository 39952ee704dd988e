"""Experiments over runs: `mtl compare` (methods x specs x seeds, with paired significance),
`mtl tune` (Optuna over a spec's search space) and `mtl runs` (the runs folder as a table)."""
