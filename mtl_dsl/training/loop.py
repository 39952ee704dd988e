"""Training: one loop for every spec, a run folder per run, checkpoints that predict again.

`train(spec)` prepares the data (:mod:`mtl_dsl.data.prepare`), compiles the model,
trains it with the spec's loss weighting (:mod:`mtl_dsl.training.weighting.methods`), validates
every epoch (:mod:`mtl_dsl.training.metrics`), stops early on `train monitor=` with
`patience=` (:mod:`mtl_dsl.training.stopping`), and keeps the best weights. To train with
another weighting than the spec's, apply `mtl_dsl.language.overrides.with_weighting` first.
The run folder holds:

    spec.mtl          the spec text as trained (overridden settings rewritten; the overrides
                      are also in metrics.jsonl's start record and in the checkpoint)
    metrics.jsonl     one JSON object a line: start, step-interval, epoch, end records; steps
                      carry the effective task weights (mean over the interval), epochs the
                      gradient cosine of each pair of tasks on the shared parameters
    checkpoint.pt     :mod:`mtl_dsl.training.checkpoints` (`load_checkpoint` rebuilds the
                      model and encoders from it alone): the best epoch so far, rewritten
                      at each improvement and at the end
    resume.pt         the last resumable state (:mod:`mtl_dsl.training.resume`): at every
                      epoch end, every `checkpoint_every=` steps and on SIGINT/SIGTERM
    status.json       running, finished, failed or interrupted (:mod:`mtl_dsl.training.runs`)
    losses.png        :mod:`mtl_dsl.training.plots`

`train(spec, resume=RUN_DIR)` goes on from RUN_DIR's resume.pt in the same folder; on CPU it
ends with the weights and metrics of the run that was never stopped, bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..data.encoders import Encoders
from ..data.prepare import prepare
from ..data.tensors import Batch, Prepared
from ..data.values import label_key
from ..data.values import Frame
from ..language.graph import TaskGraph
from ..language.ir import Spec
from . import plots
from .checkpoints import load_weights, save
from .embeddings.engine import make_engine, place
from .distributed import Group, threads
from .divergence import Divergence, check_finite
from .experts import ExpertWatch
from .resume import RESUME, check, fingerprint, kept_log, load_state, not_running, snapshot
from .callbacks import Callback, Callbacks
from .console import RunConsole
from .runs import Log as _Log, remove_partial_writes
from .signals import Interrupted, Signals
from .state import atomic_save, seed_everything, set_rng_state
from .conflict import PROBE_BATCHES, PROBE_ROWS, gradient_conflict
from .groups import ParamGroups
from .maml import rank_query_losses
from .weighting.methods import make
from .metrics import evaluate, notes, task_loss
from .precision import autocast
from .optim import clip_gradients, load_optimizer, make_optimizer
from .schedules import Schedule
from .stopping import EarlyStopping

LOG_POINTS_PER_EPOCH = 10


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict]  # one record per epoch; epoch 0 is the untrained model
    best_epoch: int
    best_metrics: dict[str, dict[str, float]]
    model: nn.Module
    encoders: Encoders
    data: Prepared
    seconds: float = 0.0
    stopped_early: bool = False
    test_metrics: dict[str, dict[str, float]] | None = None  # once, at the end, if a test split

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint.pt"


def train(spec: Spec, graph: TaskGraph | None = None, *, epochs: int | None = None,
          out_dir: str | Path | None = None, progress: bool = True, seed: int | None = None,
          frame: Frame | None = None, device: str | torch.device | None = None,
          resume: str | Path | None = None,
          callbacks: list[Callback] | None = None, test: bool = True,
          plots: bool = True) -> RunResult:
    """Train `spec` and write a run folder; see the module docstring for what is in it.

    `frame` trains on these columns instead of loading the spec's data source;
    `device` defaults to CUDA when available. `resume` goes on with the run in that folder
    (`epochs` defaults to the run's; ResumeError if the spec or data differ). SIGINT or
    SIGTERM saves a resumable state after the current step and raises
    :class:`~mtl_dsl.training.signals.Interrupted`. `callbacks`
    (:mod:`mtl_dsl.training.callbacks`) watch the run; `progress` adds the console (bar, epoch lines).
    `test=False` never reads the test rows (`mtl tune`'s trials, docs/tuning.md).
    `plots=False` leaves losses.png and experts.png to the caller (on a terminal `mtl
    compile --train` draws them in a detached process: training/plots.py).
    """
    n_threads, group = torch.get_num_threads(), Group.start(device)  # torchrun's ranks
    try:
        run = _Run(spec, graph, epochs, out_dir, seed, frame, group, resume)
        shown = [RunConsole(), run.experts] if group.main else []  # rank 0 alone shows, draws
        watchers = (shown if progress else shown[1:]) + list(callbacks or [])
        run.data = run.data if test else replace(run.data, test=None)
        run.plots = plots
        return run.fit(Callbacks(watchers))
    finally:
        torch.set_num_threads(n_threads)
        group.stop()


class _Run:
    """One training run: the prepared data, model, weighting, optimizer and run folder."""

    def __init__(self, spec: Spec, graph, epochs, out_dir, seed, frame, group, resume=None):
        from ..model.compiler import compile_model

        self.start = time.perf_counter()
        self.plots = True  # losses.png and experts.png at the end (train(plots=False): not)
        self.best_written: int | None = None  # the epoch checkpoint.pt holds, when written here
        self.spec, self.p = spec, spec.train.params
        self.dist, self.device = group, group.device  # distributed.py: ranks, shards
        self.saved: dict | None = None
        if resume is not None:
            resume, self.saved = load_state(resume, self.device)
            not_running(resume)
            if group.main:  # the one writer of the folder: what a killed write left behind
                remove_partial_writes(resume)
        run_seed = self.p.seed if self.saved is None else self.saved["seed"]
        self.seed = run_seed if seed is None else seed
        self.epochs = epochs or (self.p.epochs if self.saved is None else self.saved["epochs"])
        seed_everything(self.seed)
        self.data = prepare(spec, frame, self.seed)
        self.train_set = self.data.train.to(self.device)
        self.val_set = self.data.val.to(self.device)
        vocab = self.data.encoders.vocab_sizes()
        graph = graph or TaskGraph(spec)
        self.placement = place(spec, graph, vocab, group.world)  # E707: tables too large
        held = self.placement.sharded if group.world > 1 else ()
        self.model = compile_model(spec, graph, vocab, held).to(self.device)
        torch.set_num_threads(threads(spec, self.model, self.device))
        # the embedding engine: how the tables are read and updated (training/embeddings/engine.py)
        self.tables = make_engine(spec, graph, self.model, group, self.placement)
        self.groups = ParamGroups.of(self.model, graph)
        self.scheme = make(spec).to(self.device)
        self.scheme.attach(self.groups)
        # shared outputs the weighting reads (representation), the inputs of gates' aux losses
        self.keep = (*self.scheme.keeps(), *self.model.aux_keeps())
        self.experts = ExpertWatch(self.model, self.val_set)  # the records' "experts" entry
        self.optimizer = make_optimizer(spec, self.model, self.scheme,
                                        skip=self.tables.owned())
        self.tasks = list(spec.tasks)  # every task is evaluated ...
        self.supervised = list(spec.supervised)  # ... those with a loss are trained on
        aux = [] if self.p.meta == "maml" else list(self.model.aux_loss_names())
        self.names = [t.name for t in self.supervised] + aux
        self.steps_per_epoch = self.dist.steps(self.train_set, self.p.batch)  # agreed
        self.log_every = max(1, self.steps_per_epoch // LOG_POINTS_PER_EPOCH)
        self.schedule, self.lr = Schedule(spec, self.epochs, self.steps_per_epoch), self.p.lr
        self.generator = torch.Generator().manual_seed(self.seed)
        self.step = 0
        self.fingerprint = fingerprint(spec, self.model, self.seed, self.data)
        self.dist.agree(self.fingerprint, self.model)  # same data and weights on every rank
        self.stopping = EarlyStopping(self.p.monitor, self.p.patience,
                                      [t.name for t in self.supervised])
        self.costs = {"count": 0, "seconds": 0.0, "resume_bytes": 0, "best_bytes": 0}
        if self.saved is None:
            self.run_dir = self.dist.new_run(out_dir or "runs", spec)  # by rank 0
        else:
            self.run_dir = Path(resume)
            self._restore(self.saved)
        self.status = self.dist.status(self.run_dir)

    def _restore(self, saved: dict) -> None:
        """Weights, optimizer, weighting, early stopping and step count of the saved state
        (the RNGs and the data position are restored where the epoch resumes)."""
        check(saved["fingerprint"], self.fingerprint, self.run_dir)
        self.dist.resumable(saved, self.train_set, self.run_dir)  # another process count
        self.model.load_state_dict(self.tables.with_tables(saved["model"]))
        load_optimizer(self.optimizer, saved["optimizer"], self.model, self.scheme)
        self.tables.load_tables(self.run_dir / RESUME, saved.get("tables"))
        self.tables.load_state_dict(saved.get("embedding", {}))
        self.scheme.load_state_dict(saved["weighting"], self.device)
        self.stopping.load_state_dict(saved["stopping"])
        self.schedule.load_state_dict(saved.get("schedule", {"decays": 0, "bad": 0}))
        self.step = saved["step"]
        for key in ("model", "optimizer", "embedding"):  # copied: let the file's map go
            saved.pop(key, None)
        self.costs = dict(saved["costs"])
        self.start = time.perf_counter() - saved["elapsed"]

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fit(self, callbacks: Callbacks) -> RunResult:
        """Train, test, write the run folder; its status says how the run ended."""
        kept = None if self.saved is None else \
            kept_log(self.run_dir / "metrics.jsonl", self.saved["log_lines"])
        self.log = log = self.dist.log(self.run_dir / "metrics.jsonl", kept)
        self.status.update(status="running", epochs=self.epochs, error=None)
        self.callbacks = callbacks
        try:
            with Signals() as self.signals:
                history, best_epoch, best_val, stop = self._epochs(log)
            test = self._test()
            if test is not None:  # the best epoch (chosen on validation) on the test rows
                log.write({"type": "test", "epoch": best_epoch, "test": test,
                           "test_rows": len(self.data.test), "notes": notes(test)})
            log.write({"type": "end", "best_epoch": best_epoch, "best": best_val,
                       "monitor": self.p.monitor or "sum of validation losses",
                       "stopped": stop, "epochs_run": len(history) - 1,
                       "elapsed": self.elapsed(), "test": test, "checkpoints": self.costs})
            log.close()
            if best_epoch != self.best_written:  # epoch 0, or a best epoch before a resume
                self._save_best(best_epoch, best_val)
            if self.dist.main and self.plots:
                plots.draw_all(log.records, self.run_dir, self.spec.name)
            callbacks.on_end(self, log.records[-1])  # the checkpoint and plot are written
        except Interrupted as stopped:
            log.write({"type": "interrupted", "signal": stopped.signum, "epoch": stopped.epoch,
                       "step": stopped.step, "elapsed": self.elapsed()})
            self.status.update(status="interrupted", error=str(stopped))
            raise
        except KeyboardInterrupt:
            self.status.update(status="interrupted", error="aborted by a second Ctrl-C; "
                               "the last resumable state is kept")
            raise
        except BaseException as err:
            self.status.update(status="failed", error=f"{type(err).__name__}: {err}")
            raise
        finally:
            log.close()
            callbacks.close(self)
            self.tables.close()  # the model as a plain module again
        self.status.update(status="finished", elapsed=self.elapsed(), checkpoints=self.costs)
        return RunResult(self.run_dir, history, best_epoch, best_val, self.model,
                         self.data.encoders, self.data, self.elapsed(), stop == "early", test)

    def _test(self) -> dict | None:
        """Test metrics, computed once after training; never used to choose anything."""
        test = self.data.test
        if test is None:
            return None
        return evaluate(self.model, test.to(self.device), self.tasks)

    def _begin(self, log: _Log) -> tuple[list[dict], int, str | None]:
        """(history, first epoch, stop) of a new run (the untrained model's record and a
        first resumable state) or of the resumed one."""
        p, s = self.p, self.spec
        if self.saved is not None:
            log.write({"type": "resume", "epoch": self.saved["epoch"], "step": self.step,
                       "epochs": self.epochs, "elapsed": self.elapsed()})
            return list(self.saved["history"]), self.saved["epoch"], self.saved["stop"]
        log.write({"type": "start", "spec": s.name, "seed": self.seed, "epochs": self.epochs,
                   "weighting": s.weighting.kind, "overrides": [list(o) for o in s.overrides],
                   "train_rows": len(self.train_set), "val_rows": len(self.val_set),
                   "device": str(self.device),
                   "parameters": sum(q.numel() for q in self.model.parameters()),
                   "monitor": p.monitor, "tables": self.tables.describe(),
                   "hashing": self.data.encoders.hashing()})
        self.history = [self._record(0, {}, evaluate(self.model, self.val_set, self.tasks),
                                     self._probe())]
        log.write(self.history[0])
        self.callbacks.on_epoch(self, self.history[0])
        self.epoch_generator = self.generator.get_state()
        self._checkpoint(1, 0, None)
        return self.history, 1, None

    def _epochs(self, log: _Log) -> tuple[list[dict], int, dict, str | None]:
        """Every epoch with validation and early stopping; the best weights are loaded back."""
        self.history, first, stop = self._begin(log)
        history, stopping = self.history, self.stopping
        # E702 beyond NaN, measured against the untrained model's validation losses (epoch 0)
        self.divergence = Divergence.of(history[0]["val"], self.p.lr)
        self.callbacks.on_start(self, first, self.epochs * self.steps_per_epoch)
        for epoch in range(first, self.epochs + 1):
            if stop is not None:
                break
            train_loss = self._epoch(epoch, log, self.saved if epoch == first else None)
            self.scheme.end_epoch(train_loss)  # DWA, STCH: epoch-level state
            val = evaluate(self.model, self.val_set, self.tasks)
            history.append(self._record(epoch, train_loss, val, self._probe()))
            log.write(history[-1])
            self.callbacks.on_epoch(self, history[-1])
            check_finite(train_loss, epoch)
            stop = "early" if stopping.update(epoch, val) else None
            self.schedule.end_epoch(stopping.bad == 0)  # plateau: the monitor improved?
            self._epoch_end(epoch, stop)
        self._restore_best(len(history) - 1)
        return history, stopping.best_epoch, history[stopping.best_epoch]["val"], stop

    def _epoch_end(self, epoch: int, stop: str | None) -> None:
        """The best checkpoint when this epoch improved, the resumable state, the status."""
        s = self.stopping
        if s.best_epoch == epoch:
            self._save_best(epoch, self.history[epoch]["val"])
        self.epoch_generator = self.generator.get_state()
        self._checkpoint(epoch + 1, 0, stop)
        self.status.update(epochs_done=epoch, step=self.step, best_epoch=s.best_epoch,
                           best=self.history[s.best_epoch]["val"], elapsed=self.elapsed(),
                           checkpoints=self.costs)
        self._interrupt_if_asked(epoch + 1)

    def _save_best(self, epoch: int, val: dict) -> None:
        """checkpoint.pt of `epoch` (rank 0); tables held in shards beside it (every rank)."""
        t0, path = time.perf_counter(), self.run_dir / "checkpoint.pt"
        tables = self.tables.save_tables(path)
        if self.dist.main:
            self.costs["best_bytes"] = save(path, self.spec, self.model, self.data.encoders,
                                            self.seed, self.scheme, epoch, val, tables)
        self.best_written = epoch
        self.costs["seconds"] += time.perf_counter() - t0

    def _restore_best(self, last: int) -> None:
        """The best epoch's weights, read back from checkpoint.pt (written when the epoch
        improved), unless they are the last epoch's: no copy of the model is kept."""
        if self.stopping.best_epoch not in (0, last):
            load_weights(self.run_dir / "checkpoint.pt", self.model, self.tables, self.device)

    def _interrupt_if_asked(self, epoch: int) -> None:
        if self.dist.stopping(self.signals):
            raise Interrupted(self.signals.pending, self.run_dir, epoch, self.step)

    def _checkpoint(self, epoch: int, batch: int, stop: str | None) -> None:
        """Write resume.pt atomically: the run from here on needs nothing else (the
        position: `batch` batches of `epoch` done, its order from `epoch_generator`)."""
        t0 = time.perf_counter()
        tables = self.tables.save_tables(self.run_dir / RESUME)  # every rank: its shards
        if not self.dist.main:
            return
        state = snapshot(self, epoch, batch, stop, tables)
        self.costs["resume_bytes"] = atomic_save(state, self.run_dir / RESUME)
        self.costs["count"] += 1
        self.costs["seconds"] += time.perf_counter() - t0

    def _batches(self, saved: dict | None):
        """This epoch's batches; resumed mid-epoch, the same order with the batches done
        skipped (replayed from the epoch's generator state, so a stream lines up too)."""
        if saved is None:
            self.epoch_generator = self.generator.get_state()
            self.acc = (torch.zeros(len(self.names), device=self.device),
                        torch.zeros(len(self.names), device=self.device), 0)
            return self.dist.batches(self.train_set, self.p.batch, self.generator), 0
        self.generator.set_state(saved["epoch_generator"])
        self.epoch_generator = saved["epoch_generator"]
        batches = self.dist.batches(self.train_set, self.p.batch, self.generator)
        for _ in range(saved["batch"]):
            next(batches)
        set_rng_state(saved["rng"], self.generator)
        acc = saved["acc"]
        zero = torch.zeros(len(self.names), device=self.device)
        self.acc = (zero if acc["total"] is None else acc["total"].to(self.device),
                    zero.clone() if acc["interval"] is None else acc["interval"].to(self.device),
                    acc["n"])
        return batches, saved["batch"]

    def _epoch(self, epoch: int, log: _Log, saved: dict | None = None) -> dict[str, float]:
        """One pass over the shuffled training set; returns the mean loss of each task."""
        self.model.train()
        batches, done = self._batches(saved)
        total, interval, n = self.acc
        every = self.p.checkpoint_every
        for batch in batches:
            losses = self._step(batch)
            interval += losses
            total += losses
            n += 1
            done += 1
            if n == self.log_every or self.step % self.steps_per_epoch == 0:
                log.write(self._step_record(epoch, interval / n))
                self.divergence.check(log.records[-1]["train_loss"], epoch, self.step)
                self.callbacks.on_step(self, log.records[-1])
                interval.zero_()
                n = 0
            self.callbacks.on_batch(self)
            if self.dist.stopping(self.signals) or (every and self.step % every == 0):
                self.acc = (total, interval, n)
                self._checkpoint(epoch, done, None)
                self._interrupt_if_asked(epoch)
        return dict(zip(self.names, (total / self.steps_per_epoch).tolist()))

    def _step(self, batch: Batch) -> torch.Tensor:
        """Forward, per-task losses, weighting, backward, update: the (K,) detached losses."""
        rows = batch  # the rows the losses are means over (MAML: this rank's query rows)
        self.tables.begin(self.schedule.rate(self.step) / self.p.lr)  # the rate, before backward
        with autocast(self.spec, self.device):  # train precision=bf16
            if self.p.meta == "maml":  # MetaHeac: query losses of per-task adapted copies
                losses, rows = rank_query_losses(
                    self.model, batch, self.supervised, self.p.inner_lr, self.p.inner_steps,
                    self.p.support, self.p.first_order, self.dist)  # support: global batch
                aux, kept = {}, {}
            else:  # kept: the shared outputs the weighting balances (on=representation), if any
                out, kept = self.model.forward_keeping(batch, self.keep)
                losses = {t.name: task_loss(t.kind, out[t.name], batch[label_key(t.name)])
                          for t in self.supervised}
                labels = {t.name: batch[label_key(t.name)] for t in self.tasks}  # ESCM²'s risks
                aux = self.model.aux_losses(out, kept, labels)  # e.g. AITM's label constraint
        both = self.dist.losses({**losses, **aux}, rows, self.signals)  # global batch means
        losses, aux = {k: both[k] for k in losses}, {k: both[k] for k in aux}
        self.optimizer.zero_grad(set_to_none=True)
        total = self.scheme.step(losses, kept)
        (total + sum(aux.values())).backward() if aux else total.backward()
        self.dist.average_grads(self.model)
        self.tables.exchange()  # the touched rows' gradients, global over the ranks
        clip_gradients(self.spec, self.model, self.tables)  # global, after any aggregation
        self.lr = self.schedule.apply(self.optimizer, self.step)
        self.optimizer.step()
        self.tables.step(self.lr / self.p.lr)
        self.scheme.after_step(lambda: self.dist.losses(self._losses(batch), batch))  # FAMO
        self.step += 1
        return torch.stack([{**losses, **aux}[n].detach() for n in self.names])

    def _losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.model(batch)
        return {t.name: task_loss(t.kind, out[t.name], batch[label_key(t.name)])
                for t in self.supervised}

    def _probe(self) -> dict[str, float]:
        """The gradient-conflict probe, logged as each epoch's `grad_cosine`: the cosine of each
        pair of tasks' gradients on the shared parameters, on the first PROBE_BATCHES
        (unshuffled) training batches of at most PROBE_ROWS rows (cost: conflict.py)."""
        rows = min(self.p.batch, PROBE_ROWS)
        return gradient_conflict(self.model, self.groups.shared,
                                 self.train_set.batches(rows, shuffle=False), self._losses,
                                 [t.name for t in self.supervised], PROBE_BATCHES)

    def _record(self, epoch: int, train_loss: dict, val: dict, cosine: dict[str, float]
                ) -> dict:
        return {"type": "epoch", "epoch": epoch, "step": self.step, "train_loss": train_loss,
                "weights": self.scheme.weights(), "val": val, "grad_cosine": cosine,
                "elapsed": self.elapsed(), "notes": notes(val),
                **self.experts.record(self.model)}

    def _step_record(self, epoch: int, mean: torch.Tensor) -> dict:
        return {"type": "step", "epoch": epoch, "step": self.step,
                "train_loss": dict(zip(self.names, mean.tolist())),
                "weights": self.scheme.interval_weights(), "lr": self.lr,
                "elapsed": self.elapsed()}

