"""The server's documents and their diagnostics as you type.

Each open document keeps its text and an `Analyser` (language/analysis.py), which re-uses the
previous text's work. Analysis runs on one worker thread (an Analyser serves one thread), so
the event loop keeps answering; reading the data runs on another. A change waits DELAY seconds
for the next keystroke, then the language diagnostics are published at once, and the data's
(the header's columns, the first rows: tools/editor/lsp/data.py) follow when read, DATA_DELAY
later if no keystroke came, so a slow file never holds back what the text itself says and the
data's check never delays the next keystroke's. A result for a text that has changed since is
dropped. See docs/editors.md.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp

from ....language.analysis import Analyser, Analysis
from ....language.diagnostics import Diagnostic
from .data import READ_CODES, DataCache, Header, sampled
from .positions import Lines

DELAY = 0.2  # seconds without a keystroke before a check
DATA_DELAY = 0.3  # and before the data's check, after the language's is published
log = logging.getLogger("mtl.lsp")


@dataclass
class Document:
    """An open document: its text, what has been analysed of it, and its data's findings."""

    uri: str
    text: str
    version: int
    analyser: Analyser = field(default_factory=Analyser)
    analysis: Analysis | None = None
    task: asyncio.Task | None = None
    read: list[Diagnostic] = field(default_factory=list)  # the last data read's findings
    header: Header | None = None

    @property
    def path(self) -> str | None:
        """The file's path for a file: URI (relative data paths are read from its folder)."""
        parsed = urlparse(self.uri)
        return unquote(parsed.path) if parsed.scheme == "file" else None


class Session:
    """Every open document of one server."""

    def __init__(self, server) -> None:
        self.server = server
        self.docs: dict[str, Document] = {}
        self.language = ThreadPoolExecutor(1, "mtl-analysis")
        self.reading = ThreadPoolExecutor(1, "mtl-data")
        self.cache = DataCache()

    @property
    def encoding(self) -> str:
        return str(self.server.workspace.position_encoding or "utf-16")

    def lines(self, text: str) -> Lines:
        return Lines(text, self.encoding)

    def opened(self, uri: str, text: str, version: int) -> None:
        self.docs[uri] = doc = Document(uri, text, version)
        self._schedule(doc, 0.0)

    def changed(self, uri: str, text: str, version: int) -> None:
        doc = self.docs.get(uri)
        if doc is None:
            return self.opened(uri, text, version)
        doc.text, doc.version = text, version
        self._schedule(doc, DELAY)

    def closed(self, uri: str) -> None:
        doc = self.docs.pop(uri, None)
        if doc is not None and doc.task is not None:
            doc.task.cancel()
        self.server.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    async def analysis(self, uri: str, indexed: bool = True
                       ) -> tuple[Document, Analysis] | None:
        """A document and the analysis of its current text (None: no such document), with
        its symbol index unless only the diagnostics are wanted."""
        doc = self.docs.get(uri)
        if doc is None:
            return None
        text = doc.text
        found = doc.analysis
        if found is None or found.text != text:
            found = await asyncio.get_running_loop().run_in_executor(
                self.language, doc.analyser.analyse, text, doc.path)
            if doc.text == text:
                doc.analysis = found
        if indexed and "references" not in vars(found):
            await asyncio.get_running_loop().run_in_executor(self.language, found.index)
        return doc, found  # positions in it are found.text's

    def _schedule(self, doc: Document, delay: float) -> None:
        if doc.task is not None:
            doc.task.cancel()
        doc.task = asyncio.ensure_future(self._diagnose(doc, doc.version, delay))

    async def _diagnose(self, doc: Document, version: int, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            found = await self.analysis(doc.uri, indexed=False)
            if found is None or doc.version != version:
                return
            analysis = found[1]
            self._publish(doc, _merged(analysis.diagnostics, doc.read), version)
            await self._read_data(doc, analysis, version)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed check must not end the server
            log.exception("checking %s failed", doc.uri)

    async def _read_data(self, doc: Document, analysis: Analysis, version: int) -> None:
        """The data diagnostics: the header's columns, then (a spec without errors) the
        first rows, published with the language's as `mtl check` reports them."""
        checked = analysis.checked
        if checked is None or checked.spec.data is None:
            doc.read = []
            return
        await asyncio.sleep(DATA_DELAY)  # still typing: the next keystroke's check goes first
        if doc.version != version:
            return
        loop = asyncio.get_running_loop()
        header = await loop.run_in_executor(self.reading, self.cache.header, checked.spec)
        doc.header = header
        if doc.version != version:
            return
        with_columns = await loop.run_in_executor(
            self.language, lambda: doc.analyser.analyse(analysis.text, doc.path,
                                                        columns=header.lookup))
        found = with_columns.diagnostics
        if with_columns.checked is not None and with_columns.checked.ok:
            found = await loop.run_in_executor(self.reading, sampled, with_columns.checked)
        if doc.version == version:
            doc.read = [d for d in found if d.code in READ_CODES]
            self._publish(doc, found, version)

    def _publish(self, doc: Document, diagnostics: list[Diagnostic], version: int) -> None:
        lines = self.lines(doc.text)
        self.server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
            uri=doc.uri, version=version, diagnostics=[to_lsp(d, lines) for d in diagnostics]))

    def shutdown(self) -> None:
        for doc in self.docs.values():
            if doc.task is not None:
                doc.task.cancel()
        self.language.shutdown(wait=False, cancel_futures=True)
        self.reading.shutdown(wait=False, cancel_futures=True)


def _merged(language: list[Diagnostic], read: list[Diagnostic]) -> list[Diagnostic]:
    """The language's diagnostics and, until the data is read again, the last read's."""
    kept = [d for d in read if d not in language]
    return sorted([*language, *kept], key=lambda d: (d.span.line, d.span.column)
                  if d.span else (0, 0))


SEVERITY = {"error": lsp.DiagnosticSeverity.Error, "warning": lsp.DiagnosticSeverity.Warning}


def to_lsp(d: Diagnostic, lines: Lines) -> lsp.Diagnostic:
    """A diagnostic as the protocol's: the code, the range, the message with its hint."""
    message = d.message + (f"\nhelp: {d.hint}" if d.hint else "")
    return lsp.Diagnostic(range=lines.range(d.span), message=message,
                          severity=SEVERITY[d.severity], code=d.code, source="mtl")

