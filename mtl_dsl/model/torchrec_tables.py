"""A spec's embedding tables as TorchRec objects: one `EmbeddingBagCollection` fed by one
`KeyedJaggedTensor` (docs/scaling.md, "Embedding tables larger than one machine").

`TorchRecEmbeddings` stands where model/blocks.py's `Embeddings` stands in a compiled model
and answers the plan the same way (one (B, F_d, d) block per dim, the pooled sequences, the
features' positions), so the rest of the model does not know which engine holds its tables.
Each table is one `EmbeddingBagConfig` named after its owner feature; a feature that shares it
is another feature name on it; a pooled sequence is a bag of up to `max_len` ids. Its `ebc` is
whatever the training engine made of the configs (training/embeddings/torchrec_engine.py): a fused
collection in one process, a sharded one under `DistributedModelParallel`.

TorchRec is an optional install (.ci/install-torchrec) and `import torchrec` costs about 3 s,
so nothing here imports it at module level; `torchrec_names()` imports it once, quietly.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from .blocks import Embeddings
from .implementations import Call

PACKAGES = ("torchrec", "fbgemm_gpu")
INSTALL_HINT = ("install it with `bash .ci/install-torchrec` from a checkout, or "
                "`pip install fbgemm-gpu-cpu==1.8.0 torch==2.13.0`, then "
                "`pip install --no-deps torchrec==1.8.0` and "
                "`pip install tensordict pyre-extensions tqdm torchmetrics` (docs/scaling.md)")
SEQ = "seq:"  # key prefix of a pooled sequence in the blocks `forward` returns
LOGGERS = ("torchrec", "fbgemm_gpu", "torch.distributed")  # muted by `quiet`


def installed() -> bool:
    """Whether TorchRec and FBGEMM are installed (looked up, not imported)."""
    return all(importlib.util.find_spec(p) is not None for p in PACKAGES)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence TorchRec's and FBGEMM's chatter for the block, leaving the interpreter's state
    as it was. What they do: `import fbgemm_gpu`, and TorchRec's notices while it shards
    ("Could not determine LOCAL_WORLD_SIZE", ...), call the module-level logging.info() /
    logging.warning(), which run logging.basicConfig() and so leave a stderr handler on the
    root logger, after which every library's warnings print; they warn DeprecationWarnings
    at import and FutureWarnings (ShardedTensor, deprecated collectives) and a UserWarning
    (FBGEMM's dense kernel has no autograd key) as they run: the training step of a sharded
    model runs in this block too. Inside the block the root logger and TorchRec's
    loggers are muted and these warnings ignored; on exit the root logger's handlers, its
    state, the loggers' levels and the warning filters are restored."""
    import torch  # noqa: F401  first: torch adds warning filters of its own at import,
    # which catch_warnings would drop on exit if torch were imported inside it
    root = logging.getLogger()
    handlers, disabled = root.handlers[:], root.disabled
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        root.disabled = True
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", "fbgemm::", UserWarning)
            yield
    finally:
        root.handlers[:], root.disabled = handlers, disabled
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@functools.cache
def torchrec_names() -> SimpleNamespace:
    """Every TorchRec and FBGEMM name mtl-dsl uses, imported once and quietly (importing
    torchrec imports all of torchrec.distributed anyway). The first `KeyedJaggedTensor` logs
    a torch.fx notice once per process (an lru_cache'd warning): one is built here with that
    logger disabled, so the notice is spent in silence."""
    fx_log = logging.getLogger("torch.fx._symbolic_trace")
    with quiet():
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
        from torchrec.distributed.planner.storage_reservations import (
            FixedPercentageStorageReservation)
        from torchrec.distributed.planner.types import (KernelConfig, TopologyFactory,
                                                        TrainerConfig)
        from torchrec.distributed.types import ShardingEnv, ShardingType
        from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
        from torchrec.modules.embedding_modules import EmbeddingBagCollection
        from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
        from torchrec.optim.optimizers import in_backward_optimizer_filter
        from torchrec.optim.rowwise_adagrad import RowWiseAdagrad
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        disabled, fx_log.disabled = fx_log.disabled, True
        try:
            KeyedJaggedTensor(keys=["k"], values=torch.zeros(1, dtype=torch.long),
                              lengths=torch.ones(1, dtype=torch.long))
        finally:
            fx_log.disabled = disabled
    names = {k: v for k, v in locals().items() if k[0].isupper()}
    return SimpleNamespace(**names, in_backward_optimizer_filter=in_backward_optimizer_filter)


