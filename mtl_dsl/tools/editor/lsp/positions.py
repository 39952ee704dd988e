"""Positions between the language's spans and the protocol's: spans are 1-based lines and
columns in characters (diagnostics.Span); the protocol counts from 0, in the code units the
client and server agreed on (UTF-16 unless the client offers UTF-8 or UTF-32). Lines end at
\\n, \\r\\n or \\r alone on both sides (the protocol's rule and docs/language.md's), so a form
feed or U+2028 inside a line moves nothing. A position outside the text (a line past the end,
a column past a line's end, half a surrogate pair) is clamped, never an error."""

from __future__ import annotations

from lsprotocol import types as lsp

from ....language.diagnostics import Span, lines_of

_UNITS = {"utf-8": lambda ch: len(ch.encode("utf-8", "surrogatepass")),
          "utf-16": lambda ch: 2 if ord(ch) > 0xFFFF else 1,
          "utf-32": lambda ch: 1}


class Lines:
    """A text's lines, converting positions in the negotiated encoding."""

    def __init__(self, text: str, encoding: str = "utf-16") -> None:
        self.lines = lines_of(text)
        self.units = _UNITS.get(str(encoding), _UNITS["utf-16"])
        self.ascii = text.isascii()

    def position(self, line: int, column: int) -> lsp.Position:
        """1-based (line, column in characters) as a protocol position."""
        row = max(0, min(line - 1, len(self.lines) - 1))
        text = self.lines[row] if self.lines else ""
        chars = max(0, min(column - 1, len(text)))
        return lsp.Position(row, chars if self.ascii else sum(map(self.units, text[:chars])))

    def range(self, span: Span | None) -> lsp.Range:
        """A span as a range; no span (a diagnostic about the whole spec): the first line."""
        if span is None:
            return lsp.Range(lsp.Position(0, 0), self.position(1, len(self.lines[0]) + 1
                                                               if self.lines else 1))
        return lsp.Range(self.position(span.line, span.column),
                         self.position(span.end_line, span.end_column))

    def at(self, position: lsp.Position) -> tuple[int, int]:
        """A protocol position as 1-based (line, column in characters), clamped."""
        row = max(0, min(int(position.line), len(self.lines) - 1)) if self.lines else 0
        text = self.lines[row] if self.lines else ""
        if self.ascii:
            return row + 1, max(0, min(int(position.character), len(text))) + 1
        units, chars = 0, 0
        for ch in text:
            if units >= position.character:
                break
            units += self.units(ch)
            chars += 1
        return row + 1, chars + 1

    def end(self) -> lsp.Position:
        """The position after the last character."""
        return self.position(len(self.lines), len(self.lines[-1]) + 1 if self.lines else 1)

    def whole(self) -> lsp.Range:
        return lsp.Range(lsp.Position(0, 0), self.end())

    def length(self, line: int, column: int, chars: int) -> int:
        """How many code units `chars` characters from (line, column) take."""
        text = self.lines[line - 1] if 1 <= line <= len(self.lines) else ""
        piece = text[column - 1:column - 1 + chars]
        return len(piece) if self.ascii else sum(map(self.units, piece))
