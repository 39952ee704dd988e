"""Resuming a run: what must match, and the run folder's files brought back to the state.

A run folder's `resume.pt` (written by the training loop at every epoch end, every
`train checkpoint_every=` steps and on SIGINT/SIGTERM) holds everything the run needs to go
on as if it had never stopped; see `_Run.resumable` in :mod:`mtl_dsl.training.loop`. A
resume is refused (E705, exit 1) when the spec's structure, weighting, training settings
(all but `epochs=`, `threads=`, `checkpoint_every=` and `memory=`), seed or data differ
from the run's: the fingerprint written with the state says what the run was,
:func:`check` names each difference.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..data.encoders import Encoders
from ..data.tensors import Prepared, TensorSet
from ..language.diagnostics import DataError
from ..language.ir import Spec
from ..language.registry import TrainParams
from .metrics import plain
from .runs import read_status
from .state import rng_state

RESUME = "resume.pt"
FORMAT = "mtl-dsl-resume/2"  # 2: each weighting method's and aggregator's own state fields
OLD_FORMATS = ("mtl-dsl-resume/1",)  # states this version refuses, with a hint
# train settings a resume may change (memory=: the machine's; a change of the tables'
# placement it causes shows as another structure)
MAY_CHANGE = ("epochs", "threads", "checkpoint_every", "memory")
# what a run trained before a setting existed did, where that is not the setting's default:
# tables were updated densely by the dense optimizer before embedding_optimizer=
BEFORE = {"embedding_optimizer": "dense"}
HINT = "resume with the spec and data the run trained on (its spec.mtl), or start a new run"


class ResumeError(DataError):
    """A run that cannot be resumed (missing state, another spec or other data): exit 1."""

    def __init__(self, message: str, hint: str = HINT):
        super().__init__(message, hint=hint, code="E705")


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of every tensor's bytes, in key order (a few hundred MB/s)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _encoders(encoders: Encoders) -> str:
    text = json.dumps(encoders.as_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def data_fingerprint(data: Prepared) -> dict:
    """Row counts, the encoders (fitted on every training row) and the rows' contents; a
    streamed training set is read anew each epoch, so its encoders and count stand for it."""
    train = data.train
    return {"train_rows": len(train), "val_rows": len(data.val),
            "encoders": _encoders(data.encoders),
            "train": _digest(train.tensors) if isinstance(train, TensorSet) else "streamed",
            "val": _digest(data.val.tensors)}


def fingerprint(spec: Spec, model: nn.Module, seed: int, data: Prepared) -> dict:
    """What a resume must find again (see the module docstring)."""
    train = {k: v for k, v in spec.train.params.model_dump(mode="json").items()
             if k not in MAY_CHANGE}
    return {"spec": spec.name,
            "structure": {k: list(v.shape) for k, v in model.state_dict().items()},
            "tasks": [[t.name, t.kind, t.params.model_dump(mode="json")]
                      for t in spec.supervised],
            "weighting": [spec.weighting.kind, spec.weighting.params.model_dump(mode="json")],
            "train": train, "seed": seed, "data": data_fingerprint(data)}


def check(run: dict, now: dict, run_dir: Path) -> None:
    """ResumeError naming every difference between the run's fingerprint and this one."""
    found = _structure(run["structure"], now["structure"])
    if run["tasks"] != now["tasks"]:
        found.append("the tasks (names, kinds or parameters) differ")
    if run["weighting"] != now["weighting"]:
        found.append(f"weighting {run['weighting'][0]} {run['weighting'][1]} in the run, "
                     f"{now['weighting'][0]} {now['weighting'][1]} now")
    # a setting the run's fingerprint lacks (added since: schedule=, clip=) had its default
    was = {**TrainParams().model_dump(mode="json"), **BEFORE, **run["train"]}
    for key in sorted(set(run["train"]) | set(now["train"])):
        if was.get(key) != now["train"].get(key):
            found.append(f"train {key}={was.get(key)} in the run, "
                         f"{now['train'].get(key)} now (only epochs= may change)")
    if run["seed"] != now["seed"]:
        found.append(f"seed {run['seed']} in the run, {now['seed']} now")
    for key, what in (("train_rows", "training rows"), ("val_rows", "validation rows")):
        if run["data"][key] != now["data"][key]:
            found.append(f"{run['data'][key]} {what} in the run, {now['data'][key]} now")
    if not found and run["data"] != now["data"]:
        found.append("the data's contents differ from the run's (same row counts)")
    if found:
        raise ResumeError(f"cannot resume {run_dir}: " + "; ".join(found))


