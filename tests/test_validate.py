"""Validation: golden bad specs with their exact diagnostics, and the graph's sharing."""

from __future__ import annotations

import pytest

from conftest import BAD, SPECS
from golden import diagnostics_text
from mtl_dsl.language.diagnostics import MtlError
from mtl_dsl.api import check_file, check_text, load


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_golden_bad_spec(path):
    expected = path.with_suffix(".expected").read_text()
    assert diagnostics_text(path) == expected


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_has_an_error_with_a_span_or_hint(path):
    try:
        checked = check_file(path)
        diags = [d for d in checked.diagnostics if d.severity == "error"]
    except MtlError as err:
        diags = err.diagnostics
    assert diags, "a golden bad spec must produce an error"
    for d in diags:
        assert d.span is not None or d.hint, d


def test_golden_files_cover_every_validation_code():
    """Every error code the validator can emit has at least one golden bad spec."""
    import re
    from pathlib import Path

    import mtl_dsl.language as language

    emitted = set()
    for module in Path(language.__file__).parent.glob("*.py"):  # every module of the front end
        emitted |= set(re.findall(r'"(E[2-6]\d\d)"', module.read_text()))
    covered = set()
    for path in BAD:
        covered |= set(re.findall(r"error\[(E\d+)\]", path.with_suffix(".expected").read_text()))
    assert emitted - covered == set()


def test_all_errors_are_reported_at_once():
    errors = [d for d in check_file(next(p for p in BAD if p.stem == "bad_values")).diagnostics]
    assert [d.code for d in errors] == ["E301", "E301", "E301"]


def test_load_raises_with_every_error():
    with pytest.raises(MtlError) as err:
        load(next(p for p in BAD if p.stem == "wrong_metric"))
    assert {d.code for d in err.value.diagnostics} == {"E302", "E301"}


SHARING = {
    "mmoe": (("e",), ("e",)),
    "omoe": (("e", "g"), ("e",)),
    "shared_bottom": (("bottom",), ("bottom",)),
    "cgc": (("e_s",), ("e_s",)),
    "ple": (("p.l1.a", "p.l1.b", "p.l1.shared", "p.l1.gate_shared", "p.l2.shared"),
            ("p.l2.shared",)),
    # the CTR tower is shared: the CTR and CTCVR losses both reach it; CVR has no loss
    "esmm": (("emb:user", "emb:item", "emb:category", "t_ctr"), ("t_ctr",)),
    "esm2": (("emb:user", "emb:item", "emb:category", "t1", "t2"), ("t1", "t2")),
    "aitm": (("emb:user", "emb:item", "emb:category", "t_click", "t_buy"),
             ("t_click", "t_buy")),
    "metaheac": (("emb:user", "emb:item", "emb:category", "h.experts", "h.critics"),
                 ("h.experts",)),
}


@pytest.mark.parametrize("path", [p for p in SPECS if p.stem in SHARING], ids=lambda p: p.stem)
def test_sharing_comes_from_reachability(path):
    shared, last = SHARING[path.stem]
    graph = check_file(path).graph
    assert set(graph.shared) == set(shared)
    assert graph.last_shared == last


def test_embedding_tables_are_shared_when_features_share_them(root):
    text = f"""model m
data csv("{root / 'tests' / 'fixtures' / 'ids.csv'}")
feature user = sparse(dim=8)
feature item = sparse(dim=8, share=user)
label click
tower t_a = mlp(user, 8)
tower t_b = mlp(item, 8)
task a: binary(label=click) from t_a
task b: regression(label=click) from t_b
"""
    checked = check_text(text)
    assert checked.ok, checked.diagnostics
    assert checked.graph.shared == ("emb:user",)


def test_data_codes_are_exactly_the_data_checks_codes():
    """DATA_CODES (what --data replaces, what a checkpoint ignores) lists every code that the
    data checks emit, and nothing else."""
    import inspect
    import re

    import mtl_dsl.language.validation.settings as validate

    from mtl_dsl.language.diagnostics import DATA_CODES, Diagnostic, spec_errors

    source = inspect.getsource(validate.check_data) + inspect.getsource(validate._source_shape)
    assert set(re.findall(r'"(E5\d\d)"', source)) == DATA_CODES
    found = [Diagnostic("E503", "no column"), Diagnostic("E201", "unknown name"),
             Diagnostic("W001", "unused", severity="warning")]
    assert [d.code for d in spec_errors(found)] == ["E201"]


def test_byzantine_methods_need_enough_tasks():
    text = MINI_THREE.replace("weighting fixed", "weighting krum(byzantine=1)")
    found = [d for d in check_text(text).diagnostics if d.code == "E601"]
    assert found and "at least 4 tasks" in found[0].message
    text = MINI_THREE.replace("weighting fixed", "weighting trimmed_mean(trim=1)")
    assert not [d for d in check_text(text).diagnostics if d.code == "E601"]


MINI_THREE = """model three
data synthetic.correlated(rows=100, dim=8)
feature x = dense(8)
label y1, y2
experts e = mlp(x, 8)
tower t_a = mlp(e, 4)
tower t_b = mlp(e, 4)
tower t_c = mlp(e, 4)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
task c: regression(label=y1) from t_c
weighting fixed
"""
