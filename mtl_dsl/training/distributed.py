"""Data-parallel training over torch.distributed: N processes, one shard of every batch each.

A process started by `torchrun` (or `mtl compile --train --nproc N`, which starts the same
elastic launcher) finds RANK, WORLD_SIZE and LOCAL_RANK in its environment; `Group.start`
joins the process group (gloo on CPU, NCCL on CUDA) and the training loop asks it for:

* **shards**: every rank draws the same seeded permutation and takes its contiguous slice of
  each *global* batch (`shard`), so N processes see exactly the batches one process sees;
  a streamed source is read by partition instead, each rank its own row groups
  (:meth:`~mtl_dsl.data.streaming.StreamSet.rank_batches`), in steps every rank agrees on;
* **global losses** (`Group.losses`): one all-reduce of each task's row-weighted loss gives
  the loss over the whole global batch; each rank backpropagates
  `N n_r / n * l_r + (L - N n_r / n * l_r).detach()`, whose value is the global loss L on
  every rank and whose gradient, averaged over ranks, is exactly the gradient of L, also for
  a ragged last batch (unequal n_r). Loss-based weightings therefore see the same values on
  every rank and their state stays identical without being sent anywhere;
* **gradient averaging** (`Group.average_grads`): one all-reduce of every gradient, flattened
  into one buffer, after the backward pass (what DistributedDataParallel's reducer does; see
  docs/scaling.md for why the reducer itself is not used);
* **gradient methods**: `average` is applied to the K x n Jacobian before aggregation
  (:mod:`mtl_dsl.training.weighting.balancing`), so every rank aggregates the same rows;
* **one writer**: rank 0 alone writes the run folder (its name decided there and broadcast);
  other ranks keep the log in memory and a status that is never written.

Validation runs on the full validation set on every rank: exact, no gather of predictions
for AUC or grouped metrics, and early stopping is decided identically everywhere.
"""

from __future__ import annotations

import math
import os
import signal
import time
from datetime import timedelta
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..data.streaming import StreamSet
from ..data.tensors import Batch
from ..language.diagnostics import DataError
from ..language.ir import Spec
from ..language.overrides import as_trained
from .resume import ResumeError
from .runs import Log, Status, atomic_text, run_folder

TIMEOUT_ENV = "MTL_DIST_TIMEOUT"  # seconds a collective waits for a missing rank
DEFAULT_TIMEOUT = 300
SMALL_MODEL_WORK = 256_000_000  # dense parameters x batch below which CPU training uses 1 thread
# communication spent by this process: all-reduce calls, bytes sent, seconds waited
COMM = {"calls": 0, "bytes": 0, "seconds": 0.0}


