"""losses.png (mtl_dsl.training.plots): the panels and their scales, read from the Figure."""

from __future__ import annotations

import json

from mtl_dsl.api import load
from mtl_dsl.training.plots import _main, draw_run, figure, plot

from conftest import ROOT

SPEC = load(ROOT / "specs" / "mmoe.mtl")


def records(weights_move: bool, epochs: int = 3, steps_per_epoch: int = 4) -> list[dict]:
    """A run's records: task c binary (auc, logloss), task r regression (mse from 13.4 down)."""
    out: list[dict] = [{"type": "start"}]
    step = 0
    for e in range(epochs + 1):
        if e:
            for _ in range(steps_per_epoch):
                step += 1
                w = 1.0 + 0.1 * step if weights_move else 1.0
                out.append({"type": "step", "epoch": e, "step": step,
                            "train_loss": {"c": 0.7 - 0.01 * step, "r": 13.0 / step},
                            "weights": {"c": w, "r": 1.0}})
        out.append({"type": "epoch", "epoch": e, "step": step,
                    "train_loss": {"c": 0.6, "r": 2.0} if e else {},
                    "weights": {"c": 1.0, "r": 1.0},
                    "val": {"c": {"loss": 0.7 - 0.05 * e, "auc": 0.5 + 0.1 * e,
                                  "logloss": 0.7 - 0.05 * e},
                            "r": {"loss": 13.4 / (1 + 10 * e), "mse": 13.4 / (1 + 10 * e),
                                  "mae": 3.0 / (1 + e)}},
                    "grad_cosine": {"c|r": 0.5 - 0.1 * e}})
    return out + [{"type": "end"}]


def axes_by_title(fig) -> dict:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}


def test_one_panel_per_metric_family_and_scale():
    fig = figure(records(weights_move=False), SPEC)
    axes = axes_by_title(fig)
    assert set(axes) == {"loss (lines: training, markers: validation)",
                         "validation auc (0-1)", "validation logloss", "validation mse",
                         "validation mae", "gradient cosine (shared parameters)"}
    assert axes["validation auc (0-1)"].get_yscale() == "linear"
    assert axes["validation mse"].get_yscale() == "log"  # 13.4 down to 0.43
    assert axes["validation mae"].get_yscale() == "linear"  # 3.0 down to 0.75
    loss = axes["loss (lines: training, markers: validation)"]
    assert loss.get_yscale() == "log"
    labels = loss.get_legend_handles_labels()[1]
    assert labels == ["c train", "c validation", "r train", "r validation"]


def test_fixed_weights_are_a_note_not_flat_lines():
    fig = figure(records(weights_move=False), SPEC)
    assert "task weight (effective)" not in axes_by_title(fig)
    texts = [t.get_text() for t in fig.texts]
    assert texts == ["mmoe", "task weights fixed during the run: c=1, r=1"]  # title, note


def test_changing_weights_get_a_panel_with_distinct_styles():
    fig = figure(records(weights_move=True), SPEC)
    ax = axes_by_title(fig)["task weight (effective)"]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["c", "r"]
    styles = [(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines]
    assert all(a != b for a, b in zip(*styles))  # colour, line style and marker all differ
    assert [t.get_text() for t in fig.texts] == ["mmoe"]  # the title, no note


def test_figure_size_follows_the_panels():
    six = figure(records(weights_move=False), SPEC).get_size_inches()
    seven = figure(records(weights_move=True), SPEC).get_size_inches()
    assert list(six) == [3 * 5.2, 2 * 3.8 + 0.4]  # 2 rows of 3 panels, and the note's line
    assert list(seven) == [3 * 5.2, 3 * 3.8]


def test_plot_writes_a_png_and_times_itself(tmp_path):
    seconds = plot(records(True), tmp_path / "losses.png", SPEC)
    assert (tmp_path / "losses.png").read_bytes()[:4] == b"\x89PNG"
    assert 0 < seconds < 30


def test_draw_run_reads_the_run_folder_and_a_failure_is_written_there(tmp_path):
    recs = records(True)
    recs[-2]["experts"] = {"gates": {"g": {"experts": ["e[0]", "e[1]"], "mean": [0.3, 0.7]}},
                           "warnings": []}
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert _main([str(tmp_path), "mmoe"]) == 0
    assert draw_run(tmp_path, "mmoe") == [tmp_path / "losses.png", tmp_path / "experts.png"]
    for name in ("losses.png", "experts.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "plots.log").exists()
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    assert _main([str(tmp_path), "mmoe"]) == 1
    assert (tmp_path / "plots.log").read_text().startswith("the plots could not be drawn: "
                                                           "JSONDecodeError")
