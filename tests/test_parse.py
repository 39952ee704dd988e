"""Parser and IR: valid specs, the table of syntax mistakes, spans, PLE expansion."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, SPECS
from mtl_dsl.language.diagnostics import MtlError, Source
from mtl_dsl.language.parser import SYNTAX_ERRORS, parse
from mtl_dsl.api import check_file, check_text, load

HEAD = """model m
data synthetic.correlated(rows=100, dim=8)
feature x = dense(8)
label y1, y2
"""


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_specs_have_no_diagnostics(path):
    checked = check_file(path)
    assert checked.diagnostics == []
    assert checked.spec.tasks


@pytest.mark.parametrize("code,example", [(code, ex) for code, (_, _, exs) in
                                          SYNTAX_ERRORS.items() for ex in exs])
def test_every_entry_of_the_syntax_error_table(code, example):
    """Each known mistake, first in a spec and after other statements, gets its message."""
    for text in (example, HEAD + example):
        with pytest.raises(MtlError) as err:
            parse(Source(text + "\n", "t.mtl"))
        assert err.value.diagnostics[0].code == code, text


def test_syntax_error_points_at_the_offending_token():
    with pytest.raises(MtlError) as err:
        parse(Source(HEAD + "tower t = mlp(x, 16) $\n", "t.mtl"))
    d = err.value.diagnostics[0]
    assert (d.span.line, d.span.column) == (5, 22)
    assert "unexpected character '$'" in d.message


def test_calls_may_wrap_over_lines_and_comments_are_ignored():
    text = HEAD + """experts e[4] = mlp(x,   # the input
                   32, 16,
                   dropout=0.1)
gate g_a = softmax(x) over e
gate g_b = softmax(x) over e
tower t_a = mlp(g_a, 8)
tower t_b = mlp(g_b, 8)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""
    checked = check_text(text)
    assert checked.ok, checked.diagnostics
    group = checked.spec.experts[0]
    assert (group.count, group.net.widths, group.net.dropout) == (4, (32, 16), 0.1)


def test_every_node_knows_its_span():
    checked = check_text(HEAD + "experts bottom = mlp(x, 16)\ntower t_a = mlp(bottom, 8)\n"
                         "task a: binary(label=y1) from t_a\n")
    spec = checked.spec
    lines = spec.source.splitlines()
    for node in spec.nodes():
        line = lines[node.span.line - 1]
        assert line[node.span.column - 1:node.span.end_column - 1] == node.name


def test_ple_expands_into_ordinary_experts_and_gates():
    """ARCHITECTURES.md 1: level j's task gates read g_k^(j-1); a shared gate below the last
    level mixes every expert of its level; the last level has none."""
    text = HEAD + """extract p = ple(x, levels=3, specific=2, shared=3, expert=mlp(32, 16), tasks=[a, b])
tower t_a = mlp(p.a, 8)
tower t_b = mlp(p.b, 8)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""
    checked = check_text(text)
    assert checked.ok, checked.diagnostics
    spec = checked.spec
    experts = {e.name: e for e in spec.experts}
    gates = {g.name: g for g in spec.gates}
    assert set(experts) == {f"p.l{j}.{k}" for j in (1, 2, 3) for k in ("a", "b", "shared")}
    assert set(gates) == {f"p.l{j}.gate_{k}" for j in (1, 2, 3) for k in ("a", "b")} | \
        {"p.l1.gate_shared", "p.l2.gate_shared"}
    assert experts["p.l1.a"].count == 2 and experts["p.l1.shared"].count == 3
    assert all(e.net.widths == (32, 16) for e in experts.values())
    assert experts["p.l2.a"].input.name == "p.l1.gate_a"
    assert experts["p.l2.shared"].input.name == "p.l1.gate_shared"
    assert gates["p.l2.gate_a"].input.name == "p.l1.gate_a"
    assert [r.name for r in gates["p.l2.gate_a"].over] == ["p.l2.a", "p.l2.shared"]
    assert [r.name for r in gates["p.l1.gate_shared"].over] == ["p.l1.a", "p.l1.b", "p.l1.shared"]
    assert spec.resolve("p.a") == "p.l3.gate_a"
    assert checked.graph.experts_of(gates["p.l1.gate_shared"]) == 7


def test_shared_sparse_feature_inherits_the_table_dim(root):
    checked = check_text(f"""model m