@dataclass(frozen=True)
class Layout:
    """What TorchRec needs of a compiled model's tables, read from the native `Embeddings`
    call and module: the tables (owner -> rows, dim, in the spec's order), every feature the
    collection looks up (feature -> owner: single ids and pooled sequences, in the order of
    the `KeyedJaggedTensor`'s keys), the pooled sequences' modes, and the blocks the plan reads
    (dim key -> single-id features, feature -> (key, index), as `Embeddings` has them)."""

    tables: dict[str, tuple[int, int]]
    owner: dict[str, str]
    sequences: dict[str, str]
    encoded: tuple[str, ...]  # sequences with an encoder or pool=last/attention
    features: dict[str, list[str]]
    position: dict[str, tuple[str, int]]

    @classmethod
    def of(cls, call: Call, native: Embeddings) -> "Layout":
        """From the call that built a model's `Embeddings` (model/tables.py) and the module."""
        tables, owners = call.args
        sequences = call.kwargs.get("sequences", {})
        owner = dict(owners) | {f: o for f, (o, _) in sequences.items()}
        return cls(dict(tables), owner, {f: mode for f, (_, mode) in sequences.items()},
                   tuple(call.kwargs.get("encoders", {})), dict(native.features),
                   dict(native.position))

    def pooling(self) -> dict[str, str]:
        """Each table's pooling: a table's bags pool one way (single ids pool alike under
        both), so the mode of the sequences that read it, else sum."""
        modes = {o: {m for f, m in self.sequences.items() if self.owner[f] == o}
                 for o in self.tables}
        return {o: next(iter(m)) if len(m) == 1 else "sum" for o, m in modes.items()}

    def unsupported(self) -> list[tuple[str, str]]:
        """(feature, why) for what an `EmbeddingBagCollection` cannot compute: a sequence read
        position by position (an encoder, pool=last or attention: TorchRec pools bags), and a
        table pooled by both mean and sum (TorchRec pools per table)."""
        out = [(f, f"sequence '{f}' is encoded (encoder= or pool=last/attention); "
                   "TorchRec's EmbeddingBagCollection pools bags by mean or sum only")
               for f in self.encoded]
        for o in self.tables:
            readers = {m: f for f, m in self.sequences.items() if self.owner[f] == o}
            if len(readers) > 1:
                out.append((readers["sum"], f"table '{o}' is pooled by mean "
                            f"('{readers['mean']}') and by sum ('{readers['sum']}'); "
                            "TorchRec pools each table one way"))
        return out


def table_configs(layout: Layout, init_seed: int | None = None) -> list:
    """One `EmbeddingBagConfig` per table, grouped by pooling in first-seen order:
    `FusedEmbeddingBagCollection` concatenates its outputs group by group but names them in
    config order, so the two orders must agree. `init_seed`: where TorchRec initialises the
    tables itself (built on meta, then sharded), N(0, 1) as `nn.Embedding` draws, from a
    generator per table and seed (`seeded_normal`)."""
    trc = torchrec_names()
    pooling = layout.pooling()
    order = sorted(layout.tables, key=lambda o: [*dict.fromkeys(pooling.values())]
                   .index(pooling[o]))
    kind = {"sum": trc.PoolingType.SUM, "mean": trc.PoolingType.MEAN}
    return [trc.EmbeddingBagConfig(
        name=o, num_embeddings=layout.tables[o][0], embedding_dim=layout.tables[o][1],
        feature_names=[f for f, owner in layout.owner.items() if owner == o],
        pooling=kind[pooling[o]],
        init_fn=None if init_seed is None else functools.partial(seeded_normal, o, init_seed))
        for o in order]


