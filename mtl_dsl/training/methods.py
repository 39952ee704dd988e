"""The spec's weighting method, built through its registry entry.

The registry (`mtl_dsl.language.registry`, role "weighting") is the one list of methods:
each entry names its parameter model (with the family, the fewest tasks, the optional
modules) and its implementation. A loss method's entry names its Weighting class; a gradient
method's names its aggregator adapter, which :class:`GradientMethod` wraps. Another method
than the spec's is chosen with `mtl_dsl.language.overrides.with_weighting` first.
"""

from __future__ import annotations

from ..language import registry as reg
from ..language.ir import Spec
from .balancing import GradientMethod
from .weighting import Weighting, implementation


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
    return implementation(kind).from_params(p, fixed)
