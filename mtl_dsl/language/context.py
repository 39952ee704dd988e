"""What may be written at a position of a spec being typed: a statement keyword, a kind of some
role, a parameter of a call, a value of a parameter, or a declared name of some kinds.

The text before the position is read token by token from the start of its statement, the way
the grammar reads it (grammar/mtl.lark; calls and lists nest, newlines inside brackets are
ignored), without parsing: the statement is usually incomplete while it is typed. The kinds of
names that fit come from the same tables as the symbol index (language/symbols.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .diagnostics import lines_of
from .reader import NESTED_ROLE
from .space import DISTRIBUTIONS
from .symbols import CHAIN, COLUMN_KEYS, FROM, INPUT_KINDS, OVER, REFERENCE_KEYS, ROLES

KEYWORDS = ("model", "data", "feature", "label", "input", "experts", "gate", "tower", "task",
            "transfer", "extract", "weighting", "train")
_TOKEN = re.compile(r'(?P<string>"(?:[^"\\\n]|\\.)*"?)|(?P<comment>#[^\n]*)'
                    r'|(?P<number>\d[\w.]*)|(?P<name>[A-Za-z_][\w.]*)|(?P<arrow>->)'
                    r'|(?P<nl>\n)|(?P<op>[^\s\w"#])|\s+')
_STARTS = re.compile(r"(" + "|".join(KEYWORDS) + r")(\s|$)")


@dataclass(frozen=True)
class Slot:
    """What fits at a position. `what`: keyword, kind (of `role`), argument (a parameter of
    `kind` not yet `given`, or at `position` a name of `kinds`), value (of parameter `param`:
    its enumerated values; names of `kinds`; data columns when `columns`; a call of
    `nested` role), name (of `kinds`), connective (one of `words`) or nothing. `word` is the
    part of a name already typed, from column `start`."""

    what: str
    role: str = ""
    kind: str = ""
    param: str = ""
    kinds: tuple[str, ...] = ()
    columns: bool = False
    nested: str = ""
    given: tuple[str, ...] = ()
    position: int = 0
    words: tuple[str, ...] = ()
    word: str = ""
    start: int = 1


@dataclass
class _Frame:
    """An open bracket: a call (`name` of `role`), or a list or search space in one (its role,
    name and key); the key being given in it."""

    call: bool
    role: str = ""
    name: str = ""
    key: str = ""
    given: list[str] = field(default_factory=list)
    position: int = 0
    keyed: bool = False  # whether the argument being written has a key
    nested: bool = False  # a call inside a call: written without its input


def slot_at(text: str, line: int, column: int) -> Slot:
    """What fits at 1-based (line, column) of `text` (columns in characters)."""
    lines = lines_of(text)
    if not 1 <= line <= len(lines):
        return Slot("keyword")
    row = lines[line - 1][:max(0, column - 1)]
    first = line
    while first > 1 and _continues(lines[first - 1] if first < line else row):
        first -= 1
    before = "\n".join([*lines[first - 1:line - 1], row])
    word = re.search(r"[A-Za-z_][\w.]*$", row)
    typed = word.group() if word else ""
    tokens = _tokens(before[:len(before) - len(typed)])
    return _decide(tokens, typed, column - len(typed))


def _continues(row: str) -> bool:
    """Whether a line goes on the statement above: indented, or closing its bracket (as the
    TextMate grammar reads a bracket left open: docs/editors.md)."""
    return row[:1] in (" ", "\t", ")", "]") and not _STARTS.match(row)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) of the statement being written: from the last line break outside
    brackets on."""
    out: list[tuple[str, str]] = []
    depth = 0
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind is None or kind == "comment":
            continue
        value = m.group()
        if kind == "nl":
            if depth == 0:
                out = []
            continue
        depth += value in "([" if kind == "op" else 0
        depth -= value in ")]" and depth > 0 if kind == "op" else 0
        out.append((kind, value))
    return out


def _decide(tokens: list[tuple[str, str]], word: str, start: int) -> Slot:
    at = {"word": word, "start": start}
    if not tokens:
        return Slot("keyword", **at)
    keyword = tokens[0][1]
    if keyword not in KEYWORDS:
        return Slot("nothing", **at)
    frames, top_level = _walk(keyword, tokens[1:])
    if frames:
        return _in_frame(frames[-1], keyword, at)
    return _at_top(keyword, top_level, at)


