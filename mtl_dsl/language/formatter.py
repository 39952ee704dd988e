"""The canonical layout of a spec (`mtl fmt`, docs/language.md "Formatting"): one layout, no
options, so that two people's specs read alike and a diff shows only what changed.

The statements are printed from lark's parse tree, which keeps every number, string and name
exactly as written (`1e-3` stays `1e-3`). Comments are ignored by the grammar, so they are
found in the source lines (a `#` outside a string) and put back by position: a comment on a
line of its own stays before the statement or argument that follows it, a comment after code
stays at the end of that code's line. Only calls and lists wrap, since newlines are ignored
inside brackets and nowhere else.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Literal, Union

from lark import Token, Tree

from .diagnostics import Source, normalise_newlines
from .parser import parse, parser

WIDTH = 100  # the column a call or list may reach before it is wrapped
INDENT = "    "  # one level inside a wrapped call or list
BOM = "\ufeff"

Node = Union[Tree, Token]


@dataclass(frozen=True)
class Comment:
    """A `#` comment: where its `#` is in the normalised text, its line, and its text with
    trailing spaces and tabs dropped (nothing else: a form feed in a comment is kept)."""

    pos: int
    line: int
    text: str


@dataclass(frozen=True)
class Line:
    """One output line: code with an optional trailing comment, a comment on its own line
    (`text` holds its indentation), or a blank line."""

    text: str
    kind: Literal["code", "comment", "blank"] = "code"
    comment: str | None = None


def format_text(text: str) -> str:
    """`text` in the canonical layout, or MtlError with the syntax diagnostics that `mtl
    check` reports for it. Idempotent; the parse tree and every comment are kept."""
    return format_source(text, "<spec>")


def format_source(text: str, name: str) -> str:
    """As format_text, naming the spec `name` in diagnostics. A leading byte-order mark is
    kept, and the text keeps its own newline: CRLF when its first line ends in CRLF, else
    LF (a lone CR becomes LF)."""
    bom = text.startswith(BOM)
    body = text[1:] if bom else text
    parse(Source(body, name))  # the language's own parse: its errors, exactly
    newline = "\r\n" if _first_line_end(body) == "\r\n" else "\n"
    norm = normalise_newlines(body)
    norm = norm if norm.endswith("\n") else norm + "\n"
    lines = _Printer(norm).document(parser().parse(norm))
    out = newline.join(_aligned(lines)) + newline if lines else ""
    return (BOM if bom else "") + out


def _first_line_end(text: str) -> str:
    cr, lf = text.find("\r"), text.find("\n")
    if cr < 0 or 0 <= lf < cr:
        return "\n" if lf >= 0 else ""
    return "\r\n" if lf == cr + 1 else "\r"


def comments_of(text: str) -> list[Comment]:
    """Every comment of a normalised spec, in order. Strings never span lines, so a line is
    read alone: a `#` outside a string starts a comment that runs to the line's end."""
    found, offset = [], 0
    for number, row in enumerate(text.split("\n"), start=1):
        column = _comment_column(row)
        if column is not None:
            found.append(Comment(offset + column, number, row[column:].rstrip(" \t")))
        offset += len(row) + 1
    return found


def _comment_column(row: str) -> int | None:
    in_string = escaped = False
    for column, ch in enumerate(row):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "#":
            return column
    return None


def _aligned(lines: list[Line]) -> list[str]:
    """The lines as text. Trailing comments are aligned within a paragraph (lines not parted
    by a blank line or a comment line): two spaces after the longest code that carries one."""
    out: list[str] = []
    run: list[Line] = []

    def flush() -> None:
        width = max((len(line.text) for line in run if line.comment), default=0) + 2
        out.extend(line.text.ljust(width) + line.comment if line.comment else line.text
                   for line in run)
        run.clear()

    for line in lines:
        if line.kind == "code":
            run.append(line)
            continue
        flush()
        out.append(line.text)
    flush()
    return out


def _start(node: Node) -> int:
    return node.start_pos if isinstance(node, Token) else node.meta.start_pos


def _end(node: Node) -> int:
    return node.end_pos if isinstance(node, Token) else node.meta.end_pos


def _end_line(node: Node) -> int:
    return node.end_line if isinstance(node, Token) else node.meta.end_line


def _inside(comments: list[Comment], node: Node) -> list[Comment]:
    return [c for c in comments if _start(node) < c.pos < _end(node)]


def _alone(comments: list[Comment], indent: str) -> list[Line]:
    return [Line(indent + c.text, "comment") for c in comments]