def active() -> bool:
    """True inside a process group of two or more ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class RankError(DataError):
    """Another rank failed or stopped answering: this rank stops with a message, exit 1."""

    def __init__(self, what: str, err: Exception):
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        timeout = os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)
        super().__init__(
            f"distributed training: rank {dist.get_rank()} could not {what}: {first}",
            hint=f"another rank failed (its own error is printed above) or did not answer "
                 f"within {TIMEOUT_ENV}={timeout} s; the last resumable state is kept",
            code="E706")


def collective(what: str, nbytes: int, call: Callable[[], object]):
    """Run one collective, counted in COMM; a failure or timeout becomes a RankError."""
    t0 = time.perf_counter()
    try:
        out = call()
    except RuntimeError as err:  # gloo/NCCL: a peer closed its connection, or the timeout
        raise RankError(what, err) from None
    COMM["calls"] += 1
    COMM["bytes"] += nbytes
    COMM["seconds"] += time.perf_counter() - t0
    return out


def _all_reduce(t: Tensor) -> Tensor:
    """In-place sum over ranks."""
    collective("sum a tensor with the other ranks", t.numel() * t.element_size(),
                lambda: dist.all_reduce(t))
    return t


def average(t: Tensor) -> Tensor:
    """The mean of `t` over ranks (a new tensor); `t` itself outside a process group."""
    if not active():
        return t
    return _all_reduce(t.detach().clone()) / dist.get_world_size()


def across_ranks(J: Tensor, by_rows: bool) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """(the Jacobian every rank aggregates, g -> the gradient this rank's balanced tensors
    must receive) for this rank's Jacobian J (K x n) of its global-mean losses.

    On shared parameters J is averaged: every rank then holds the global batch's rows and
    applies g itself, and averaging the gradients keeps it. On representations
    (`by_rows`) each rank's columns are its own rows' outputs: the Jacobians are gathered
    side by side, scaled by 1/N (the global loss's gradient on those rows), and a rank gets
    N times its columns of g, which averaging the gradients divides again."""
    if not active():
        return J, lambda g: g
    if not by_rows:
        return average(J), lambda g: g
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = torch.zeros(world, dtype=torch.long, device=J.device)
    sizes[rank] = J.shape[1]
    _all_reduce(sizes)
    width = int(sizes.max())
    padded = J.new_zeros(J.shape[0], width)
    padded[:, :J.shape[1]] = J.detach()
    parts = [torch.empty_like(padded) for _ in range(world)]
    collective("gather the representation Jacobians",
                padded.numel() * padded.element_size() * (world - 1),
                lambda: dist.all_gather(parts, padded))
    lo = int(sizes[:rank].sum())
    full = torch.cat([p[:, :int(n)] for p, n in zip(parts, sizes.tolist())], dim=1) / world
    return full, lambda g: world * g[lo:lo + J.shape[1]]


def shard(batches, rank: int, world: int):
    """This rank's contiguous slice of each global batch: rows [r n / N, (r+1) n / N)."""
    for batch in batches:
        n = len(next(iter(batch.values())))
        lo, hi = rank * n // world, (rank + 1) * n // world
        yield {k: v[lo:hi] for k, v in batch.items()}


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """`device` (default: CUDA when available); CUDA means this rank's own GPU."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and dev.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dev = torch.device("cuda", local_rank)
    return dev


class Group:
    """The ranks of one run as the training loop sees them (one rank outside torchrun)."""

    def __init__(self, rank: int, world: int, device: torch.device, owned: bool = False):
        self.rank, self.world, self.device, self.owned = rank, world, device, owned
        self.stop_signal: int | None = None  # a signal some rank caught, agreed at a step
        self.padding: Batch | None = None  # the zero-weight row standing for an empty shard

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device: str | torch.device | None = None) -> "Group":
        """Join the process group the environment describes (torchrun's RANK, WORLD_SIZE,
        LOCAL_RANK, MASTER_ADDR/PORT); a one-rank group without WORLD_SIZE > 1."""
        joined = dist.is_available() and dist.is_initialized()  # by the caller: kept open
        world = dist.get_world_size() if joined else int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local)
        if world <= 1:
            return cls(0, 1, dev)
        owned = not joined
        if owned:
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)))
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timeout)
        return cls(dist.get_rank(), dist.get_world_size(), dev, owned)

    def stop(self) -> None:
        """Leave the process group if `start` joined it."""
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
            self.owned = False

    # ---- agreeing on things -------------------------------------------------

    def decide(self, value):
        """Rank 0's `value` on every rank (a picklable object)."""
        if self.world == 1:
            return value
        box = [value if self.main else None]
        collective("receive rank 0's decision", 0,
                    lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def new_run(self, out_dir: str | Path, spec: Spec) -> Path:
        """A new run folder made by rank 0 (with spec.mtl), its path sent to every rank."""
        path = None
        if self.main:
            path = run_folder(out_dir, spec.name)
            atomic_text(path / "spec.mtl", as_trained(spec))
        return Path(self.decide(None if path is None else str(path)))

    def agree(self, fingerprint: dict, model: nn.Module) -> None:
        """Every rank fitted its encoders on the same rows with the same seed (cheaper than
        sending them): check that its data and model fingerprint is rank 0's, then start
        from rank 0's weights and buffers, as DistributedDataParallel does. Also the barrier
        after which rank 0 may mark a resumed run as running."""
        if self.world == 1:
            return
        if self.decide(fingerprint) != fingerprint:
            raise DataError(f"distributed training: rank {self.rank} prepared other data or "
                            "another model than rank 0", code="E706",
                            hint="every rank must read the same data with the same spec")
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                collective("receive rank 0's weights", t.numel() * t.element_size(),
                            lambda t=t: dist.broadcast(t.data, src=0))

    # ---- each step --------------------------------------------------------------

    def batches(self, data, size: int, generator: torch.Generator):
        """This rank's shard of each global batch of `size` rows (the batches themselves
        in one rank); a streamed source is read by partition, each rank its own rows."""
        if self.world == 1:
            return data.batches(size, generator)
        if isinstance(data, StreamSet):
            return self._streamed(data, size, generator)
        return (self.pad(mine, batch) for batch in data.batches(size, generator)
                for mine in shard([batch], self.rank, self.world))

    def _streamed(self, data: StreamSet, size: int, generator: torch.Generator):
        """The rank's partition of the stream, its empty batches padded."""
        last = None
        for batch in data.rank_batches(size, generator, self.rank, self.world):
            if len(next(iter(batch.values()))):
                last = batch
                yield batch
            else:
                yield self.pad(batch, last if last is not None else data.first_rows())

    def pad(self, batch: Batch, source: Batch) -> Batch:
        """`batch`, or where it has no rows one row of `source` that weighs zero in the
        losses (`rows`): the model then never runs on an empty batch (a reshape of 0 rows,
        a softmax over none), and the zero weight keeps the step exact."""
        if len(next(iter(batch.values()))):
            return batch
        self.padding = {k: v[:1] for k, v in source.items()}
        return self.padding

    def rows(self, batch: Batch) -> int:
        """The rows of `batch` that count: none for the padding row."""
        return 0 if batch is self.padding else len(next(iter(batch.values())))

    def steps(self, data, size: int) -> int:
        """Steps per epoch, the same on every rank."""
        if self.world > 1 and isinstance(data, StreamSet):
            return data.steps(size, self.world)
        return math.ceil(len(data) / size)

    def resumable(self, saved: dict, data, run_dir: Path) -> None:
        """A state saved by another number of processes resumes exactly from the in-memory
        global batches (the position is a global one); a partitioned stream's position
        mid-epoch means other rows under another partition: E705 rather than rows seen
        twice or never (at an epoch's end any count goes on)."""
        world = saved.get("world", 1)  # states of runs before the key: one process
        if world != self.world and saved["batch"] and isinstance(data, StreamSet):
            raise ResumeError(
                f"{run_dir} stopped in the middle of an epoch of a streamed source read by "
                f"{world} process(es); it cannot go on with {self.world}",
                hint=f"resume with --nproc {world}" if world > 1 else
                "resume in one process (without --nproc)")

    def gather(self, batch: Batch) -> Batch:
        """The global batch from every rank's shard, in rank order (MAML's support rows):
        one all-reduce of the shard sizes, then one all-gather per column, padded to the
        largest shard."""
        sizes = torch.zeros(self.world, dtype=torch.long, device=self.device)
        sizes[self.rank] = self.rows(batch)
        _all_reduce(sizes)
        width, counts = int(sizes.max()), sizes.tolist()
        out = {}
        for key, v in batch.items():
            padded = v.new_zeros((width, *v.shape[1:]))
            padded[:counts[self.rank]] = v[:counts[self.rank]]  # no padding row
            parts = [torch.empty_like(padded) for _ in range(self.world)]
            collective("gather the global batch",
                        padded.numel() * padded.element_size() * (self.world - 1),
                        lambda: dist.all_gather(parts, padded))
            out[key] = torch.cat([p[:n] for p, n in zip(parts, counts)])
        return out

    def losses(self, losses: dict[str, Tensor], batch: Batch, signals=None
               ) -> dict[str, Tensor]:
        """Each loss as the global batch's mean (see the module docstring); with `signals`,
        a signal caught on any rank is agreed on here, so every rank stops at this step."""
        if self.world == 1:
            return losses
        n_r = self.rows(batch)
        names = list(losses)
        local = [losses[k] if n_r else losses[k].nan_to_num(0.0) for k in names]
        flag = float(signals.pending or 0) if signals is not None else 0.0
        like = local[0].detach()
        packed = torch.stack([v.detach().to(like.dtype) * n_r for v in local]
                             + [like.new_tensor(float(n_r)), like.new_tensor(flag)])
        _all_reduce(packed)
        n = packed[-2]
        if signals is not None and float(packed[-1]) > 0:
            self.stop_signal = signals.pending or int(signal.SIGTERM)
            signals.pending = self.stop_signal
        f = self.world * n_r / n
        return {k: f * v + (packed[i] / n - f * v).detach() for i, (k, v)
                in enumerate(zip(names, local))}

    def stopping(self, signals) -> bool:
        """Whether this step ends the run: a signal agreed by all ranks (any rank's own
        signal in one process)."""
        if self.world == 1:
            return signals.pending is not None
        return self.stop_signal is not None

    def average_grads(self, model: nn.Module) -> None:
        """Every gradient averaged over ranks, in one all-reduce of one flat buffer; a
        parameter no rank has a gradient for keeps none."""
        if self.world == 1:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            return
        ref = params[0]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params]
                         + [ref.new_tensor([float(p.grad is not None) for p in params])])
        _all_reduce(flat)
        flat[:-len(params)] /= self.world
        offset = 0
        for p, seen in zip(params, flat[-len(params):].tolist()):
            piece = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
            if seen:
                p.grad = piece.clone() if p.grad is None else p.grad.copy_(piece)

    # ---- what rank 0 alone writes ---------------------------------------------------

    def log(self, path: Path, kept) -> Log:
        return Log(path, kept) if self.main else MemoryLog(kept)

    def status(self, run_dir: Path) -> Status:
        return Status(run_dir) if self.main else Unwritten(run_dir)


