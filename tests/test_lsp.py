"""`mtl lsp` end to end: the real command (`python -m mtl_dsl lsp`) over stdio, driven by
pytest-lsp with the capabilities VS Code and Neovim send (docs/editors.md, "What the server
gives"). pytest-asyncio runs in strict mode, so these tests are marked."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from conftest import ROOT

pytestmark = pytest.mark.asyncio(loop_scope="module")

SPEC = """model m
data synthetic.correlated(rows=100, dim=8)
feature x = dense(8)
label y1, y2
experts e[2] = mlp(x, 16, act=relu)
gate g_a = softmax(x) over e
gate g_b = softmax(x) over e
tower t_a = mlp(g_a, 8)
tower t_b = mlp(g_b, 8)
task a: regression(label=y1) from t_a   # E201 would be an unknown name
task b: regression(label=y2) from t_b
weighting uncertainty
"""


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "mtl_dsl",
                                                              "lsp"]),
                    params=["visual-studio-code", "neovim"], scope="module")
async def client(lsp_client: LanguageClient, request):
    await lsp_client.initialize_session(lsp.InitializeParams(
        capabilities=client_capabilities(request.param), root_uri=ROOT.as_uri()))
    yield
    await lsp_client.shutdown_session()


_count = iter(range(10 ** 6))


def opened(client: LanguageClient, text: str, path: Path | None = None) -> str:
    uri = (path or ROOT / "specs" / f"doc{next(_count)}.mtl").as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri, "mtl", 1, text)))
    return uri


def changed(client: LanguageClient, uri: str, text: str, version: int) -> None:
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(version=version, uri=uri),
        [lsp.TextDocumentContentChangeWholeDocument(text)]))


async def diagnosed(client: LanguageClient, uri: str, until, seconds: float = 30.0) -> list:
    """The document's diagnostics once `until(codes)` holds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = client.diagnostics.get(uri)
        if found is not None and until([d.code for d in found]):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"diagnostics of {uri}: {client.diagnostics.get(uri)}")


