"""Text to syntax tree: Lark LALR with positions, and friendly syntax errors.

The transformer only builds :mod:`syntax` nodes; it never checks meaning, so no
error can come out of it wrapped in lark's ``VisitError``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from .syntax import BinOp, Call, Compare, KwArg, ListValue, Not, Number, Ref, Statement, String
from .diagnostics import Diagnostic, MtlError, Source, Span, lines_of, normalise_newlines
from .literals import MAX_DEPTH, LiteralError, decode_number, decode_string, deepest, \
    literal_diagnostic

_OPEN = {"LPAR", "LSQB"}
_CLOSE = {"RPAR", "RSQB"}


class _IgnoreNewlinesInBrackets:
    """Post-lexer: a call or list may wrap over lines, so drop newlines inside () and []."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        for token in stream:
            if token.type in _OPEN:
                depth += 1
            elif token.type in _CLOSE:
                depth = max(0, depth - 1)
            elif token.type == "_NL" and depth:
                continue
            yield token


@lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser, built once."""
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, cache=True,
                postlex=_IgnoreNewlinesInBrackets(), maybe_placeholders=True)


def grammar_text() -> str:
    """The grammar lives in the repository's top-level `grammar/`; a source checkout reads it
    there, and a wheel carries the same file as the package data `mtl_dsl.grammar`."""
    checkout = Path(__file__).resolve().parents[2] / "grammar" / "mtl.lark"
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    return resources.files("mtl_dsl.grammar").joinpath("mtl.lark").read_text(encoding="utf-8")


def _span(item) -> Span:
    return Span.from_meta(item)


@v_args(meta=True)
class _ToAst(Transformer):
    """Lark tree to :class:`Statement` list; one small method per grammar rule. A literal
    without a value (a bad escape, an integer beyond 64 bits) is collected in `problems`
    and stands in as 0 or "" so that the whole spec is still read."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[Diagnostic] = []

    def start(self, meta, stmts):
        return list(stmts)

    def _literal(self, token: Token, decode, what: str, fallback):
        try:
            return decode(str(token))
        except LiteralError as err:
            self.problems.append(literal_diagnostic(err, _span(token), what))
            return fallback

    # -- values ---------------------------------------------------------
    def number(self, meta, items):
        return Number(self._literal(items[0], decode_number, "number", 0), _span(meta))

    def string(self, meta, items):
        return String(self._literal(items[0], decode_string, "string", ""), _span(meta))

    def dotted(self, meta, items):
        return Ref(".".join(str(t) for t in items), _span(meta))

    def list(self, meta, items):
        return ListValue(tuple(i for i in items if i is not None), _span(meta))

    def kwarg(self, meta, items):
        return KwArg(str(items[0]), items[1], _span(meta))

    def args(self, meta, items):
        return list(items)

    def call(self, meta, items):
        head, args = items[0], items[1] if len(items) > 1 and items[1] is not None else []
        positional = tuple(a for a in args if not isinstance(a, KwArg))
        keywords = tuple(a for a in args if isinstance(a, KwArg))
        return Call(head.name, positional, keywords, _span(meta), head.span)

    def name_list(self, meta, items):
        return tuple(items)

    def count(self, meta, items):
        if isinstance(items[0], Call):
            return items[0]
        return Number(self._literal(items[0], decode_number, "number", 0), _span(meta))

    def count_space(self, meta, items):  # a search space; language/space.py reads it
        return self.call(meta, items)

    # -- expressions ----------------------------------------------------
    def _binop(op: str):
        def build(self, meta, items):
            return BinOp(op, items[0], items[1], _span(meta))
        return build

    add, sub, mul = _binop("+"), _binop("-"), _binop("*")
    l_or, l_and = _binop("|"), _binop("&")

    def l_not(self, meta, items):
        return Not(items[0], _span(meta))

    def l_cmp(self, meta, items):
        return Compare(str(items[1]), items[0], items[2], _span(meta))

    # -- statements -----------------------------------------------------
    def _named(self, keyword, meta, items, **extra) -> Statement:
        name: Token = items[0]
        return Statement(keyword, _span(meta), str(name), _span(name), **extra)

    def model(self, meta, items):
        text = None if items[1] is None else self._literal(items[1], decode_string, "string", "")
        return self._named("model", meta, items, text=text)

    def data(self, meta, items):
        return Statement("data", _span(meta), call=items[0])

    def feature(self, meta, items):
        return self._named("feature", meta, items, call=items[1])

    def label(self, meta, items):
        return Statement("label", _span(meta), refs=items[0])

    def derived_label(self, meta, items):
        return self._named("label", meta, items, expr=items[1])

    def product_task(self, meta, items):
        return self._named("task", meta, items, call=items[1], expr=items[2])

    def transfer(self, meta, items):
        *names, call = items
        refs = tuple(Ref(str(n), _span(n)) for n in names)
        return Statement("transfer", _span(meta), str(names[0]), _span(names[0]), call=call,
                         refs=refs)

    def input(self, meta, items):
        return self._named("input", meta, items, call=items[1])

    def experts(self, meta, items):
        return self._named("experts", meta, items, count=items[1], call=items[2])

    def gate(self, meta, items):
        return self._named("gate", meta, items, call=items[1], refs=items[2])

    def tower(self, meta, items):
        return self._named("tower", meta, items, call=items[1])

    def task(self, meta, items):
        return self._named("task", meta, items, call=items[1], refs=(items[2],))

    def extract(self, meta, items):
        return self._named("extract", meta, items, call=items[1])

    def weighting(self, meta, items):
        return Statement("weighting", _span(meta), call=items[0])

    def train(self, meta, items):
        return Statement("train", _span(meta), kwargs=tuple(items))


