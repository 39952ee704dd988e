"""The server's edits and positions without a server: a rename leaves a spec exactly as valid as
it was (templates and their outputs included), completion slots, and positions in UTF-16 with
characters outside the Basic Multilingual Plane and separators that are not line breaks."""

from __future__ import annotations

import pytest
from lsprotocol import types as lsp

from conftest import ROOT, SPECS
from mtl_dsl.language.analysis import analyse
from mtl_dsl.tools.editor.lsp.edits import Refused, rename
from mtl_dsl.tools.editor.lsp.positions import Lines


def applied(text: str, edits: list[lsp.TextEdit]) -> str:
    """`text` with non-overlapping edits made (from the last backwards)."""
    lines = Lines(text)
    rows = text.split("\n")

    def offset(p: lsp.Position) -> int:
        line, column = lines.at(p)
        return sum(len(r) + 1 for r in rows[:line - 1]) + column - 1

    for e in sorted(edits, key=lambda e: offset(e.range.start), reverse=True):
        text = text[:offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


def renamed(text: str, needle: str, new: str, nth: int = 0, offset: int = 0) -> str:
    a = analyse(text)
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    index += offset
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return applied(text, rename(a, Lines(text), line, column, new))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_renaming_every_declaration_keeps_the_spec_valid(path):
    text = path.read_text(encoding="utf-8")
    a = analyse(text, str(path))
    before = [(d.code, d.severity) for d in a.diagnostics]
    for d in [d for d in a.declarations if d.template is None
              and d.kind not in ("model", "transfer")][:12]:
        new = renamed(text, text.split("\n")[d.span.line - 1][d.span.column - 1:
                                                             d.span.end_column - 1],
                      "zz_" + d.name.replace(".", "_"),
                      nth=_nth(text, d))
        after = analyse(new, str(path))
        assert [(x.code, x.severity) for x in after.diagnostics] == before, (d.name, new)


def _nth(text: str, d) -> int:
    """Which occurrence of the name's text the declaration's span is."""
    rows = text.split("\n")
    index = sum(len(r) + 1 for r in rows[:d.span.line - 1]) + d.span.column - 1
    return text.count(d.name, 0, index) if text[index:].startswith(d.name) else 0


def test_a_template_and_its_task_rename_with_the_names_they_make():
    text = (ROOT / "specs" / "ple.mtl").read_text(encoding="utf-8")
    new = renamed(text, "\nextract p", "q", offset=len("\nextract "))
    assert "mlp(q.a, 8)" in new and "extract q" in new
    new = renamed(text, "\ntask a", "click", offset=len("\ntask "))
    assert "tasks=[click, b]" in new and "mlp(p.click, 8)" in new
    assert analyse(new).checked.ok


def test_refusals_say_why():
    text = (ROOT / "specs" / "mmoe.mtl").read_text(encoding="utf-8")
    a, lines = analyse(text), Lines(text)
    line = text.split("\n").index("tower t_a = mlp(g_a, 8)") + 1
    for new, why in (("t_b", "already declared"), ("gate", "keyword"), ("2x", "not a name")):
        with pytest.raises(Refused, match=why):
            rename(a, lines, line, 8, new)
    with pytest.raises(Refused, match="no declared name"):
        rename(a, lines, line, 14, "x2")  # on `mlp`


def test_positions_count_utf16_and_only_real_line_breaks():
    text = 'model m "\U0001F600 x"\n# a\u2028b \f c\r\nlabel y\r'
    lines = Lines(text)
    assert lines.position(1, 11) == lsp.Position(0, 11)  # after the emoji: two UTF-16 units
    assert lines.at(lsp.Position(0, 11)) == (1, 11)
    assert lines.at(lsp.Position(0, 10)) == (1, 11)  # inside the pair: after it
    assert lines.position(3, 1) == lsp.Position(2, 0)  # U+2028 and \f break no line
    assert lines.at(lsp.Position(99, 99)) == (4, 1) and lines.end() == lsp.Position(3, 0)
    assert Lines(text, "utf-8").position(1, 11) == lsp.Position(0, 13)