def at(text: str, needle: str, nth: int = 0, offset: int = 0) -> lsp.Position:
    """The position of the nth `needle` in `text` (plus offset characters)."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index)
    return lsp.Position(line, index - (text.rfind("\n", 0, index) + 1) + offset)


def doc(uri: str) -> lsp.TextDocumentIdentifier:
    return lsp.TextDocumentIdentifier(uri)


async def test_a_typo_is_diagnosed_with_its_quick_fix(client: LanguageClient):
    text = SPEC.replace("over e\ngate g_b", "over ee\ngate g_b")
    uri = opened(client, text)
    found = await diagnosed(client, uri, lambda codes: "E201" in codes)
    e201 = next(d for d in found if d.code == "E201")
    start = at(text, "over ee", offset=5)
    assert e201.range == lsp.Range(start, lsp.Position(start.line, start.character + 2))
    assert e201.severity == lsp.DiagnosticSeverity.Error and "did you mean 'e'" in e201.message
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        doc(uri), e201.range, lsp.CodeActionContext(diagnostics=[e201])))
    fix = next(a for a in actions if a.title == "Replace with 'e'")
    assert list(fix.edit.changes[uri]) == [lsp.TextEdit(e201.range, "e")]
    changed(client, uri, SPEC, 2)  # fixed: the error goes
    await diagnosed(client, uri, lambda codes: "E201" not in codes)


async def test_unknown_label_and_unused_feature_have_fixes(client: LanguageClient):
    text = SPEC.replace("label=y2", "label=y3").replace("feature x = dense(8)",
                                                        "feature x = dense(8)\nfeature z = dense(1)")
    uri = opened(client, text)
    found = await diagnosed(client, uri, lambda codes: "E206" in codes)
    e206 = next(d for d in found if d.code == "E206")
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        doc(uri), e206.range, lsp.CodeActionContext(diagnostics=[e206])))
    declare = next(a for a in actions if a.title == "Declare label y3")
    assert [e.new_text for e in declare.edit.changes[uri]] == [", y3"]
    changed(client, uri, text.replace("label=y3", "label=y2"), 2)
    found = await diagnosed(client, uri, lambda codes: "W002" in codes and "E206" not in codes)
    w002 = next(d for d in found if d.code == "W002")
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        doc(uri), w002.range, lsp.CodeActionContext(diagnostics=[w002])))
    remove = next(a for a in actions if a.title == "Remove unused feature z")
    line = at(text, "feature z").line
    assert list(remove.edit.changes[uri]) == [lsp.TextEdit(lsp.Range(lsp.Position(line, 0),
                                                               lsp.Position(line + 1, 0)), "")]


async def test_data_columns_are_checked_after_the_language(client: LanguageClient, tmp_path):
    (tmp_path / "d.csv").write_text("a,y\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n7,0\n8,1\n9,0\n10,1\n")
    text = ('model m\ndata csv("d.csv")\nfeature a = dense()\nfeature b = dense()\nlabel y\n'
            "tower t = mlp(concat_ab, 4)\ntask c: binary(label=y) from t\n")
    text = text.replace("tower t = mlp(concat_ab, 4)", "input ab = concat(a, b)\n"
                        "tower t = mlp(ab, 4)")
    uri = opened(client, text, tmp_path / "s.mtl")
    found = await diagnosed(client, uri, lambda codes: "E504" in codes)
    e504 = next(d for d in found if d.code == "E504")
    assert "'b'" in e504.message and e504.range.start.line == 3
    items = await client.text_document_completion_async(lsp.CompletionParams(
        doc(uri), lsp.Position(4, 6)))  # `label ` names a column of the header
    assert {"a", "y"} <= {i.label for i in items.items}


async def test_hover(client: LanguageClient):
    uri = opened(client, SPEC)
    await diagnosed(client, uri, lambda codes: True)

    async def hover(needle: str, nth: int = 0, offset: int = 1) -> str:
        found = await client.text_document_hover_async(lsp.HoverParams(
            doc(uri), at(SPEC, needle, nth, offset)))
        return found.contents.value if found is not None else ""

    assert "widths" in await hover("mlp") and "net kind" in await hover("mlp")
    assert "default `relu`" in await hover("act=")
    text = await hover("g_a", nth=1)
    assert "gate" in text and "line 6" in text and "output width 16" in text
    assert "parameters" in await hover("e[2]") and "shared by a, b" in await hover("e[2]")
    assert "unknown name" in await hover("E201")
    assert "Kendall" in await hover("uncertainty")


async def test_completion_in_context(client: LanguageClient):
    text = SPEC + "tower t_c = mlp(\ngate g_c = softmax(x) over \ntask c: \n" \
                  "task d: binary(label=y1) from \nexperts f[2] = mlp(x, 8, act=\n"
    uri = opened(client, text)

    async def labels(line: int, character: int) -> set[str]:
        found = await client.text_document_completion_async(lsp.CompletionParams(
            doc(uri), lsp.Position(line, character)))
        return {i.label for i in found.items}

    n = SPEC.count("\n")
    tower = await labels(n, len("tower t_c = mlp("))
    assert {"g_a", "x", "t_a", "act=", "dropout="} <= tower and "y1" not in tower
    assert await labels(n + 1, len("gate g_c = softmax(x) over ")) == {"e"}
    assert {"binary", "regression", "multiclass"} <= await labels(n + 2, len("task c: "))
    assert await labels(n + 3, len("task d: binary(label=y1) from ")) == {"t_a", "t_b"}
    assert {"relu", "gelu", "tanh"} <= await labels(n + 4, len("experts f[2] = mlp(x, 8, act="))
    assert {"model", "tower", "task"} <= await labels(n + 5, 0)


async def test_definition_references_and_rename(client: LanguageClient):
    uri = opened(client, SPEC)
    use = at(SPEC, "over e", offset=5)
    found = await client.text_document_definition_async(lsp.DefinitionParams(doc(uri), use))
    declared = at(SPEC, "e[2]")
    assert found.range.start == declared and found.uri == uri
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=doc(uri), position=declared,
        context=lsp.ReferenceContext(include_declaration=True)))
    assert sorted(r.range.start.line for r in refs) == [4, 5, 6]
    edit = await client.text_document_rename_async(lsp.RenameParams(
        text_document=doc(uri), position=use, new_name="shared"))
    assert sorted((e.range.start.line, e.new_text) for e in edit.changes[uri]) == [
        (4, "shared"), (5, "shared"), (6, "shared")]
    for taken in ("g_a", "tower", "1x"):
        with pytest.raises(JsonRpcException):
            await client.text_document_rename_async(lsp.RenameParams(
                text_document=doc(uri), position=use, new_name=taken))


async def test_outline_folding_tokens_and_hints(client: LanguageClient):
    text = (ROOT / "specs" / "ple.mtl").read_text(encoding="utf-8")
    uri = opened(client, text)
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(doc(uri)))
    extract = next(s for s in symbols if s.name == "p")
    assert {"p.l1.gate_a", "p.a"} <= {c.name for c in extract.children}
    folds = await client.text_document_folding_range_async(lsp.FoldingRangeParams(doc(uri)))
    assert any(f.kind == lsp.FoldingRangeKind.Comment for f in folds)
    st = at(text, "extract p").line
    assert any(f.start_line == st and f.end_line > st for f in folds)  # the wrapped call
    tokens = await client.text_document_semantic_tokens_full_async(
        lsp.SemanticTokensParams(doc(uri)))
    data, line, seen = tokens.data, 0, set()
    for i in range(0, len(data), 5):
        line += data[i]
        seen.add((line, data[i + 3]))
    from mtl_dsl.tools.editor.lsp.outline import TOKEN_TYPES
    assert (st, TOKEN_TYPES.index("keyword")) in seen and \
        (st, TOKEN_TYPES.index("namespace")) in seen
    hints = await client.text_document_inlay_hint_async(lsp.InlayHintParams(
        doc(uri), lsp.Range(lsp.Position(0, 0), lsp.Position(len(text.split("\n")), 0))))
    labels = {h.position.line: h.label for h in hints}
    tower = at(text, "tower t_a").line
    assert labels[tower].startswith("→ ") and "params" in labels[tower]
    end = max(f.end_line for f in folds if f.start_line == st)  # after the wrapped call
    assert labels[end].endswith("params")


async def test_formatting_through_the_formatter(client: LanguageClient):
    formatter = pytest.importorskip("mtl_dsl.language.formatter")  # ships separately
    text = SPEC.replace("mlp(x, 16, act=relu)", "mlp( x,16 ,act = relu )")
    uri = opened(client, text)
    options = lsp.FormattingOptions(tab_size=4, insert_spaces=True)
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        doc(uri), options))
    assert len(edits) == 1 and edits[0].new_text == formatter.format_text(text)
    broken = opened(client, "tower t = mlp(")
    assert not await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        doc(broken), options))


async def test_malformed_documents_never_end_the_server(client: LanguageClient):
    rng = random.Random(3)
    junk = bytes(rng.randrange(256) for _ in range(3000)).decode("utf-8", errors="replace")
    texts = [junk, 'model m "unterminated\nlabel y\n', "tower t = mlp(" + "x, " * 350_000,
             "\ud800 \U0001F600 \f\u2028 gate", ""]
    for text in texts:
        uri = opened(client, text)
        far = lsp.Position(10 ** 6, 10 ** 6)
        for request in (client.text_document_hover_async(lsp.HoverParams(doc(uri), far)),
                        client.text_document_completion_async(lsp.CompletionParams(doc(uri),
                                                                                   far)),
                        client.text_document_semantic_tokens_full_async(
                            lsp.SemanticTokensParams(doc(uri))),
                        client.text_document_document_symbol_async(
                            lsp.DocumentSymbolParams(doc(uri)))):
            await request
        changed(client, uri, text[: len(text) // 2], 2)
    unknown = "file:///nowhere/never-opened.mtl"
    assert await client.text_document_hover_async(lsp.HoverParams(
        doc(unknown), lsp.Position(0, 0))) is None
    uri = opened(client, SPEC)  # and it still answers
    found = await client.text_document_hover_async(lsp.HoverParams(doc(uri), at(SPEC, "mlp")))
    assert "net kind" in found.contents.value
