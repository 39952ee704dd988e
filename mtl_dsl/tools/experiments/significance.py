"""Whether a paired difference over seeds is beyond its spread: `mtl compare`'s flags.

The rule (docs/cli.md, "Comparing methods"): the two-sided 95% t-interval of the mean of the
n per-seed differences, mean ± t_{0.975, n−1} · sd / √n, excludes 0. scipy is an optional
dependency, so the t quantile is computed here: a table to 30 degrees of freedom, then the
Cornish-Fisher expansion around the normal quantile (tests/test_compare.py checks both
against known values).
"""

from __future__ import annotations

import math
import statistics

# t_{0.975, df} for df = 1..30 (two-sided 95%); beyond, the Cornish-Fisher series in t975
T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
        2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
        2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
        2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
Z975 = 1.959963985  # the normal quantile the series starts from


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (no scipy: a table to
    30, then the Cornish-Fisher expansion around the normal quantile, within 1e-5 there)."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z, v = Z975, float(df)
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3))


def interval(values: list[float]) -> tuple[float, float] | None:
    """The two-sided 95% t-interval of the mean of `values`; None under 2 finite values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return None
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = t975(len(values) - 1) * sd / math.sqrt(len(values))
    return mean - half, mean + half