# A table of common mistakes: lark matches the failing parser state against
# these examples and we report the friendly message instead of a token dump.
SYNTAX_ERRORS: dict[str, tuple[str, str, list[str]]] = {
    "E101": ("missing '=' after the name",
             "write it as `experts e[8] = mlp(x, 64)`",
             ["experts e[8] mlp(x, 64)", "tower t mlp(x, 16)", "gate g softmax(x) over e",
              "feature f sparse(vocab=10, dim=4)", "input i concat(a, b)"]),
    "E102": ("a gate needs `over` and the expert groups it mixes",
             "write it as `gate g = softmax(x) over e1, e2`",
             ["gate g = softmax(x)\n", "gate g = softmax(x) e"]),
    "E103": ("a task needs its kind after ':' and `from` with its tower",
             "write it as `task ctr: binary(label=click) from t_ctr`",
             ["task a: binary(label=y)\n", "task a binary(label=y) from t", "task a: from t",
              "task a: binary(label=y) t"]),
    "E104": ("unclosed parenthesis or bracket",
             "close every '(' with ')' and every '[' with ']'",
             ["tower t = mlp(x, 16\n", "experts e[8 = mlp(x)", "gate g = softmax(x over e",
              "task a: binary(label=y, metrics=[auc) from t"]),
    "E105": ("a train setting must be written key=value",
             "write it as `train epochs=5 batch=256 lr=1e-3`",
             ["train epochs 5", "train 5", "train epochs=5 batch"]),
    "E106": ("expected a statement keyword at the start of the line",
             "statements start with one of: model, data, feature, label, input, experts, "
             "gate, tower, task, extract, weighting, train",
             ["foo x = 1", "expert e[2] = mlp(x)", "towers t = mlp(x)", "x = 1"]),
    "E107": ("the number of experts goes in square brackets and must be an integer",
             "write it as `experts e[8] = mlp(x, 64)`",
             ["experts e[2.5] = mlp(x)", "experts e(8) = mlp(x)", "experts e[x] = mlp(x)"]),
    "E108": ("two statements on one line",
             "put each statement on its own line",
             ["tower t = mlp(x, 16) tower u = mlp(x, 16)", "label y weighting fixed"]),
}


@lru_cache(maxsize=1)
def _examples() -> dict[str, list[str]]:
    """Each example also in the middle of a spec: lark matches parser states by stack depth."""
    prefixes = ("", "model m\n", "model m\nlabel y\n")
    return {code: [p + e for e in examples for p in prefixes]
            for code, (_, _, examples) in SYNTAX_ERRORS.items()}


def _match_examples(err: UnexpectedInput) -> str | None:
    """Lark's ``match_examples`` logic, inlined: lark 1.3 crashes formatting a debug
    message when parser states carry a post-lexer, so we compare states ourselves."""
    fallback = None
    for code, examples in _examples().items():
        for example in examples:
            try:
                parser().parse(example)
            except UnexpectedInput as ut:
                if ut.state != err.state:
                    continue
                if getattr(ut, "accepts", None) != getattr(err, "accepts", None):
                    continue
                if getattr(ut, "token", None) == getattr(err, "token", None):
                    return code
                fallback = fallback or code
    return fallback


def _unclosed_bracket(text: str, line: int, column: int) -> Span | None:
    """The innermost bracket still open before (line, column), skipping strings and comments.
    Newlines inside brackets are ignored, so an unclosed '(' surfaces lines later."""
    stack: list[Span] = []
    for n, row in enumerate(lines_of(text), start=1):
        in_string = in_comment = escaped = False
        for c, ch in enumerate(row, start=1):
            if (n, c) >= (line, column):
                return stack[-1] if stack else None
            if in_comment:
                continue
            if in_string and (escaped or ch == "\\"):
                escaped = not escaped
            elif ch == '"':
                in_string = not in_string
            elif not in_string and ch == "#":
                in_comment = True
            elif not in_string and ch in "([":
                stack.append(Span(n, c, n, c + 1))
            elif not in_string and ch in ")]" and stack:
                stack.pop()
    return stack[-1] if stack else None


