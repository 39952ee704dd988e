"""The TorchRec engine of a model's embedding tables (docs/scaling.md, "Embedding tables larger
than one machine"): which engine a run uses, the tables' fused optimizer, and the tables moved
into TorchRec, sharded by `DistributedModelParallel` when there are several processes.

In one process the tables become a `FusedEmbeddingBagCollection`: FBGEMM updates the rows a
batch touched inside the backward pass, so the tables never hold a gradient. Under N processes
they become an `EmbeddingBagCollection` sharded by DistributedModelParallel with the plan of
training/embeddings/torchrec_plan.py; the sharded tables update in backward the same way, and the tables
replicated on every rank (data-parallel) keep their gradient, which the engine's own
optimizer applies after the ranks averaged it. Only the tables go to DistributedModelParallel,
without its DDP wrapper: the dense part stays the compiled model the loop already trains and
averages (training/distributed.py), with its gradient methods and MAML.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...language import registry as reg
from ...language.diagnostics import Diagnostic, MtlError, Source
from ...language.graph import TaskGraph
from ...language.ir import Spec
from ...model.compiler import CompiledModel
from ...model.torchrec_tables import (INSTALL_HINT, Layout, TorchRecEmbeddings, ebc_state,
                                     installed, native_tables, quiet, table_configs,
                                     torchrec_names)
from . import torchrec_plan

ENGINES = ("auto", "native", "torchrec")
EPS = 1e-8  # FBGEMM's default; the dense twins below are given the same
# the spec's embedding_optimizer -> FBGEMM's fused optimizer (EmbOptimType member)
FUSED = {"rowwise_adagrad": "EXACT_ROWWISE_ADAGRAD", "adagrad": "EXACT_ADAGRAD",
         "sgd": "EXACT_SGD", "lazy_adam": "ADAM"}
CPU_KERNELS = ("rowwise_adagrad", "adagrad", "sgd")  # FBGEMM's CPU kernels run these only


@dataclass(frozen=True)
class TableOptimizer:
    """The tables' optimizer as FBGEMM fuses it, and its dense twin for replicated tables
    (the same arithmetic on a full gradient: tested equal to 3e-8)."""

    name: str
    lr: float
    eps: float = EPS

    @classmethod
    def of(cls, spec: Spec) -> "TableOptimizer":
        """The spec's `embedding_optimizer` at `embedding_lr` (else `lr`), with the native
        engine's epsilon (the registry's `ROW_OPTIMIZERS`), so both compute alike."""
        p = spec.train.params
        fact = reg.ROW_OPTIMIZERS.get(p.embedding_optimizer)
        return cls(p.embedding_optimizer, p.embedding_lr or p.lr, fact.eps if fact else EPS)

    def refusal(self, device: torch.device) -> str | None:
        """Why FBGEMM cannot run this optimizer on `device` (None: it can)."""
        if self.name not in FUSED:
            return (f"embedding_optimizer={self.name} trains the tables with the model's "
                    "optimizer; TorchRec fuses a sparse one into the backward pass")
        if device.type != "cuda" and self.name not in CPU_KERNELS:
            return (f"FBGEMM's CPU kernels have no {self.name} (Adam is GPU-only): on CPU "
                    f"TorchRec runs {', '.join(CPU_KERNELS)}")
        return None

    def fused_params(self) -> dict:
        """FBGEMM's parameters of the fused optimizer, as the sharder takes them."""
        kind = torchrec_names().EmbOptimType[FUSED[self.name]]
        return {"optimizer": kind, "learning_rate": self.lr, "eps": self.eps}

    def fused_class(self) -> tuple[type, dict]:
        """(optimizer class, kwargs) as `FusedEmbeddingBagCollection` takes them."""
        cls = {"rowwise_adagrad": torchrec_names().RowWiseAdagrad, "adagrad": torch.optim.Adagrad,
               "sgd": torch.optim.SGD, "lazy_adam": torch.optim.Adam}[self.name]
        return cls, {"lr": self.lr, "eps": self.eps}

    def dense(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The same update on a full gradient, for tables replicated on every rank."""
        if self.name == "rowwise_adagrad":
            return torchrec_names().RowWiseAdagrad(params, lr=self.lr, eps=self.eps)
        if self.name == "adagrad":
            return torch.optim.Adagrad(params, lr=self.lr, eps=self.eps)
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr)
        return torch.optim.Adam(params, lr=self.lr, eps=self.eps)


def refusals(spec: Spec, graph: TaskGraph, layout: Layout, optimizer: TableOptimizer,
             device: torch.device) -> list[Diagnostic]:
    """Why TorchRec cannot train this spec's tables as the native engine would, each at its
    spec line: not installed, a table an EmbeddingBagCollection cannot compute, an optimizer
    FBGEMM does not run on the device, settings that need the tables' gradient (which a fused
    optimizer never materialises)."""
    train, out = spec.train, []

    def refuse(message: str, span, hint: str | None = None) -> None:
        out.append(Diagnostic("E604", message, span, hint))

    if not installed():
        refuse("train engine=torchrec: TorchRec is not installed", train.at("engine"),
               INSTALL_HINT)
    for feature, why in layout.unsupported():
        refuse(why, spec.node(feature).span, "use engine=native for this spec")
    why = optimizer.refusal(device)
    if why:
        refuse(why, train.at("embedding_optimizer"), "use engine=native, or another "
               "embedding_optimizer")
    p = train.params
    needs_grad = {"meta": p.meta != "none", "clip": p.clip is not None,
                  "embedding_l2": p.embedding_l2 > 0}
    for key in (k for k, on in needs_grad.items() if on):
        refuse(f"train {key}= needs the tables' gradient, which TorchRec's fused optimizer "
               "applies inside the backward pass and never keeps", train.at(key),
               "use engine=native")
    w = spec.weighting
    tables_last = any(graph.kind(n) == "embedding" for n in graph.last_shared)
    if (w.params.family == "gradient" and w.params.embeddings) or \
            (w.kind == "gradnorm" and tables_last):
        refuse(f"weighting {w.kind} reads the gradient of the shared tables, which TorchRec's "
               "fused optimizer applies inside each backward pass and never keeps", w.span,
               "use engine=native")
    return out


def choose(spec: Spec, graph: TaskGraph, layout: Layout, optimizer: TableOptimizer,
           device: torch.device) -> str:
    """'torchrec' or 'native' for `train engine=`: torchrec refuses with E604 (exit 1) at the
    spec's lines what TorchRec cannot train; auto takes TorchRec where it is installed, nothing
    refuses it and the tables are on a GPU, the device FBGEMM's fused kernels are written for.
    On a CPU auto keeps the native tables: there TorchRec's step costs what the native one
    does, while a run holds its tables twice while moving them into TorchRec and back, so a
    spec that fits natively may not (docs/scaling.md, "The TorchRec engine")."""
    engine = spec.train.params.engine
    if engine == "native" or not layout.tables:
        return "native"
    if engine == "auto" and device.type != "cuda":
        return "native"
    refused = refusals(spec, graph, layout, optimizer, device)
    if not refused:
        return "torchrec"
    if engine == "auto":
        return "native"
    raise MtlError(refused, Source(spec.source, spec.path or spec.name))


class TorchRecEngine:
    """A compiled model's tables in TorchRec, and what the trainer asks of them: the
    parameters left to the model's optimizer, the tables' own optimizer (fused, plus the dense
    twin of replicated tables), its learning rate, and the full tables back for checkpoints
    and export."""

    def __init__(self, model: CompiledModel, tables: TorchRecEmbeddings, fused,
                 replicated: dict[str, nn.Parameter], optimizer: TableOptimizer):
        self.model, self.tables, self.fused = model, tables, fused
        self.replicated = replicated  # data-parallel tables: name -> parameter (a gradient)
        self.optimizer = optimizer
        self.dense_tables = optimizer.dense(list(replicated.values())) if replicated else None

    @classmethod
    def attach(cls, model: CompiledModel, optimizer: TableOptimizer, world: int = 1,
               pg=None, batch: int = 0, budget: int = torchrec_plan.MACHINE_BYTES,
               seed: int = 0) -> "TorchRecEngine":
        """Move `model`'s tables into TorchRec, their weights kept: one process fuses them,
        `world` > 1 shards them (every rank calls this, in a process group `pg`), with every
        lookup padded to the same `batch / world` rows (row-wise sharding needs equal local
        batches). A table the model holds empty (the native placement's `held` blocks,
        too large for one process) is initialised by TorchRec, shard by shard (`seed`)."""
        native, call = model.embeddings, model.calls["embeddings"]
        layout = Layout.of(call, native)
        full = {o: w.detach() for o, w in native_tables(native).items() if w.numel()}
        device = next(native.parameters()).device
        types: dict[str, str] = {}
        if world == 1:
            ebc = _fused(layout, optimizer, device)
            stride, fused = 0, ebc.fused_optimizer()
        else:
            types = torchrec_plan.shardings(model.spec, layout, optimizer.name, budget)
            ebc = _sharded(layout, optimizer, types, world, pg, device, budget, seed)
            stride, fused = -(-batch // world), ebc.fused_optimizer
        _load_full(ebc, full)
        tables = TorchRecEmbeddings(layout, ebc, stride)
        model.use_embeddings(tables)
        replicated = {} if world == 1 else dict(  # data-parallel: no in-backward optimizer
            torchrec_names().in_backward_optimizer_filter(ebc.named_parameters()))
        engine = cls(model, tables, fused, replicated, optimizer)
        engine.shardings = types  # table -> its sharding type (none in one process)
        return engine

    def model_parameters(self) -> list[nn.Parameter]:
        """The parameters the model's optimizer trains: the model's own, which no longer
        include the tables (model/torchrec_tables.py `TorchRecEmbeddings`)."""
        return list(self.model.parameters())

    def averaged_parameters(self) -> list[nn.Parameter]:
        """What the ranks average after backward: the model's parameters and the replicated
        tables (the sharded ones were reduced to their owners by TorchRec's all-to-all)."""
        return self.model_parameters() + list(self.replicated.values())

    def set_lr(self, lr: float) -> None:
        """The tables' learning rate from now on. FBGEMM applies the fused update inside
        backward, so a schedule's rate for a step must be set before its backward pass."""
        for group in self.fused.param_groups:
            group["lr"] = lr
        self.fused.step()  # a fused optimizer's step only pushes the rate into FBGEMM
        if self.dense_tables is not None:
            for group in self.dense_tables.param_groups:
                group["lr"] = lr

    def zero_grad(self) -> None:
        if self.dense_tables is not None:
            self.dense_tables.zero_grad(set_to_none=True)

    def step(self) -> None:
        """After backward (and the averaging of the replicated tables' gradients): update the
        replicated tables; the fused ones were updated in backward."""
        if self.dense_tables is not None:
            self.dense_tables.step()


def _fused(layout: Layout, optimizer: TableOptimizer, device: torch.device) -> nn.Module:
    """The tables as one `FusedEmbeddingBagCollection`: FBGEMM's fused update in backward."""
    cls, kwargs = optimizer.fused_class()
    with quiet():
        return torchrec_names().FusedEmbeddingBagCollection(
            table_configs(layout), optimizer_type=cls, optimizer_kwargs=kwargs, device=device)


class _Holder(nn.Module):
    """What DistributedModelParallel shards: the collection alone, at the path `ebc`."""

    def __init__(self, ebc: nn.Module):
        super().__init__()
        self.ebc = ebc


def _sharded(layout: Layout, optimizer: TableOptimizer, types: dict[str, str], world: int,
             pg, device: torch.device, budget: int, seed: int) -> nn.Module:
    """The tables sharded over the ranks by DistributedModelParallel (no DDP wrapper): built
    on the meta device, so no rank ever holds a table it does not own."""
    trc = torchrec_names()
    meta = trc.EmbeddingBagCollection(table_configs(layout, seed),
                                      device=torch.device("meta"))
    holder = _Holder(meta)
    shards = torchrec_plan.sharder(optimizer.fused_params())
    plan = torchrec_plan.plan(holder, types, world, device, shards, pg, budget)
    with quiet():
        dmp = trc.DistributedModelParallel(holder, env=trc.ShardingEnv.from_process_group(pg),
                                           device=device, plan=plan, sharders=[shards],
                                           init_data_parallel=False)
    return dmp.module.ebc


def _load_full(ebc: nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Full tables into a (fused or sharded) collection: each rank keeps its shards' rows.
    DistributedModelParallel initialises the tables anew, so this comes after it; a table
    not in `full` keeps that initialisation."""
    with quiet(), torch.no_grad():
        ebc.load_state_dict(ebc_state(full), strict=False)
