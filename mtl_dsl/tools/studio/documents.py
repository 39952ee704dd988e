"""The editor's specs as they are typed: diagnostics, the compiled summary, the diagram, hover
and completion, all from the analysis core (language/analysis.py), never a second checker.

Each open spec keeps an `Analyser`, which re-uses the previous text's work, behind a lock (an
Analyser serves one thread; the routes run here on worker threads). What the data says (the
source's header columns and `mtl check`'s look at the first rows) is read as the language
server reads it (tools/editor/lsp/data.py), when the page asks for it: the page asks once the
typing pauses, so a slow file never holds back what the text itself says. Hover and completion
are the language server's own answers (language/assist.py), as plain data. The diagram
is `mtl render`'s (tools/drawing/graphviz.py), as SVG, with each node's declaration.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from ...language.analysis import Analyser, Analysis, analyse
from ...language.diagnostics import Diagnostic, spec_errors
from ...language.size import TRAIN_BYTES_PER_PARAM
from ..drawing.graphviz import INSTALL_HINT, node_id, to_digraph
from ...language import assist
from ..editor.lsp.data import DataCache, sampled


@dataclass
class _Doc:
    """One spec being edited: its Analyser, the lock that serialises it, its last analysis."""

    analyser: Analyser = field(default_factory=Analyser)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: Analysis | None = None


class Documents:
    """The specs of one studio, keyed by their absolute path."""

    def __init__(self) -> None:
        self._docs: dict[str, _Doc] = {}
        self._lock = threading.Lock()
        self._data = DataCache()
        self._data_lock = threading.Lock()

    def analysis(self, path: Path, text: str) -> Analysis:
        """The analysis of `text` as the spec at `path` (relative data paths from its folder)."""
        with self._lock:
            doc = self._docs.setdefault(str(path), _Doc())
        with doc.lock:
            if doc.last is None or doc.last.text != text:
                doc.last = doc.analyser.analyse(text, str(path))
            return doc.last

    def check(self, path: Path, text: str, data: bool = False) -> dict:
        """The analysis as JSON for the page; with `data`, also what the data's header and
        first rows say, as `mtl check` reports it."""
        found = self.analysis(path, text)
        shown = replace(found, diagnostics=self._with_data(path, found)) if data else found
        out = shown.to_json()
        out["memory"] = {name: None if b.params is None else b.params * TRAIN_BYTES_PER_PARAM
                         for name, b in found.blocks.items()}
        size = found.checked.size if found.checked is not None else None
        out["size"] = None if size is None else {
            "params": size.params, "training_bytes": size.training_bytes,
            "batch": size.batch, "by_data": list(size.by_data), "text": size.describe()}
        return out

    def _with_data(self, path: Path, found: Analysis) -> list[Diagnostic]:
        """The language's diagnostics with the data's (language server's data.py)."""
        checked = found.checked
        if checked is None or checked.spec.data is None or spec_errors(found.diagnostics):
            return found.diagnostics
        with self._data_lock:
            header = self._data.header(checked.spec)
        with_columns = analyse(found.text, str(path), columns=header.lookup)
        if with_columns.checked is not None and with_columns.checked.ok:
            return sampled(with_columns.checked)
        return with_columns.diagnostics

    def diagram(self, path: Path, text: str) -> dict:
        """`mtl render`'s diagram as SVG, each node's declaration and the tasks that depend on
        it; {"svg": None, "reason": ...} while the spec has errors or Graphviz is missing."""
        import graphviz

        found = self.analysis(path, text)
        checked = found.checked
        if checked is None or spec_errors(found.diagnostics) or not checked.graph.acyclic:
            return {"svg": None, "reason": "the spec has errors"}
        dot = to_digraph(checked.spec, checked.graph, checked.space or None)
        try:
            svg = dot.pipe(format="svg").decode("utf-8")
        except graphviz.ExecutableNotFound:
            return {"svg": None, "reason": f"Graphviz's `dot` was not found: {INSTALL_HINT}"}
        return {"svg": svg, "nodes": _nodes(found)}

    def hover(self, path: Path, text: str, line: int, column: int) -> str | None:
        """The language server's hover (Markdown) at 1-based (line, column in characters)."""
        return assist.hover(self.analysis(path, text), line, column)

    def complete(self, path: Path, text: str, line: int, column: int) -> dict:
        """The language server's completion at (line, column): the items and the column
        where the word they replace starts."""
        found = self.analysis(path, text)
        slot = found.slot_at(line, column)
        columns: tuple[str, ...] = ()
        if slot.columns and found.checked is not None and found.checked.spec.data is not None:
            with self._data_lock:
                columns = self._data.header(found.checked.spec).columns
        items = assist.completion(found, slot, columns)
        return {"line": line, "start": slot.start, "items": [_item(i) for i in items]}


def _nodes(found: Analysis) -> dict[str, dict]:
    """Diagram node id -> the name, the declaration's statement and the tasks that depend on
    the node (an embedding table `emb:F` is F's; a critic use `C@T` is C's)."""
    graph = found.checked.graph
    out = {}
    for name in graph.g.nodes:
        owner = name.split(":", 1)[1] if name.startswith("emb:") else name.split("@")[0]
        d = found.declared.get(owner)
        span = d.statement if d is not None else None
        out[node_id(name)] = {
            "name": name, "kind": graph.kind(name), "tasks": sorted(graph.tasks_of.get(name, ())),
            "line": span.line if span else None, "end_line": span.end_line if span else None}
    return out


def _item(item: assist.Completion) -> dict:
    """A completion as plain data for the page."""
    return {"label": item.label, "kind": item.kind.lower(), "detail": item.detail or None,
            "info": item.doc, "insert": item.insert or item.label}
