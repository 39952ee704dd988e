"""The analysis core (language/analysis.py): its diagnostics are `check_text`'s on every shipped
spec, every golden bad spec and their mutants, also when one Analyser sees them one after the
other (the incremental front end); every reference in a valid spec resolves; widths and
parameter counts are the compiled model's; the diagnostic codes' table is docs/language.md's."""

from __future__ import annotations

import json
import random
import re
import sys

import pytest

from conftest import BAD, ROOT, SPECS

sys.path.insert(0, str(ROOT / "bench"))
import fuzz  # noqa: E402

from mtl_dsl.language.analysis import Analyser, analyse  # noqa: E402
from mtl_dsl.language.check import check_text  # noqa: E402
from mtl_dsl.language.codes import CODES  # noqa: E402
from mtl_dsl.language.diagnostics import MtlError  # noqa: E402
from mtl_dsl.language.incremental import split  # noqa: E402

ALL = [*SPECS, *sorted((ROOT / "specs" / "tuning").glob("*.mtl")), *BAD]


def reference(text: str, path: str) -> list:
    """What `mtl check` reports (the language's part of it), syntax errors included."""
    try:
        return check_text(text, path, path).diagnostics
    except MtlError as err:
        return err.diagnostics


def read(path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_diagnostics_are_mtl_checks(path):
    text = read(path)
    got = analyse(text, str(path)).diagnostics
    assert got == reference(text, str(path))
    assert [d.hint for d in got] == [d.hint for d in reference(text, str(path))]


def test_one_analyser_over_many_texts_matches_check_text():
    """Parts and statements cached from one text are re-used in the next, also moved."""
    analyser, rng = Analyser(), random.Random(7)
    texts = [read(p) for p in ALL]
    for _ in range(150):
        text = rng.choice(texts)
        if rng.random() < 0.6:
            text = fuzz.mutate(text, rng, rng.randint(1, 3))
        if rng.random() < 0.3:  # lines inserted above: every part below moves
            text = "\n" * rng.randint(1, 3) + "# moved\n" + text
        assert analyser.analyse(text, "x.mtl").diagnostics == reference(text, "x.mtl")


def test_a_syntax_error_keeps_the_other_statements_symbols():
    text = read(ROOT / "specs" / "mmoe.mtl").replace("tower t_b = mlp(g_b, 8)",
                                                      "tower t_b = mlp(g_b, 8")
    a = analyse(text)
    assert [d.code for d in a.diagnostics] == ["E104"]
    assert {"e", "g_a", "t_a", "a", "b"} <= set(a.declared)
    assert a.blocks == {}  # nothing is built from a spec that does not parse


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_reference_of_a_valid_spec_resolves(path):
    a = analyse(read(path), str(path))
    assert a.checked is not None and a.checked.ok
    unresolved = [r for r in a.references if r.declaration is None and "column" not in r.kinds]
    assert unresolved == []
    for r in a.references:  # each resolves to a declaration of a kind allowed there
        if r.declaration is not None and r.declaration.template is None:
            assert r.declaration.kind in (*r.kinds, "gate"), r
    assert json.loads(json.dumps(a.to_json()))["ok"] is True


@pytest.mark.parametrize("path", [p for p in SPECS if "census" not in p.name],
                         ids=lambda p: p.name)
def test_widths_and_parameters_are_the_compiled_models(path):
    from mtl_dsl.model.compiler import compile_model

    a = analyse(read(path), str(path))
    spec = a.checked.spec
    vocab = {f.name: f.params.table_rows() or 11 for f in spec.features if f.embedded}
    model = compile_model(spec, a.checked.graph, vocab)
    rows = {r["name"]: r for r in model.summary()}
    compared = 0
    for name, block in a.blocks.items():
        if block.kind in ("expert", "gate", "tower", "critics", "task") and name in rows:
            assert block.params == rows[name]["params"], name
            assert list(block.tasks) == rows[name]["shared_by"], name
            compared += 1
        if name in model.width:
            assert block.width == model.width[name], name
    assert compared >= 3


def test_a_spec_with_errors_has_no_sizes_but_its_names():
    text = read(ROOT / "specs" / "mmoe.mtl").replace("over e\ngate g_b", "over ee\ngate g_b")
    a = analyse(text)
    assert [d.code for d in a.diagnostics if d.severity == "error"] == ["E201"]
    fix = a.diagnostics[0].fix
    assert fix is not None and fix.text == "e" and fix.span == a.diagnostics[0].span
    assert all(b.width is None and b.params is None for b in a.blocks.values())
    ref = a.symbol_at(fix.span.line, fix.span.column)
    assert ref is not None and ref.name == "ee" and ref.declaration is None


def test_queries_on_mmoe():
    text = read(ROOT / "specs" / "mmoe.mtl")
    a = analyse(text)
    line = next(i for i, row in enumerate(text.split("\n"), 1) if row.startswith("tower t_a"))
    ref = a.symbol_at(line, text.split("\n")[line - 1].index("g_a") + 2)
    assert ref.name == "g_a" and ref.declaration.kind == "gate"
    assert [r.span.line for r in a.references_to(ref.declaration)] == [line]
    assert a.blocks["e"].width == 16 and a.blocks["e"].tasks == ("a", "b")
    assert a.blocks["e"].params == 8 * (100 * 16 + 16)
    assert a.statement_at(line).keyword == "tower"
    assert a.slot_at(line, len("tower t_a = ") + 1).what == "kind"


def test_template_names_resolve_to_their_extract():
    a = analyse(read(ROOT / "specs" / "ple.mtl"))
    p = a.declared["p"]
    made = [r for r in a.references_to(p)]
    assert {r.name for r in made} == {"p.a", "p.b"}
    assert a.declared["p.l1.gate_a"].template == "p"


def test_a_search_space_has_its_dimensions():
    a = analyse(read(ROOT / "specs" / "tuning" / "census_mmoe_space.mtl"))
    dims = a.to_json()["dimensions"]
    assert dims and all(d["spans"][0]["line"] >= 1 for d in dims)


def test_parts_hold_whole_statements():
    text = "model m\n\n# c\ntower t = mlp(x,\n   16)\n  \ngate g = softmax(x) over e\n"
    assert [(p.line, p.text) for p in split(text)] == [
        (1, "model m\n\n"), (4, "tower t = mlp(x,\n   16)\n  \n"),
        (7, "gate g = softmax(x) over e\n")]


def test_the_codes_table_is_the_docs():
    doc = (ROOT / "docs" / "language.md").read_text(encoding="utf-8").split("\n")
    start = doc.index("| code | meaning |")
    rows = {}
    for row in doc[start + 2:]:
        if not row.startswith("|"):
            break
        code, meaning = re.fullmatch(r"\| (\w\d+) \| (.*) \|", row).groups()
        rows[code] = meaning
    assert rows == CODES