def _walk(keyword: str, tokens: list[tuple[str, str]]) -> tuple[list[_Frame], list[str]]:
    """The brackets still open, and the statement's tokens outside brackets."""
    frames: list[_Frame] = []
    top: list[str] = []
    prev = ("", "")
    for kind, value in tokens:
        frame = frames[-1] if frames else None
        if value == "(" and kind == "op" and prev[1] in DISTRIBUTIONS and frame is not None:
            frames.append(_Frame(False, frame.role, frame.name, frame.key))  # a search space
        elif value == "(" and kind == "op":
            frames.append(_Frame(True, _role(keyword, frame, prev[1]), prev[1],
                                 nested=frame is not None))
        elif value == "[" and kind == "op":
            frames.append(_Frame(False, *((frame.role, frame.name, frame.key) if frame else ())))
        elif value in ")]" and kind == "op":
            if frames:
                frames.pop()
        elif frame is not None and value == ",":
            frame.position += not frame.keyed
            frame.key, frame.keyed = ("", False) if frame.call else (frame.key, False)
        elif frame is not None and value == "=" and prev[0] == "name" and frame.call:
            frame.key, frame.keyed = prev[1], True
            frame.given.append(prev[1])
        elif frame is None:
            top.append(value)
        prev = (kind, value)
    return frames, top


def _role(keyword: str, parent: _Frame | None, callee: str) -> str:
    """The role a call is read in: the statement's, or that of the key it is the value of."""
    if parent is None:
        return ROLES.get(keyword, "")
    return NESTED_ROLE.get(parent.key, "") if parent.key else parent.role


def _in_frame(frame: _Frame, keyword: str, at: dict) -> Slot:
    if not frame.key and not frame.call:
        return Slot("nothing", **at)  # an expert count, or a list that is no argument
    if frame.key:
        key = frame.key
        return Slot("value", frame.role, frame.name, key, REFERENCE_KEYS.get(key, ()),
                    key in COLUMN_KEYS, NESTED_ROLE.get(key, ""), **at)
    first = frame.position == 0 and not frame.nested
    kinds = INPUT_KINDS.get(frame.role, ()) if first or frame.role == "input" else ()
    return Slot("argument", frame.role, frame.name, kinds=kinds, given=tuple(frame.given),
                position=frame.position, **at)


def _at_top(keyword: str, top: list[str], at: dict) -> Slot:
    """Outside brackets: after the keyword, its name, `=`, `:`, `over`, `from`, `->`."""
    role = ROLES.get(keyword, "")
    last = top[-1] if top else ""
    if keyword == "train":
        if last == "=":
            return Slot("value", "train", "train", top[-2] if len(top) > 1 else "", **at)
        keys = [top[i - 1] for i, v in enumerate(top) if v == "=" and i]
        return Slot("argument", "train", "train", given=tuple(keys), **at)
    if keyword in ("data", "weighting"):
        return Slot("kind", role, **at) if not top else Slot("nothing", **at)
    if keyword == "transfer":
        if last in ("", "->"):
            return Slot("name", kinds=CHAIN, **at)
        return Slot("kind", role, **at) if last == "=" else Slot("connective", words=("->", "="),
                                                                   **at)
    if keyword == "label":  # a derived label reads labels and columns; `label` names columns
        return Slot("name", kinds=("label",) if "=" in top else (), columns=True, **at)
    if keyword == "model" or len(top) < 1:
        return Slot("nothing", **at)
    return _after_name(keyword, role, top, at)


def _after_name(keyword: str, role: str, top: list[str], at: dict) -> Slot:
    """A named statement after its name: its kind, then `over` / `from` and names."""
    last = top[-1]
    if last in ("=", ":") and top.count(last) == 1 and not _called(top):
        return Slot("kind", role, **at)
    if keyword == "gate":
        return Slot("name", kinds=OVER, **at) if "over" in top else \
            Slot("connective", words=("over",), **at)
    if keyword == "task" and ("from" in top):
        return Slot("name", kinds=FROM, **at)
    if keyword == "task" and _called(top) and top[-1] not in ("=",) and "=" not in top:
        return Slot("connective", words=("from", "="), **at)
    if keyword == "task" and "=" in top:
        return Slot("name", kinds=CHAIN, **at)
    return Slot("nothing", **at)


def _called(top: list[str]) -> bool:
    """Whether the statement's call has been written (its brackets closed, or a bare kind)."""
    marks = [i for i, v in enumerate(top) if v in ("=", ":")]
    return bool(marks) and marks[0] + 1 < len(top)