def _syntax_diagnostic(err: UnexpectedInput, text: str) -> Diagnostic:
    line, column = max(err.line, 1), max(err.column, 1)
    width = 1
    token = getattr(err, "token", None)
    if isinstance(token, Token) and token.type not in ("$END",) and token.value:
        width = max(1, len(str(token.value).split("\n")[0]))
    span = Span(line, column, line, column + width)
    at_end = isinstance(err, UnexpectedEOF) or (isinstance(token, Token) and token.type == "$END")
    opened = _unclosed_bracket(text, line, column)
    if opened is not None and (at_end or opened.line < line):
        message, hint, _ = SYNTAX_ERRORS["E104"]
        return Diagnostic("E104", f"syntax error: {message}", opened, hint)
    code = _match_examples(err)
    if code:
        message, hint, _ = SYNTAX_ERRORS[code]
        return Diagnostic(code, f"syntax error: {message}", span, hint)
    if isinstance(err, UnexpectedCharacters):
        row = lines_of(text)[line - 1] if line <= len(lines_of(text)) else ""
        char = row[column - 1] if column <= len(row) else "?"
        if char == '"':
            return Diagnostic("E110", "bad string: it does not end on its line", span,
                              'close it with " on the same line; write a line break as \\n')
        return Diagnostic("E100", f"syntax error: unexpected character {char!r}", span,
                          "names are letters, digits and '_'; strings use double quotes")
    if at_end:
        return Diagnostic("E100", "syntax error: the spec ends in the middle of a statement", span)
    expected = sorted(getattr(err, "expected", set()) or getattr(err, "allowed", set()))
    shown = ", ".join(_pretty(e) for e in expected[:16])
    found = repr(str(token.value)) if isinstance(token, Token) else "this"
    return Diagnostic("E100", f"syntax error: unexpected {found}",
                      span, f"expected one of: {shown}" if shown else None)


def _pretty(terminal: str) -> str:
    names = {"NAME": "a name", "SIGNED_NUMBER": "a number", "STRING": "a string",
             "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "COMMA": "','",
             "EQUAL": "'='", "COLON": "':'", "DOT": "'.'", "_NL": "a new line", "INT": "an integer"}
    return names.get(terminal, f"'{terminal.lower()}'")


def parse(source: Source) -> list[Statement]:
    """Parse a whole spec, or raise :class:`MtlError` with its syntax diagnostics. Lines end
    at \\n, \\r\\n or \\r alone, as :class:`Source` counts them (diagnostics.lines_of)."""
    text = normalise_newlines(source.text)
    statements, problems = _read(text if text.endswith("\n") else text + "\n", source)
    if problems:
        raise MtlError(problems, source)
    return statements


# What a part of a spec is parsed after. The LALR parser's state at a statement's first token
# depends on whether the spec starts with a line break (blank or comment lines) and on whether
# one statement or more came before (the `_stmt _NL+` before it is reduced only then), and
# on nothing else (language/incremental.py).
_BEFORE = ("", "model _\n", "model _\nmodel _\n")


def parse_part(lines: str, line: int, lead: bool, before: int, source: Source
               ) -> tuple[list[Statement], list[Diagnostic]]:
    """The statements of `lines` (whole lines of `source`'s normalised text starting at line
    `line`, ending with a newline, holding whole statements) and their literals' problems
    (E110), as :func:`parse` of the whole spec finds them there: the part is parsed at its own
    line numbers, in the parser's state after `before` statements (0, 1, or 2 for two or more)
    in a spec that starts with a line break (`lead`) or not. A syntax error or a statement
    nested too deep raises :class:`MtlError` with the diagnostic `parse` gives, if nothing
    before the part fails."""
    before = min(before, 2)
    head = ("\n" if lead else "") + _BEFORE[before]
    statements, problems = _read(head + "\n" * (line - 1 - head.count("\n")) + lines, source)
    return statements[before:], problems


def _read(text: str, source: Source) -> tuple[list[Statement], list[Diagnostic]]:
    """Statements and the problems of their literals; a syntax error or too deep a statement
    raises. `text` is normalised and ends with a newline."""
    try:
        tree = parser().parse(text)
    except UnexpectedInput as err:
        raise MtlError([_syntax_diagnostic(err, text)], source) from None
    too_deep = deepest(tree)
    if too_deep is not None:
        meta = too_deep.meta
        span = Span(meta.line, meta.column, meta.line, meta.column + 1)
        raise MtlError([Diagnostic("E109", f"syntax error: nested more than {MAX_DEPTH} levels "
                                   "deep", span, "a chain of N operators nests N levels; "
                                   "split it with derived labels or products of products")],
                       source)
    transformer = _ToAst()
    statements = transformer.transform(tree)
    return statements, transformer.problems
