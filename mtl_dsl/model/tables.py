"""The embedding tables of a spec: which tables the used features read, in which order,
and how many rows each has.

Features are ordered as the inputs concatenate them, so that neighbouring sparse features
sit next to each other in their (B, F_d, d) block and an input reads a run of them as one
view (model/steps.py `concat_pieces`). A table's size is the registry's rule
(`SparseParams.table_rows()`), or the data's vocabulary for `vocab=auto`. The result is the
`Call` that builds the model's `Embeddings` (model/implementations.py).
"""

from __future__ import annotations

from ..language import registry as reg
from ..language.graph import table_of
from ..language.ir import Feature, Input, Spec
from .blocks import Embeddings
from .implementations import Call
from .sequences import SequenceEncoder


def _concat_order(spec: Spec, used: tuple[str, ...]) -> list[str]:
    """Features in the order inputs concatenate them (inputs in graph order), then the rest."""
    index, order = spec.index(), []

    def walk(name: str) -> None:
        node = index.get(name)
        if isinstance(node, Input):
            for part in node.parts:
                walk(spec.resolve(part.name))
        elif name not in order:
            order.append(name)

    for name in used:
        walk(name)
    for f in spec.features:  # DUPN: a sequence's attention query is read from its block
        if f.name in order and f.query is not None and f.query not in order:
            order.append(f.query)
    return order


def embeddings_call(spec: Spec, used: tuple[str, ...], vocab_sizes: dict[str, int],
                    held: tuple[str, ...] = ()) -> Call | None:
    """The call that builds every embedding table the `used` nodes read (None: no table);
    `held` dim blocks (`d16`) are built empty (model/blocks.py `Embeddings`)."""
    index = {f.name: f for f in spec.features}
    order = [index[n] for n in _concat_order(spec, used) if n in index]
    sparse = [f for f in order if f.kind == "sparse"]
    seqs = [f for f in order if f.kind == "sequence"]
    sequences = {f.name: (table_of(spec, f), f.params.pool) for f in seqs
                 if not encoded(f.params)}
    if not sparse and not seqs:
        return None
    owners = {f.name: table_of(spec, f) for f in sparse}
    read = set(owners.values()) | {table_of(spec, f) for f in seqs}
    tables = {o: (_vocab(index[o], vocab_sizes), index[o].params.dim)
              for o in (f.name for f in spec.features) if o in read}
    options = {"sequences": sequences, "encoders": _encoders(spec, seqs, index),
               "held": tuple(held)}
    return Call(Embeddings, (tables, owners), {k: v for k, v in options.items() if v})


def encoded(p: reg.SequenceParams) -> bool:
    """Whether a sequence feature needs an encoder (else the embedding bag pools it)."""
    return p.encoder != "none" or p.pool not in ("mean", "sum")


def _encoders(spec: Spec, seqs: list[Feature], index: dict[str, Feature]
              ) -> dict[str, tuple[str, str | None, Call]]:
    """DUPN: each encoded sequence's owner table, query feature and encoder."""
    out = {}
    for f in (f for f in seqs if encoded(f.params)):
        owner, p = table_of(spec, f), f.params
        options = {"encoder": p.encoder, "pool": p.pool, "max_len": p.max_len}
        if isinstance(p.pool, reg.AttentionPoolParams):
            query_dim = index[f.query].width if f.query is not None else None
            options |= {"pool": "attention", "query_dim": query_dim, "width": p.pool.width}
        out[f.name] = (owner, f.query, Call(SequenceEncoder, (index[owner].params.dim,),
                                            options))
    return out


def _vocab(owner: Feature, vocab_sizes: dict[str, int]) -> int:
    """Rows of an owner's table: from the data when it was sized there, else the spec's
    `table_rows()` (the registry's one statement of the rule)."""
    if owner.name in vocab_sizes:
        return int(vocab_sizes[owner.name])
    rows = owner.params.table_rows()
    if rows is not None:
        return rows
    raise ValueError(f"feature '{owner.name}' has vocab=auto: its vocabulary size comes from "
                     f"the data; pass vocab_sizes={{'{owner.name}': N}} or set vocab=N")
