"""The training run's plot, `losses.png`: loss and weights by step, metrics and gradient
cosine by epoch, read back from the records the run wrote to metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from ..language.ir import Spec


def plot(records: list[dict], path: Path, spec: Spec) -> None:
    """Training loss per task and task weights by step; each task's first metric by epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    fig = Figure(figsize=(20, 4.2))
    FigureCanvasAgg(fig)
    ax_loss, ax_w, ax_val, ax_cos = fig.subplots(1, 4)
    x = [r["step"] for r in steps]
    for name in (steps[0]["train_loss"] if steps else {}):  # tasks with a loss, and extras
        ax_loss.plot(x, [r["train_loss"][name] for r in steps], label=name)
    for name in (steps[0]["weights"] if steps else {}):
        ax_w.plot(x, [r["weights"][name] for r in steps], label=name)
    for t in spec.tasks:
        m = t.params.metrics[0] if t.params.metrics else "loss"
        ax_val.plot([r["epoch"] for r in epochs], [r["val"][t.name][m] for r in epochs],
                    marker="o", label=f"{t.name} {m}")
    pairs = sorted({k for r in epochs for k in r.get("grad_cosine", {})})
    for pair in pairs:  # below 0: the tasks' shared-parameter gradients conflict
        cos = [(r["epoch"], r["grad_cosine"][pair]) for r in epochs
               if pair in r.get("grad_cosine", {})]
        ax_cos.plot(*zip(*cos), marker="o", label=pair.replace("|", " / "))
    ax_cos.axhline(0.0, color="grey", lw=0.8)
    if all(v > 0 for r in steps for v in r["train_loss"].values()) and steps:
        ax_loss.set_yscale("log")
    for ax, title, xlabel in ((ax_loss, "training loss", "step"),
                              (ax_w, "task weight (effective)", "step"),
                              (ax_val, "validation", "epoch"),
                              (ax_cos, "gradient cosine (shared parameters)", "epoch")):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(spec.name)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
