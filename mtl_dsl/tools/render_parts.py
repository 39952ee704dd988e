"""Labels of the diagram for the constructs of issue 15 (tools/render.py draws them): ESCM²'s
counterfactual edge and a sequence feature's encoder and pooling (DUPN)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the renderer needs only attribute access
    from ..language.graph import TaskGraph


def counterfactual_label(graph: TaskGraph, source: str) -> str:
    """ESCM²'s edge: its mode, weight and clip, and the DR imputation tower's widths."""
    t = next(t for t in graph.spec.transfers
             if t.kind == "counterfactual" and t.chain[0].name == source)
    p = t.params
    text = f" counterfactual {p.mode.upper()} λ={p.weight:g} clip={p.clip:g}"
    if p.mode == "dr":
        widths = ", ".join(map(str, p.imputation_net().widths))
        text += f"\n imputation mlp({widths})"
    return text


def sequence_steps(p, width: int | None) -> str:
    """DUPN: the encoder and pooling a sequence goes through, e.g. `lstm → attention(item) →
    16`."""
    steps = [] if p.encoder == "none" else [p.encoder]
    if isinstance(p.pool, str):
        steps.append(p.pool)
    else:
        steps.append(f"attention({p.pool.query or 'learnt query'}, w={p.pool.width})")
    return " → ".join([*steps, str(width if width is not None else p.dim)])