_OPS = {"add": "+", "sub": "-", "mul": "*", "l_or": "|", "l_and": "&"}


class _Printer:
    """Prints one parsed spec. `code` is the text with its comments blanked out, so that
    the parentheses around an expression are found by looking left and right of it."""

    def __init__(self, text: str) -> None:
        self.comments = comments_of(text)
        code = list(text)
        for c in self.comments:
            code[c.pos:c.pos + len(c.text)] = " " * len(c.text)
        self.code = "".join(code)

    # -- the document ---------------------------------------------------------
    def document(self, tree: Tree) -> list[Line]:
        """Statements and comment lines in order; one blank line wherever the source had
        one or more between two of them, none at the start."""
        out: list[Line] = []
        last = 0  # the source line the previous item ended on

        def gap(line: int) -> None:
            if out and line > last + 1:
                out.append(Line("", "blank"))

        comments, i = self.comments, 0
        for stmt in tree.children:
            start, end = stmt.meta.start_pos, stmt.meta.end_pos
            while i < len(comments) and comments[i].pos < start:
                gap(comments[i].line)
                out.append(Line(comments[i].text, "comment"))
                last, i = comments[i].line, i + 1
            first = i
            while i < len(comments) and comments[i].pos < end:
                i += 1
            inside = comments[first:i]
            trailing = None
            if i < len(comments) and comments[i].line == stmt.meta.end_line:
                trailing, i = comments[i], i + 1
            gap(stmt.meta.line)
            lines = self.statement(stmt, inside)
            if trailing is not None:
                lines[-1] = Line(lines[-1].text, comment=trailing.text)
            out += lines
            last = stmt.meta.end_line
        for comment in comments[i:]:
            gap(comment.line)
            out.append(Line(comment.text, "comment"))
            last = comment.line
        return out

    def statement(self, stmt: Tree, inside: list[Comment]) -> list[Line]:
        """A statement: its head, the call that may wrap, its tail. A comment inside what
        never wraps (an expert count, an expression, a train setting) cannot stay where it
        was and moves to a line of its own before the statement."""
        head, call, tail = _PARTS[stmt.data](self, stmt.children)
        if call is None:
            return [*_alone(inside, ""), Line(head + tail)]
        in_call = _inside(inside, call)
        moved = [c for c in inside if c not in in_call]
        return [*_alone(moved, ""), *self.layout(call, head, tail, in_call, "", 0)]

    # -- calls and lists --------------------------------------------------------
    def layout(self, node: Node, prefix: str, suffix: str, comments: list[Comment],
               indent: str, measured: int) -> list[Line]:
        """`node` between `prefix` and `suffix`, on one line when it fits in WIDTH (counting
        `measured` characters of the suffix: an argument's comma, not a statement's tail)
        and holds no comment; else, if it is a call or list, wrapped. A comment in what
        cannot wrap (between a key and its value, say) moves to a line of its own above."""
        if isinstance(node, Tree) and node.data == "kwarg":
            key, value = node.children
            return self.layout(value, f"{prefix}{key}=", suffix, comments, indent, measured)
        flat = self.flat(node)
        brackets = self.brackets(node)
        if brackets is None or (not comments and
                                len(prefix) + len(flat) + measured <= WIDTH):
            return [*_alone(comments, indent), Line(prefix + flat + suffix)]
        opening, items, closing, after = brackets
        within = [c for c in comments if c.pos > after]
        before = [c for c in comments if c.pos <= after]
        return [*_alone(before, indent),
                *self.wrapped(prefix + opening, items, closing + suffix, within, indent)]

    def brackets(self, node: Node) -> tuple[str, list[Tree], str, int] | None:
        """A call's or list's opening text, items, closing text and the position after
        which a comment is inside its brackets; None for what cannot wrap."""
        if not isinstance(node, Tree):
            return None
        if node.data == "call" and len(node.children) == 2:
            name, args = node.children
            return (self.flat(name) + "(", list(args.children) if args else [], ")",
                    _end(name))
        if node.data == "list":
            return "[", [c for c in node.children if c is not None], "]", _start(node)
        return None

    def wrapped(self, opening: str, items: list[Tree], closing: str,
                comments: list[Comment], indent: str) -> list[Line]:
        """One item a line, one indent deeper, each with a trailing comma. A comment after
        an item on its line stays there; one on its own line stays before the next item
        (or the closing bracket); one inside an item goes down with it."""
        inner = indent + INDENT
        leading: list[list[Comment]] = [[] for _ in range(len(items) + 1)]
        within: list[list[Comment]] = [[] for _ in items]
        trailing: list[Comment | None] = [None] * len(items)
        ends = [_end(item) for item in items]
        for c in comments:
            after = bisect_right(ends, c.pos)  # the items that end before the comment
            if after < len(items) and _start(items[after]) < c.pos:
                within[after].append(c)
            elif after and c.line == _end_line(items[after - 1]):
                trailing[after - 1] = c
            else:
                leading[after].append(c)
        lines = [Line(opening)]
        for i, item in enumerate(items):
            lines += _alone(leading[i], inner)
            sub = self.layout(item, inner, ",", within[i], inner, 1)
            if trailing[i] is not None:
                sub[-1] = Line(sub[-1].text, comment=trailing[i].text)
            lines += sub
        return [*lines, *_alone(leading[-1], inner), Line(indent + closing)]

    # -- one line ---------------------------------------------------------------
    def flat(self, node: Node | None) -> str:
        """A value, call, list or name list on one line."""
        if isinstance(node, Token):
            return str(node)
        kids = node.children
        if node.data in ("call", "count_space"):
            name = self.flat(kids[0])
            if len(kids) == 1:
                return name  # `weighting fixed`, without brackets
            args = kids[1].children if kids[1] is not None else []
            return f"{name}({', '.join(self.flat(a) for a in args)})"
        if node.data == "kwarg":
            return f"{kids[0]}={self.flat(kids[1])}"
        if node.data == "list":
            return "[" + ", ".join(self.flat(c) for c in kids if c is not None) + "]"
        if node.data == "count":
            return "[" + self.flat(kids[0]) + "]"
        if node.data == "dotted":
            return ".".join(str(k) for k in kids)
        if node.data == "name_list":
            return ", ".join(self.flat(k) for k in kids)
        return str(kids[0])  # number, string: as written

    def expr(self, node: Tree) -> str:
        """An expression with one space around each binary operator and the parentheses
        the user wrote (a doubled pair becomes one)."""
        kids = node.children
        if node.data in _OPS:
            text = f"{self.expr(kids[0])} {_OPS[node.data]} {self.expr(kids[1])}"
        elif node.data == "l_cmp":
            text = f"{self.expr(kids[0])} {kids[1]} {self.expr(kids[2])}"
        elif node.data == "l_not":
            text = "!" + self.expr(kids[0])
        else:
            text = self.flat(node)
        return f"({text})" if self.parenthesised(node) else text

    def parenthesised(self, node: Tree) -> bool:
        """Whether `(` and `)` enclose the node, spaces and line breaks aside. The node is
        balanced, so such a pair is necessarily its own."""
        i = node.meta.start_pos - 1
        while i >= 0 and self.code[i] in " \t\n":
            i -= 1
        j = node.meta.end_pos
        while j < len(self.code) and self.code[j] in " \t\n":
            j += 1
        return i >= 0 and self.code[i] == "(" and j < len(self.code) and self.code[j] == ")"


