"""`mtl lsp`: the language server, over stdio, on pygls's public API.

Each handler is a few lines: find the document's analysis (tools/editor/lsp/session.py), ask
the module that knows (assist, outline, edits), convert positions (positions.py). Every handler
catches and logs its own failure and answers as if it had nothing to say, so no request, however
malformed, ends the server; a refused rename is the one error a client sees. The log goes to
stderr (stdout is the protocol). See docs/editors.md."""

from __future__ import annotations

import functools
import logging
import sys
from importlib.metadata import PackageNotFoundError, version

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from ....language.assist import Completion, completion, hover
from .edits import Refused, code_actions, formatted, rename, target
from .outline import TOKEN_MODIFIERS, TOKEN_TYPES, folding, inlay_hints, symbols, tokens
from .session import Session

log = logging.getLogger("mtl.lsp")
REQUEST_FAILED = -32803  # the protocol's RequestFailed: a request understood but refused


def guarded(default=None):
    """Log a handler's failure and answer `default`: the server goes on."""
    def wrap(handler):
        @functools.wraps(handler)
        async def run(server: "MtlServer", params):
            try:
                return await handler(server, params)
            except JsonRpcException:
                raise
            except Exception:  # noqa: BLE001 - a failed request must not end the server
                log.exception("%s failed", handler.__name__)
                return default
        return run
    return wrap


class MtlServer(LanguageServer):
    """The language server with its documents."""

    def __init__(self) -> None:
        super().__init__("mtl-lsp", _version(),
                         text_document_sync_kind=lsp.TextDocumentSyncKind.Full)
        self.session = Session(self)

    async def found(self, uri: str):
        """(document, analysis, lines) of an open document, or None."""
        got = await self.session.analysis(uri)
        if got is None:
            return None
        doc, analysis = got
        return doc, analysis, self.session.lines(analysis.text)


def _version() -> str:
    try:
        return version("mtl-dsl")
    except PackageNotFoundError:  # a source tree that was not installed
        return "0"


server = MtlServer()


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: MtlServer, params: lsp.DidOpenTextDocumentParams) -> None:
    doc = params.text_document
    _safely(ls.session.opened, doc.uri, doc.text, doc.version)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: MtlServer, params: lsp.DidChangeTextDocumentParams) -> None:
    _safely(lambda: ls.session.changed(params.text_document.uri, _text(ls, params),
                                       params.text_document.version))


def _text(ls: MtlServer, params: lsp.DidChangeTextDocumentParams) -> str:
    """The whole text after a change: sent whole (the sync this server asks for), else as
    pygls's workspace applied the client's ranges."""
    last = params.content_changes[-1] if params.content_changes else None
    if isinstance(last, lsp.TextDocumentContentChangeWholeDocument):
        return last.text
    return ls.workspace.get_text_document(params.text_document.uri).source


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: MtlServer, params: lsp.DidCloseTextDocumentParams) -> None:
    _safely(ls.session.closed, params.text_document.uri)


@server.feature(lsp.SHUTDOWN)
def shutdown(ls: MtlServer, *args) -> None:
    _safely(ls.session.shutdown)


def _safely(call, *args) -> None:
    try:
        call(*args)
    except Exception:  # noqa: BLE001
        log.exception("%s failed", getattr(call, "__name__", call))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
@guarded()
async def on_hover(ls: MtlServer, params: lsp.HoverParams):
    got = await ls.found(params.text_document.uri)
    if got is None:
        return None
    doc, analysis, lines = got
    text = hover(analysis, *lines.at(params.position))
    return None if text is None else lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text))


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                lsp.CompletionOptions(trigger_characters=["=", "(", ",", " ", "[", ":"]))
@guarded()
async def on_completion(ls: MtlServer, params: lsp.CompletionParams):
    got = await ls.found(params.text_document.uri)
    if got is None:
        return None
    doc, analysis, lines = got
    slot = analysis.slot_at(*lines.at(params.position))
    columns = doc.header.columns if doc.header is not None else ()
    items = [_protocol(item) for item in completion(analysis, slot, columns)]
    return lsp.CompletionList(is_incomplete=False, items=items)


