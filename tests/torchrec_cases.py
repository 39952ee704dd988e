"""What the TorchRec tests share: a small model whose tables are specs/esmm.mtl's (user, item,
category) plus specs/dupn.mtl's behaviour history read as a mean bag of the item table, its
data, a training step written once for one process and for N (the global-batch loss of
training/distributed.py, the gradients of the dense part and of replicated tables averaged
over ranks, SGD on the dense part), and what a run ends with (losses, full weights)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from mtl_dsl.api import check_text
from mtl_dsl.data.prepare import prepare
from mtl_dsl.model.compiler import compile_model
from mtl_dsl.training.distributed import Group, shard
from mtl_dsl.training.metrics import task_loss

BATCH, STEPS, LR, TABLE_LR = 16, 3, 0.05, 0.1


def spec_text(shard_: str = "auto", extra: str = "") -> str:
    """The model; `shard_` is every table's `shard=` (a dict: per table)."""
    per = shard_ if isinstance(shard_, dict) else dict.fromkeys(("user", "item", "category"),
                                                               shard_)
    opt = {t: f", shard={s}" if s != "auto" else "" for t, s in per.items()}
    return f"""model tr "the tables of specs/esmm.mtl with specs/dupn.mtl's history as a bag"
data synthetic.funnel(rows=300, seed=1, history=10)
feature user = sparse(dim=8{opt['user']})
feature item = sparse(dim=8{opt['item']})
feature category = sparse(dim=4{opt['category']})
feature hist = sequence(share=item, column=history, max_len=10)
feature d = dense(4)
label click, purchase
input x = concat(user, hist, item, category, d)
tower t_ctr = mlp(x, 16)
tower t_cvr = mlp(x, 16)
task ctr: binary(label=click) from t_ctr
task cvr: binary(label=purchase) from t_cvr
weighting fixed
train epochs=1 batch={BATCH} lr={LR} seed=7 {extra}
"""


def build(text: str):
    """(spec, model, data): the model initialised under seed 0, the same on every rank."""
    checked = check_text(text).raise_for_errors()
    data = prepare(checked.spec, None, 7)
    torch.manual_seed(0)
    model = compile_model(checked.spec, checked.graph, data.encoders.vocab_sizes())
    return checked.spec, model, data


def global_batches(data) -> list[dict]:
    """STEPS global batches: two of BATCH rows, then a ragged one of BATCH - 1; the first row
    of the first batch has an empty history (an empty bag pools to zeros)."""
    rows = iter(data.train.batches(BATCH, torch.Generator().manual_seed(3)))
    out = [next(rows) for _ in range(STEPS)]
    out[-1] = {k: v[:BATCH - 1] for k, v in out[-1].items()}
    out[0]["hist"][0] = -1
    return out


def average(params: list[torch.nn.Parameter], world: int) -> None:
    """Each gradient averaged over ranks (what the loop's Group.average_grads does)."""
    if world == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def step(model, engine, batch: dict, group: Group) -> float:
    """One training step on this rank's shard of the global `batch`: the global loss."""
    local = next(shard([batch], group.rank, group.world))
    out = model(local)
    losses = group.losses({t: task_loss("binary", out[t], local[f"label:{t}"])
                           for t in ("ctr", "cvr")}, local)
    loss = sum(losses.values())
    model.zero_grad(set_to_none=True)
    engine.zero_grad()
    loss.backward()  # the sharded and fused tables are updated here
    average(engine.averaged_parameters(), group.world)
    with torch.no_grad():
        for p in engine.model_parameters():
            p -= LR * p.grad
    engine.step()  # the replicated tables
    return float(loss.detach())


def dense_state(model) -> dict[str, torch.Tensor]:
    """The model's weights but the tables."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if not k.startswith("embeddings.")}
