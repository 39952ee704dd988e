"""Labels of the diagram for the wider architecture set (tools/render.py draws them): ESCM²'s
counterfactual edge, a sequence feature's encoder and pooling (DUPN), the task-column
interactions (cross-stitch, AdaTT, HoME) and DSelect-k gates."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the renderer needs only attribute access
    from ..language.graph import TaskGraph
    from ..language.ir import Spec


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


def interaction_lines(spec: Spec, graph: TaskGraph, node) -> list[str]:
    """A task-column interaction: cross-stitch's constants, or a fusion gate and its residual
    from the own group (the first listed)."""
    own, n = spec.resolve(node.over[0].name), graph.experts_of(node)
    if graph.form(node.name) == "stitch":
        return [f"cross-stitch over {n}", f"α own {node.params.own:g} ({own.rsplit('.', 1)[-1]})"]
    t = node.params.temperature
    lines = [f"fusion: softmax over {n}" + (f", T={t:g}" if t != 1.0 else "")]
    if node.params.residual != "none":
        kind = "self-gate" if node.params.residual == "gated" else "linear"
        lines.append(f"+ {kind} residual of {own.rsplit('.', 1)[-1]}")
    return lines


def dselect_lines(graph: TaskGraph, node) -> list[str]:
    p, n = node.params, graph.experts_of(node)
    bits = max(1, (n - 1).bit_length())
    lines = [f"dselect top-{p.k} of {n}", f"{p.k} selectors x {bits} smooth steps, γ={p.gamma:g}"]
    if p.entropy or p.balance:
        lines.append(", ".join(f"{k} {v:g}" for k, v in (("entropy", p.entropy),
                                                         ("balance", p.balance)) if v))
    return lines
