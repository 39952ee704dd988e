"""The spec's weighting method, built from its registry name.

The registry (`mtl_dsl.language.registry`, role "weighting") is the one list of methods and
their parameter models (with the family, the fewest tasks, the optional modules); the
implementations are keyed by the same names: a loss method's Weighting class in
`losses.LOSS_METHODS`, a gradient method's aggregator adapter in `aggregators.ADAPTERS`, which
:class:`GradientMethod` wraps. `IMPLEMENTATIONS` is both, and tests hold it to the registry.
Another method than the spec's is chosen with `mtl_dsl.language.overrides.with_weighting`
first.
"""

from __future__ import annotations

from ...language import registry as reg
from ...language.ir import Spec
from .balancing import GradientMethod
from .aggregators import ADAPTERS
from .base import Weighting
from .losses import LOSS_METHODS

IMPLEMENTATIONS: dict[str, object] = {**LOSS_METHODS, **ADAPTERS}


def make(spec: Spec) -> Weighting:
    """The spec's weighting over its supervised tasks, with their weight= values."""
    fixed = {t.name: t.params.weight for t in spec.supervised}
    return build(spec.weighting.kind, spec.weighting.params, list(fixed), fixed)


def build(kind: str, p: reg.WeightingParams, tasks: list[str],
          fixed: dict[str, float] | None = None) -> Weighting:
    """A weighting from its word and parameter model."""
    fixed = fixed or {t: 1.0 for t in tasks}
    if p.family == "gradient":
        return GradientMethod(kind, fixed, p)
    return LOSS_METHODS[kind].from_params(p, fixed)