Parts = tuple[str, Union[Tree, None], str]


def _named(keyword: str) -> Callable[[_Printer, list], Parts]:
    return lambda p, k: (f"{keyword} {k[0]} = ", k[1], "")


def _experts(p: _Printer, k: list) -> Parts:
    count = p.flat(k[1]) if k[1] is not None else ""
    return f"experts {k[0]}{count} = ", k[2], ""


# statement -> (head, the call that may wrap or None, tail) from its tree's children
_PARTS: dict[str, Callable[[_Printer, list], Parts]] = {
    "model": lambda p, k: (f"model {k[0]}" + (f" {k[1]}" if k[1] is not None else ""), None, ""),
    "data": lambda p, k: ("data ", k[0], ""),
    "feature": _named("feature"),
    "label": lambda p, k: ("label " + p.flat(k[0]), None, ""),
    "derived_label": lambda p, k: (f"label {k[0]} = " + p.expr(k[1]), None, ""),
    "input": _named("input"),
    "experts": _experts,
    "gate": lambda p, k: (f"gate {k[0]} = ", k[1], " over " + p.flat(k[2])),
    "tower": _named("tower"),
    "task": lambda p, k: (f"task {k[0]}: ", k[1], " from " + p.flat(k[2])),
    "product_task": lambda p, k: (f"task {k[0]}: ", k[1], " = " + p.expr(k[2])),
    "transfer": lambda p, k: ("transfer " + " -> ".join(map(str, k[:-1])) + " = ", k[-1], ""),
    "extract": _named("extract"),
    "weighting": lambda p, k: ("weighting ", k[0], ""),
    "train": lambda p, k: ("train " + " ".join(p.flat(kw) for kw in k), None, ""),
}
