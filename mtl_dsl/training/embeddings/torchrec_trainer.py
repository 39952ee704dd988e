"""The TorchRec engine behind the trainer's embedding-engine seam (training/embeddings/engine.py, whose
methods it answers; docs/scaling.md, "The TorchRec engine").

What differs from the native engine: FBGEMM updates the tables inside the backward pass, so
the rate of a step is set before it (`begin`); the gradient norm never includes the tables
(`clip=` is refused: training/embeddings/torchrec_engine.py `refusals`); the tables and their optimizer
state are written by torch.distributed.checkpoint into a folder beside resume.pt and
checkpoint.pt (every rank its shards), which any plan or process count reads back; after
training the model holds its tables as the plain `Embeddings` again (`close`).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ...language.graph import TaskGraph
from ...language.ir import Spec
from ...model.torchrec_tables import Layout, plain_embeddings
from ..distributed import collective
from .torchrec_checkpoints import full_tables, load_tables, save_tables
from .torchrec_engine import TableOptimizer, TorchRecEngine, choose

FOLDER = "{stem}.torchrec-{token}"  # a save's folder beside its file: a new one each save


def wanted(spec: Spec, graph: TaskGraph, model: nn.Module, device: torch.device) -> bool:
    """Whether `train engine=` (auto or torchrec) takes TorchRec for this model; E604 where
    torchrec was asked for and cannot be (training/embeddings/torchrec_engine.py `choose`)."""
    emb = getattr(model, "embeddings", None)
    if emb is None:
        return False
    layout = Layout.of(model.calls["embeddings"], emb)
    return choose(spec, graph, layout, TableOptimizer.of(spec), device) == "torchrec"


class TorchRecTables:
    """The seam's engine over a `TorchRecEngine`."""

    def __init__(self, engine: TorchRecEngine, group):
        self.engine, self.group = engine, group
        self.lr = engine.optimizer.lr
        self.written: dict[str, list[str]] = {}  # file stem -> its folders, oldest first

    @classmethod
    def attach(cls, spec: Spec, model: nn.Module, group, budget: int) -> "TorchRecTables":
        pg = dist.group.WORLD if group.world > 1 else None
        engine = TorchRecEngine.attach(model, TableOptimizer.of(spec), group.world, pg,
                                       spec.train.params.batch, budget, torch.initial_seed())
        return cls(engine, group)

    def owned(self) -> tuple[nn.Parameter, ...]:
        return ()  # the tables are not the model's parameters (model/torchrec_tables.py)

    def begin(self, lr_factor: float = 1.0) -> None:
        self.engine.zero_grad()
        self.engine.set_lr(self.lr * lr_factor)  # before the backward pass that applies it

    def exchange(self) -> None:
        """The replicated tables' gradients averaged over ranks (the sharded ones reached
        their owners inside backward)."""
        params = list(self.engine.replicated.values())
        if self.group.world == 1 or not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params])
        collective("sum the replicated tables' gradients", flat.numel() * flat.element_size(),
                   lambda: dist.all_reduce(flat))
        flat /= self.group.world
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def sq_norm(self) -> float:
        return 0.0  # clip= is refused: the tables' gradient is applied inside backward

    def scale(self, factor: float) -> None:
        """Nothing to scale (`sq_norm`)."""

    def step(self, lr_factor: float) -> None:
        self.engine.step()  # the replicated tables; the others were updated in backward

    def state_dict(self) -> dict:
        return {}  # the optimizer's state is in `save_tables`' folder, with the tables

    def load_state_dict(self, saved: dict) -> None:
        """Nothing beside the tables' folder (`state_dict`)."""

    def without_tables(self, state: dict) -> dict:
        return state  # the model's state dict holds no table already

    def with_tables(self, state: dict) -> dict:
        return state

    def save_tables(self, path: Path) -> dict:
        """The tables and their optimizer state into a new folder beside `path` (each rank
        its shards); the folder before the previous one is removed, so a save killed midway
        leaves the one the previous file names whole."""
        token = self.group.decide(uuid.uuid4().hex[:12])
        name = FOLDER.format(stem=path.stem, token=token)
        save_tables(self.engine, path.parent / name)
        folders = self.written.setdefault(path.stem, [])
        folders.append(name)
        if self.group.main:
            for old in folders[:-2]:
                shutil.rmtree(path.parent / old, ignore_errors=True)
        del folders[:-2]
        return {"engine": "torchrec", "folder": name}

    def load_tables(self, path: Path, saved: dict | None) -> None:
        if saved:
            load_tables(self.engine, path.parent / saved["folder"])
            self.written.setdefault(path.stem, []).append(saved["folder"])

    def describe(self) -> dict:
        e = self.engine
        return {"engine": "torchrec", "embedding_optimizer": e.optimizer.name,
                "embedding_lr": self.lr, "tables": e.shardings or "fused, one process"}

    def close(self) -> None:
        """The model's tables as the plain `Embeddings` again: the full tables in one process;
        under several, empty (meta) on every rank, as the native shards leave them: load
        checkpoint.pt to predict (no rank gathers tables a process may not hold)."""
        call = self.engine.model.calls["embeddings"]
        if self.group.world == 1:
            native = plain_embeddings(call, full_tables(self.engine, copy=False))
        else:
            with torch.device("meta"):
                native = call.build()
        self.engine.model.use_embeddings(native)