def seeded_normal(table: str, seed: int, shard: Tensor) -> Tensor:
    """N(0, 1) rows for one shard of `table`, drawn on the rank that owns it from a generator
    seeded by the run's seed, the table and that rank: the global generator is in the same
    state on every rank, so it would give every shard the same rows."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    g = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{table}/{rank}".encode()))
    with torch.no_grad():
        return shard.copy_(torch.randn(shard.shape, generator=g, dtype=shard.dtype))


def keyed_ids(batch: dict[str, Tensor], layout: Layout, stride: int = 0):
    """The batch's ids as one `KeyedJaggedTensor`, key-major: a single id is a bag of one, a
    padded (B, L) sequence (-1 after its ids) a bag of its real ids (an empty bag pools to
    zeros, as the native tables do). `stride` > B adds empty rows at the end: row-wise
    sharding needs the same batch size on every rank, and an empty bag neither reads nor
    trains anything."""
    values, lengths = [], []
    for f in layout.owner:
        ids = batch[f]
        if ids.dim() == 1:
            ids = ids.unsqueeze(1)  # (B, 1)
        keep = ids >= 0  # (B, L)
        values.append(ids[keep])
        n = keep.sum(1)  # (B,)
        if stride > len(n):
            n = torch.cat([n, n.new_zeros(stride - len(n))])
        lengths.append(n)
    return torchrec_names().KeyedJaggedTensor(keys=list(layout.owner),
                                              values=torch.cat(values),
                                              lengths=torch.cat(lengths))


class TorchRecEmbeddings(nn.Module):
    """The tables of a compiled model in one TorchRec collection, looked up once per batch.

    The same interface as `Embeddings` (model/blocks.py) for the plan's `Features` step:
    `forward` gives each dim's (B, F_d, d) block, and also the pooled sequences under
    `SEQ + name`, so that `pool` reads them without a second lookup (a fused collection
    updates its rows in every backward pass through it: one lookup per step is one update).
    `stride`: the rows every lookup is padded to (0: none), for row-wise sharding.

    The collection is the engine's, not the model's: it is held without registering it as
    a submodule, so its tables (a different shard on every rank, updated inside backward)
    stay out of the model's parameters and state dict, which the trainer broadcasts,
    averages, optimises and saves; the engine saves the tables itself
    (training/embeddings/torchrec_checkpoints.py)."""

    def __init__(self, layout: Layout, ebc: nn.Module, stride: int = 0):
        super().__init__()
        self.layout, self.stride = layout, stride
        object.__setattr__(self, "ebc", ebc)  # not a submodule (above)
        self.features, self.position = layout.features, layout.position
        self.vocab = {o: rows for o, (rows, _) in layout.tables.items()}
        self.dim_of = {o: dim for o, (_, dim) in layout.tables.items()}
        self.encoders = nn.ModuleDict()  # none: encoded sequences stay native (`unsupported`)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Block key ('d16') -> (B, F_d, d); SEQ + sequence -> (B, d)."""
        rows = len(batch[next(iter(self.layout.owner))])
        # to_dict(), not values(): a sharded collection orders its output by sharding group
        pooled = self.ebc(keyed_ids(batch, self.layout, self.stride)).to_dict()
        pooled = {f: v[:rows] for f, v in pooled.items()}  # (B, d) each, padding dropped
        blocks = {k: torch.stack([pooled[f] for f in names], 1)  # (B, F_d, d)
                  for k, names in self.features.items()}
        return blocks | {SEQ + f: pooled[f] for f in self.layout.sequences}

    def pool(self, batch: dict[str, Tensor], blocks: dict[str, Tensor] | None = None
             ) -> dict[str, Tensor]:
        """Sequence feature -> its pooled (B, d) vector, read from `forward`'s blocks."""
        blocks = blocks if blocks is not None else self(batch)
        return {f: blocks[SEQ + f] for f in self.layout.sequences}

    def lookup(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Feature -> its (B, d) embedding."""
        blocks = self(batch)
        return {f: blocks[k][:, i] for f, (k, i) in self.position.items()}

    def table(self, owner: str) -> nn.Module:
        """The owner's table (its `weight`: this rank's shard under sharding)."""
        return self.ebc.embedding_bags[owner]

    def rows(self, owner: str) -> Tensor:
        return self.table(owner).weight


def native_tables(native: Embeddings) -> dict[str, Tensor]:
    """Owner -> its (rows, dim) table: views of the native module's per-dim tables."""
    return {o: native.rows(o) for o in native.vocab}


def ebc_state(tables: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """Full tables as an EmbeddingBagCollection's state dict (`embedding_bags.NAME.weight`)."""
    return {f"{prefix}embedding_bags.{o}.weight": w for o, w in tables.items()}


def plain_embeddings(call: Call, tables: dict[str, Tensor]) -> Embeddings:
    """A native `Embeddings` holding `tables` (owner -> full table): what a TorchRec-trained
    model is exported and checkpointed as, so predict, ONNX and torch.export see the plain
    module they always see (each dim's tables concatenated at their row offsets). When
    `tables` covers every table, each dim block is allocated without the initial rows that
    would be overwritten (built held, then given an empty table): the end of a run then holds
    the tables twice (TorchRec's and these), not three times."""
    with torch.device("meta"):  # shapes only: allocates nothing
        shell = call.build()
    if tables and set(shell.vocab) == set(tables):
        device = next(iter(tables.values())).device
        native = Call(call.cls, call.args, {**call.kwargs, "held": tuple(shell.tables)}).build()
        for key, table in shell.tables.items():
            native.tables[key] = nn.Embedding.from_pretrained(
                torch.empty(table.weight.shape, device=device), freeze=False)
    else:
        native = call.build()
    with torch.no_grad():
        for o, w in tables.items():
            native.rows(o).copy_(w)
    return native