def _protocol(item: Completion) -> lsp.CompletionItem:
    """A completion in the protocol's types."""
    doc = lsp.MarkupContent(lsp.MarkupKind.Markdown, item.doc) if item.doc else None
    return lsp.CompletionItem(label=item.label, kind=lsp.CompletionItemKind[item.kind],
                              detail=item.detail or None, insert_text=item.insert,
                              documentation=doc)


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
@guarded()
async def on_definition(ls: MtlServer, params: lsp.DefinitionParams):
    got = await ls.found(params.text_document.uri)
    if got is None:
        return None
    doc, analysis, lines = got
    d = analysis.declaration_of(analysis.symbol_at(*lines.at(params.position)))
    return None if d is None else lsp.Location(doc.uri, lines.range(d.span))


@server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
@guarded([])
async def on_references(ls: MtlServer, params: lsp.ReferenceParams):
    got = await ls.found(params.text_document.uri)
    if got is None:
        return []
    doc, analysis, lines = got
    d = analysis.declaration_of(analysis.symbol_at(*lines.at(params.position)))
    if d is None:
        return []
    found = [lsp.Location(doc.uri, lines.range(r.span)) for r in analysis.references_to(d)]
    if params.context.include_declaration:
        found.insert(0, lsp.Location(doc.uri, lines.range(d.span)))
    return found


@server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
@guarded()
async def on_prepare_rename(ls: MtlServer, params: lsp.PrepareRenameParams):
    got = await ls.found(params.text_document.uri)
    if got is None:
        return None
    doc, analysis, lines = got
    try:
        d = target(analysis, *lines.at(params.position))
    except Refused as why:
        raise JsonRpcException(str(why), REQUEST_FAILED) from None
    symbol = analysis.symbol_at(*lines.at(params.position))
    return lines.range(symbol.span if symbol is not None else d.span)


@server.feature(lsp.TEXT_DOCUMENT_RENAME)
@guarded()
async def on_rename(ls: MtlServer, params: lsp.RenameParams):
    got = await ls.found(params.text_document.uri)
    if got is None:
        return None
    doc, analysis, lines = got
    try:
        edits = rename(analysis, lines, *lines.at(params.position), params.new_name)
    except Refused as why:
        raise JsonRpcException(str(why), REQUEST_FAILED) from None
    return lsp.WorkspaceEdit(changes={doc.uri: edits})


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@guarded([])
async def on_symbols(ls: MtlServer, params: lsp.DocumentSymbolParams):
    got = await ls.found(params.text_document.uri)
    return [] if got is None else symbols(got[1], got[2])


@server.feature(lsp.TEXT_DOCUMENT_FOLDING_RANGE)
@guarded([])
async def on_folding(ls: MtlServer, params: lsp.FoldingRangeParams):
    got = await ls.found(params.text_document.uri)
    return [] if got is None else folding(got[1])


@server.feature(lsp.TEXT_DOCUMENT_SEMANTIC_TOKENS_FULL,
                lsp.SemanticTokensLegend(token_types=TOKEN_TYPES,
                                         token_modifiers=TOKEN_MODIFIERS))
@guarded()
async def on_tokens(ls: MtlServer, params: lsp.SemanticTokensParams):
    got = await ls.found(params.text_document.uri)
    return None if got is None else lsp.SemanticTokens(data=tokens(got[1], got[2]))


@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
@guarded([])
async def on_code_action(ls: MtlServer, params: lsp.CodeActionParams):
    got = await ls.found(params.text_document.uri)
    return [] if got is None else code_actions(got[1], got[2], got[0].uri, params.range)


@server.feature(lsp.TEXT_DOCUMENT_INLAY_HINT)
@guarded([])
async def on_inlay_hints(ls: MtlServer, params: lsp.InlayHintParams):
    got = await ls.found(params.text_document.uri)
    return [] if got is None else inlay_hints(got[1], got[2], params.range)


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
@guarded()
async def on_formatting(ls: MtlServer, params: lsp.DocumentFormattingParams):
    got = await ls.found(params.text_document.uri)
    return None if got is None else formatted(got[1].text, got[2])


def serve() -> None:
    """Run the server on stdin and stdout until the client exits it."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="mtl lsp: %(levelname)s %(name)s: %(message)s")
    server.start_io()
