"""Search spaces in the language and `mtl tune` (docs/tuning.md): tiny specs, 1-2 epochs."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from mtl_dsl.api import check_file, check_text
from mtl_dsl.language.diagnostics import MtlError, Source
from mtl_dsl.language.parser import parse
from mtl_dsl.language.space import find_space, substitute
from mtl_dsl.tools.experiments import tune as tuning

SPACE = """model tiny
data csv("d.csv", split=[0.6, 0.3, 0.1])
feature x1 = dense(norm=standard)
feature x2 = dense(norm=standard)
feature c = sparse(dim=choice(2, 4, name=emb))
feature k = sparse(dim=choice(2, 4, name=emb))
input x = concat(x1, x2, c, k)
label y1, y2
experts e[choice(2, 3)] = mlp(x, choice(4, 8), dropout=uniform(0, 0.3))
gate g_a = softmax(x) over e
gate g_b = softmax(x) over e
tower t_a = mlp(g_a, 4)
tower t_b = mlp(g_b, 4)
task a: binary(label=y1) from t_a
task b: regression(label=y2) from t_b
weighting choice(fixed, uncertainty)
train epochs=2 batch=64 lr=loguniform(1e-3, 1e-2) seed=1 threads=1 monitor=a.auc
"""
ROWS = 500


@pytest.fixture
def spec(tmp_path):
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=ROWS), rng.normal(size=ROWS)
    c, k = rng.integers(0, 5, ROWS), rng.integers(0, 3, ROWS)
    y1 = (x1 + 0.5 * c + rng.normal(size=ROWS) > 1).astype(int)
    y2 = x2 - x1 + rng.normal(size=ROWS) * 0.1
    rows = "\n".join(f"{a:.4f},{b:.4f},{p},{q},{s},{t:.4f}" for a, b, p, q, s, t in
                     zip(x1, x2, c, k, y1, y2))
    (tmp_path / "d.csv").write_text("x1,x2,c,k,y1,y2\n" + rows + "\n")
    path = tmp_path / "tiny.mtl"
    path.write_text(SPACE)
    return path


def _setup(path, out, seeds=1, prune_startup=5) -> tuning.Setup:
    return tuning.Setup(path.read_text(), str(path), str(path), str(out), seeds, prune_startup)


def test_the_space_is_read_with_where_each_dimension_is_written():
    space, problems = find_space(parse(Source(SPACE)), SPACE)
    assert problems == []
    assert [(d.name, d.kind) for d in space.dims] == [
        ("emb", "choice"), ("experts e[count]", "choice"), ("experts e: mlp(#2)", "choice"),
        ("experts e: mlp(dropout)", "uniform"), ("weighting", "choice"),
        ("train lr", "loguniform")]
    assert len(space.dims[0].spans) == 2  # name=emb ties both features to one dimension
    assert space.size() is None  # uniform and loguniform are continuous
    lines = space.describe()
    assert "6 dimensions, continuous" in lines[0] and "weighting: choice of 2: fixed" in \
        "\n".join(lines)


def test_a_finite_space_has_the_product_of_its_choices_as_size():
    text = SPACE.replace("dropout=uniform(0, 0.3)", "dropout=0.1").replace(
        "lr=loguniform(1e-3, 1e-2)", "lr=int_uniform(1, 3)")
    space, _ = find_space(parse(Source(text)), text)
    assert space.size() == 2 * 2 * 2 * 2 * 3


def test_substitution_writes_values_in_and_padding_keeps_columns():
    space, _ = find_space(parse(Source(SPACE)), SPACE)
    chosen = {**space.first(), "train lr": 0.00123456789, "weighting": "uncertainty"}
    text = substitute(SPACE, space, chosen)
    assert "sparse(dim=2)" in text and "experts e[2] = mlp(x, 4, dropout=0)" in text
    assert "weighting uncertainty\n" in text and "lr=0.00123457 " in text
    padded = substitute(SPACE, space, chosen, pad=True).splitlines()
    assert [len(a) for a in padded] == [len(a) for a in SPACE.splitlines()]
    assert padded[8].index("mlp") == SPACE.splitlines()[8].index("mlp")


def test_check_reports_the_space_and_training_it_is_refused(spec):
    checked = check_file(spec)
    assert checked.ok and checked.space
    with pytest.raises(MtlError) as err:
        checked.raise_for_errors()  # compile and train go through here
    assert err.value.diagnostics[0].code == "E720" and "mtl tune" in err.value.render()


@pytest.mark.parametrize("bad, code, where", [
    ("dropout=uniform(0, 1.5)", "E301", "candidate 1.5"),     # the registry's bound, dropout < 1
    ("dropout=uniform(0.3, 0)", "E321", "low must be below high"),
    ("dropout=uniform(0, 0.3, 1)", "E320", "takes two numbers"),
    ("dropout=choice()", "E320", "at least one candidate"),
    ("dropout=choice(0.1, choice(0.2))", "E322", "inside choice()"),
    ("dropout=uniform(0, 0.3, step=2)", "E320", "only values and name="),
])
def test_bad_spaces_are_diagnosed_at_their_place(bad, code, where):
    text = SPACE.replace("dropout=uniform(0, 0.3)", bad)
    try:
        found = check_text(text).diagnostics
    except MtlError as err:
        found = err.diagnostics
    hits = [d for d in found if d.code == code and where in d.message]
    assert hits and hits[0].span.line == 9, found


def test_a_bad_candidate_of_a_choice_points_at_the_candidate():
    text = SPACE.replace("batch=64", "batch=choice(64, 0)")
    found = [d for d in check_text(text).diagnostics if not d.is_data]  # no d.csv here
    assert [(d.code, d.span.line, d.span.column) for d in found] == [("E301", 17, 33)]
    assert "candidate 0 of train batch" in found[0].message


def test_a_tune_resumes_up_to_n_trials_and_writes_a_checked_best(spec, tmp_path):
    out = tmp_path / "tune"
    first = tuning.tune(_setup(spec, out), trials=1)
    assert first.ran == 1
    values = [t.value for t in first.study.trials]
    second = tuning.tune(_setup(spec, out), trials=2)
    trials = second.study.trials
    assert second.ran == 1 and len(trials) == 2  # the finished one is not run again
    assert [t.value for t in trials[:1]] == values
    best = (out / "best.mtl").read_text()
    assert "choice(" not in best and "uniform(" not in best
    (tmp_path / "best.mtl").write_text(best)  # next to d.csv, as the spec was
    assert check_file(tmp_path / "best.mtl").raise_for_errors().spec.name == "tiny"
    assert (out / "trials.csv").read_text().count("\n") == 3
    assert (out / "history.png").is_file() and (out / "study.db").is_file()
    assert tuning.tune(_setup(spec, out), trials=2).ran == 0


def test_a_folder_holding_another_specs_tune_is_refused(spec, tmp_path):
    out = tmp_path / "tune"
    out.mkdir()
    (out / tuning.SPACE_FILE).write_text("model other\n")
    with pytest.raises(MtlError, match="another spec"):
        tuning.tune(_setup(spec, out), trials=1)
    assert (out / tuning.SPACE_FILE).read_text() == "model other\n"


def test_a_trial_behind_the_median_is_pruned(spec, tmp_path):
    """A constructed earlier trial with a perfect AUC at every epoch: the next is behind."""
    out = tmp_path / "tune"
    setup = _setup(spec, out, prune_startup=1)
    tuning.prepare_folder(setup)
    study = tuning.study_of(setup, True, 1)
    space = setup.checked().space
    dists = {d.name: (optuna.distributions.CategoricalDistribution(list(d.options))
                      if d.kind == "choice" else optuna.distributions.FloatDistribution(
                          d.low, d.high, log=d.kind == "loguniform")) for d in space.dims}
    study.add_trial(optuna.trial.create_trial(
        params=space.first(), distributions=dists, value=1.0,
        intermediate_values={1: 1.0, 2: 1.0}))
    result = tuning.tune(setup, trials=2)
    assert [t.state.name for t in result.study.trials] == ["COMPLETE", "PRUNED"]


def test_the_test_rows_are_read_once_for_the_best_trial_only(spec, tmp_path, monkeypatch):
    import mtl_dsl.training.loop as loop
    import mtl_dsl.training.metrics as metrics

    seen: list[tuple[str, int]] = []

    def watch(where, evaluate):
        def wrapped(model, data, tasks, *args, **kwargs):
            seen.append((where, len(data)))
            return evaluate(model, data, tasks, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(loop, "evaluate", watch("trial", loop.evaluate))
    monkeypatch.setattr(metrics, "evaluate", watch("final", metrics.evaluate))
    result = tuning.tune(_setup(spec, tmp_path / "tune", seeds=2), trials=1)
    trial_sizes = {n for where, n in seen if where == "trial"}
    final = [n for where, n in seen if where == "final"]
    assert trial_sizes == {150}  # validation rows only (0.3 of 500)
    assert final == [50, 50]  # the test rows (0.1), once for each seed of the best trial
    assert len(result.test) == 2 and 0 <= result.test[0]["a"]["auc"] <= 1


def test_the_cli_shows_the_space_and_refuses_a_tune_without_one(spec, tmp_path):
    from typer.testing import CliRunner

    from mtl_dsl.tools.cli.main import app

    runner = CliRunner()
    out = runner.invoke(app, ["check", str(spec)])
    assert out.exit_code == 0 and "search space: 6 dimensions" in out.output
    assert "experts e[count]: choice of 2: 2, 3" in out.output
    refused = runner.invoke(app, ["compile", str(spec)])
    assert refused.exit_code == 1 and "E720" in refused.output
    plain = tmp_path / "plain.mtl"
    plain.write_text(substitute(SPACE, *_space_and_first()))
    none = runner.invoke(app, ["tune", str(plain), "--trials", "1", "--out", str(tmp_path / "t")])
    assert none.exit_code == 1 and "E721" in none.output and "Traceback" not in none.output


def _space_and_first():
    space, _ = find_space(parse(Source(SPACE)), SPACE)
    return space, space.first()