data csv("{root / 'tests' / 'fixtures' / 'ids.csv'}")
feature user = sparse(dim=8)
feature item = sparse(share=user)
feature other = sparse(column="price")
label click
input i = concat(user, item, other)
tower t = mlp(i, 8)
task c: binary(label=click) from t
""")
    assert checked.ok, checked.diagnostics
    assert [f.params.dim for f in checked.spec.features] == [8, 8, 16]
    assert checked.graph.widths["i"] == 32


def test_linear_expert_is_a_one_layer_mlp_without_activation():
    checked = check_text(HEAD + "experts e = linear(x, 4)\ntower t = mlp(e, 8)\n"
                         "task a: regression(label=y1) from t\n")
    net = checked.spec.experts[0].net
    assert (net.widths, net.act) == ((4,), "none")


_names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda s: s not in {"model", "data", "feature", "label", "input", "experts", "gate", "tower",
                        "task", "extract", "weighting", "train", "over", "from", "x", "y1", "a", "b",
                        "y2"})


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 16), widths=st.lists(st.integers(1, 64), min_size=1, max_size=3),
       tower=st.integers(1, 32), names=st.lists(_names, min_size=5, max_size=5, unique=True),
       dropout=st.floats(0, 0.95))
def test_generated_mmoe_specs_round_trip(n, widths, tower, names, dropout):
    """Any well-formed MMoE written in the language builds the IR it describes."""
    e, ga, gb, ta, tb = names
    w = ", ".join(map(str, widths))
    text = HEAD + f"""experts {e}[{n}] = mlp(x, {w}, dropout={dropout!r})
gate {ga} = softmax(x) over {e}
gate {gb} = softmax(x) over {e}
tower {ta} = mlp({ga}, {tower})
tower {tb} = mlp({gb}, {tower})
task a: regression(label=y1) from {ta}
task b: regression(label=y2) from {tb}
"""
    checked = check_text(text)
    assert checked.ok, checked.diagnostics
    group = checked.spec.experts[0]
    assert (group.name, group.count, group.net.widths) == (e, n, tuple(widths))
    assert checked.graph.widths[ga] == widths[-1]
    assert checked.graph.shared == (e,)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list("abexpt =()[],.:#\n\"0123456789") +
                                ["model ", "experts ", "gate ", "task ", "over ", "from ",
                                 "mlp(", "tower "]), max_size=40).map("".join))
def test_arbitrary_text_gives_diagnostics_never_a_crash(text):
    try:
        check_text(text)
    except MtlError as err:
        assert err.diagnostics and err.diagnostics[0].code.startswith("E1")


def test_settings_are_typed_by_kind_and_say_whether_declared():
    from mtl_dsl.language import registry as reg
    from mtl_dsl.language.ir import Spec, make_setting

    spec = load(ROOT / "specs" / "mmoe.mtl")
    assert spec.weighting.declared and spec.weighting.span.line > 1
    assert type(spec.weighting.params) is reg.kinds("weighting")[spec.weighting.kind].params
    assert type(spec.data.params) is reg.kinds("data")[spec.data.kind].params
    bare = Spec(name="bare")
    assert not bare.weighting.declared and bare.weighting.span is None
    assert bare.weighting.kind == "fixed" and not bare.train.declared
    with pytest.raises(ValueError):  # pydantic's ValidationError: not csv's parameter model
        make_setting("data", "csv", reg.ParquetSource(path="x.parquet"))
    with pytest.raises(ValueError):
        Spec(name="x", data={"kind": "csv", "params": {"path": "a", "stream": True}})


def test_overrides_replace_settings_and_are_shown_as_trained():
    from mtl_dsl.language.overrides import as_trained, with_data, with_weighting

    spec = load(ROOT / "specs" / "mmoe.mtl")
    assert as_trained(spec) == spec.source
    over = with_weighting(with_data(spec, "other.csv"), "cagrad(c=0.4)")
    assert over.overrides == (("data", "other.csv"), ("weighting", "cagrad(c=0.4)"))
    assert over.weighting.kind == "cagrad" and over.weighting.span == spec.weighting.span
    assert over.data.kind == "csv" and over.data.params.path.endswith("other.csv")
    assert over.source == spec.source  # never patched
    text = as_trained(over)
    assert "weighting cagrad(c=0.4)" in text and "weighting uncertainty" not in text
    assert 'data csv(path="' in text
    assert parse(Source(text, "as-trained"))  # still a spec


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_lines_end_only_at_newlines_as_editors_count_them(newline):
    """A form feed or U+2028 in a comment is no line break: the error is on the line an
    editor shows, and the caret's line is that line."""
    from mtl_dsl.language.diagnostics import Source

    text = newline.join(["# a \f form feed and a \u2028 separator", "model m", "oops x", ""])
    with pytest.raises(MtlError) as err:
        check_text(text)
    (d,) = err.value.diagnostics
    assert (d.span.line, d.span.column) == (3, 1)
    assert Source(text).line(3) == "oops x"


def test_deep_nesting_is_a_diagnostic_not_a_recursion_error():
    with pytest.raises(MtlError) as err:
        check_text("model m\ntrain x=" + "[" * 5000 + "]" * 5000 + "\n")
    assert [d.code for d in err.value.diagnostics] == ["E109"]
