"""Thresholds of the expert diagnostics (training/experts.py), written once."""

from __future__ import annotations

# Expert diagnostics (training/experts.py): an expert is negligible for a gate when its mean
# weight is below NEGLIGIBLE_SHARE / n; a gate collapses when one expert takes more than
# COLLAPSE_WEIGHT of the weight in more than COLLAPSE_ROWS of the rows; two experts are
# near-identical when their outputs' cosine (centred over the sample) exceeds IDENTICAL_COSINE.
# The statistics are computed on at most EXPERT_SAMPLE_ROWS validation rows per epoch.
NEGLIGIBLE_SHARE = 0.1
COLLAPSE_WEIGHT = 0.9
COLLAPSE_ROWS = 0.9
IDENTICAL_COSINE = 0.99
EXPERT_SAMPLE_ROWS = 2048