def _structure(run: dict, now: dict) -> list[str]:
    gone, new = sorted(set(run) - set(now)), sorted(set(now) - set(run))
    out = []
    if gone or new:
        out.append("the model's structure differs: " + ", ".join(
            [f"'{k}' only in the run" for k in gone[:3]] + [f"'{k}' only now" for k in new[:3]]))
    shapes = [k for k in run if k in now and run[k] != now[k]]
    if shapes:
        k = shapes[0]
        out.append(f"the model's structure differs: '{k}' is {tuple(run[k])} in the run, "
                   f"{tuple(now[k])} now")
    return out


def load_state(run_dir: str | Path, device: torch.device) -> tuple[Path, dict]:
    """The run folder and its resumable state; ResumeError when there is none."""
    run_dir = Path(run_dir)
    if run_dir.name == RESUME:
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise ResumeError(f"cannot resume {run_dir}: no such run folder",
                          hint="--resume takes a run folder, e.g. runs/mmoe-20250101-120000")
    path = run_dir / RESUME
    if not path.is_file():
        raise ResumeError(f"cannot resume {run_dir}: it holds no {RESUME} (a run from before "
                          "resumable checkpoints, or one killed before its first checkpoint)",
                          hint="start a new run")
    try:
        # memory-mapped: the weights and optimizer state are read in place while they are
        # copied into the live tensors, not loaded whole beside them first
        state = torch.load(path, map_location=device, weights_only=True,
                           mmap=zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same answer
        raise ResumeError(f"cannot resume {run_dir}: {path.name} is unreadable ({err})",
                          hint="start a new run") from err
    found = state.get("format") if isinstance(state, dict) else None
    if found in OLD_FORMATS:
        raise ResumeError(f"cannot resume {run_dir}: its {path.name} was written by an earlier "
                          f"mtl-dsl (format {found}; this version reads {FORMAT}), whose "
                          "weighting state it cannot read back",
                          hint="finish the run with the mtl-dsl version that started it, or "
                               "start a new run (its checkpoint.pt still predicts)")
    if found != FORMAT:
        raise ResumeError(f"cannot resume {run_dir}: {path.name} is not of format {FORMAT}",
                          hint="start a new run")
    return run_dir, state


def kept_log(path: Path, lines: int) -> tuple[list[dict], str]:
    """The first `lines` records of metrics.jsonl (those written before the state was saved)
    and their text: records written after it are dropped, so none is logged twice."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = text.splitlines(keepends=True)[:lines]
    if len(kept) < lines:
        raise ResumeError(f"cannot resume {path.parent}: {path.name} has {len(kept)} records, "
                          f"the saved state expects {lines}", hint="start a new run")
    return [json.loads(line) for line in kept], "".join(kept)


def not_running(run_dir: Path) -> None:
    """Two processes must not train the same run folder."""
    status = read_status(run_dir)
    if status is not None and status.get("status") == "running":
        raise ResumeError(f"cannot resume {run_dir}: it is still running (pid "
                          f"{status.get('pid')} on {status.get('host')})",
                          hint="wait for it, or stop it (its state is saved on SIGTERM)")


def snapshot(run, epoch: int, batch: int, stop: str | None, tables: dict | None) -> dict:
    """What resume.pt holds for `run` (the training loop's `_Run`) at a position: `batch`
    batches of `epoch` done, the epoch's order from `run.epoch_generator`. Tensors are the
    live ones (torch.save writes them without a copy); `tables`: where sharded tables were
    written (training/embeddings/engine.py `save_tables`)."""
    total, interval, n = run.acc if batch else (None, None, 0)
    return {"format": FORMAT, "fingerprint": run.fingerprint, "seed": run.seed,
            "epochs": run.epochs, "epoch": epoch, "batch": batch, "step": run.step,
            "world": run.dist.world, "stop": stop, "epoch_generator": run.epoch_generator,
            "rng": rng_state(run.generator),
            "acc": {"total": total, "interval": interval, "n": n},
            "model": run.tables.without_tables(run.model.state_dict()),
            "optimizer": run.optimizer.state_dict(),
            "embedding": run.tables.state_dict(), "tables": tables,
            "weighting": run.scheme.state_dict(), "stopping": run.stopping.state_dict(),
            "schedule": run.schedule.state_dict(),
            # plain floats: an undefined metric's reason is in its record's notes
            "history": [{**r, "val": plain(r["val"])} for r in run.history],
            "log_lines": len(run.log.records), "elapsed": run.elapsed(), "costs": run.costs}