class MemoryLog(Log):
    """The records of metrics.jsonl, kept in memory on ranks other than 0."""

    def __init__(self, kept=None):  # noqa: D107 - no file
        self.records = list(kept[0]) if kept is not None else []

    def write(self, record: dict) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


class Unwritten(Status):
    """A status that ranks other than 0 update but never write."""

    def update(self, **fields) -> None:
        self.fields |= fields


def threads(spec: Spec, model: nn.Module, device: torch.device) -> int:
    """`train threads=`, else one thread for small models on CPU.

    A small model's per-step ops are too short to split: with a second OpenMP
    thread they wait on each other, and when another process holds a core they
    spin (measured: MMoE on 2 cores, 7 s with one thread, 38 s with two; MetaHeac's
    MAML steps, 43k dense parameters x batch 512, 10 s against 146 s; a (512, 8)
    softmax 86 us against 5.6 ms while another process held a core).
    """
    p = spec.train.params
    if p.threads:
        return p.threads
    dense = sum(q.numel() for m in model.modules() if not isinstance(m, nn.Embedding)
                for q in m.parameters(recurse=False))
    small = device.type == "cpu" and dense * p.batch < SMALL_MODEL_WORK
    return 1 if small else torch.get_num_threads()


# ---- embedding tables larger than one machine (docs/scaling.md: the TorchRec design) ----
