"""Every semantic check in one pass: all diagnostics at once, each at its span.

The compiler trusts a spec that passed here (plan, then apply): compiling a validated spec
never raises a spec error. The checks of the network's statements are in :mod:`.model`, those
of the statements that configure a run (train, weighting, data) in :mod:`.settings`.
"""

from __future__ import annotations

from functools import partial

from ..diagnostics import Diagnostic
from ..graph import TaskGraph
from ..ir import Spec
from .model import MODEL_CHECKS, Check
from .settings import ColumnLookup, check_data, check_settings, check_weighting

CHECKS: tuple[Check, ...] = (*MODEL_CHECKS, check_settings, check_weighting)

__all__ = ["CHECKS", "ColumnLookup", "validate"]


def validate(spec: Spec, tg: TaskGraph | None = None, columns: ColumnLookup | None = None
             ) -> list[Diagnostic]:
    """Run every check; the diagnostics come sorted by position."""
    tg = tg or TaskGraph(spec)
    checks = (*CHECKS, partial(check_data, columns=columns))
    found = [d for check in checks for d in check(spec, tg)]
    return sorted(found, key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
