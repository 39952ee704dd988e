"""The TextMate grammar of `.mtl` files, generated from the language's own facts.

The statement keywords and operators come from the parser's grammar (grammar/mtl.lark), the
kind names, parameter names and enumerated values from the registry, and the search-space
functions from the language's list of them (docs/tuning.md). Generating the grammar, rather
than keeping it by hand, means a new kind, parameter or keyword is coloured as soon as the
language knows it; `--check` (run by tests/test_editor_vscode.py) fails when the committed
file is stale. Nothing here imports torch. See docs/editors.md.

    python -m mtl_dsl.tools.editor.textmate            # rewrite the committed grammar
    python -m mtl_dsl.tools.editor.textmate --check    # exit 1 if it differs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from mtl_dsl.language import registry as reg
from mtl_dsl.language.parser import parser
from mtl_dsl.language.space import DISTRIBUTIONS

SCOPE = "source.mtl"
GRAMMAR = Path(__file__).resolve().parents[3] / "editors" / "vscode" / "syntaxes" / \
    "mtl.tmLanguage.json"
NAME = r"[A-Za-z_][A-Za-z0-9_]*"  # grammar/mtl.lark's NAME
BEFORE = r"(?<![\w.])"  # a word starts here: not inside a name or after a dot
AFTER = r"(?![\w.])"  # and ends here
SPACE_TIE = "name"  # the keyword that ties search spaces into one dimension (docs/tuning.md)

# What the name after each statement keyword declares, as a scope (None: no name declared).
# A keyword the grammar gains without an entry here is an error, so it cannot be forgotten.
DECLARES: dict[str, str | None] = {
    "model": "entity.name.type.model",
    "data": None,
    "feature": "entity.name.variable.feature",
    "label": "entity.name.variable.label",
    "input": "entity.name.variable.input",
    "experts": "entity.name.type.experts",
    "gate": "entity.name.type.gate",
    "tower": "entity.name.type.tower",
    "task": "entity.name.function.task",
    "transfer": None,
    "extract": "entity.name.namespace.extract",
    "weighting": None,
    "train": None,
}

# The grammar's symbols, by what they are; a new one without an entry is an error.
OPERATORS: dict[str, str] = {
    "=": "keyword.operator.assignment",
    ":": "keyword.operator.type.annotation",
    "->": "keyword.operator.arrow",
    "+": "keyword.operator.arithmetic",
    "-": "keyword.operator.arithmetic",
    "*": "keyword.operator.arithmetic",
    "&": "keyword.operator.logical",
    "|": "keyword.operator.logical",
    "!": "keyword.operator.logical",
    "CMP": "keyword.operator.comparison",  # the grammar's comparison terminal
}
PUNCTUATION = {"(", ")", "[", "]", ",", "."}


@dataclass(frozen=True)
class Facts:
    """What the grammar is made of; each field is sorted so the output is stable."""

    statements: tuple[str, ...]  # keywords that start a statement
    connectives: tuple[str, ...]  # keywords inside a statement (over, from)
    operators: dict[str, str]  # regex -> scope
    kinds: tuple[str, ...]  # every callable kind name, search-space functions included
    params: dict[str, tuple[str, ...]]  # parameter name -> its enumerated values


def _terminals() -> tuple[list[str], dict[str, str]]:
    """The parser's keyword strings and its operator regexes (regex -> scope)."""
    words: list[str] = []
    operators: dict[str, str] = {}
    for term in parser().terminals:
        kind, value = type(term.pattern).__name__, term.pattern.value
        if kind == "PatternStr" and re.fullmatch(NAME, value):
            words.append(value)
        elif kind == "PatternStr" and value in OPERATORS:
            operators[re.escape(value)] = OPERATORS[value]
        elif term.name in OPERATORS:
            operators[value] = OPERATORS[term.name]
        elif kind == "PatternStr" and value not in PUNCTUATION:
            raise KeyError(f"grammar symbol {value!r} has no scope in textmate.OPERATORS")
    return words, operators


def _statement_keywords() -> set[str]:
    """The first terminal of every statement rule: what `_stmt` expands to."""
    rules = parser().rules
    statements = {r.expansion[0].name for r in rules if r.origin.name == "_stmt"}
    firsts = {r.expansion[0].name for r in rules if r.origin.name in statements}
    return {t.pattern.value for t in parser().terminals if t.name in firsts}


def _walk(annotation: object) -> typing.Iterator[object]:
    """Every type inside an annotation: unions, tuples, Literal and Annotated unwrapped."""
    yield annotation
    if typing.get_origin(annotation) is not typing.Literal:
        for arg in typing.get_args(annotation):
            yield from _walk(arg)


def _models() -> list[type[BaseModel]]:
    """Every parameter model a spec can write: the registry's, and those nested in them
    (a template's `expert=mlp(...)`, a source's `join=[csv(...)]`)."""
    todo = [kind.params for role in reg.REGISTRY.values() for kind in role.values()]
    seen: list[type[BaseModel]] = []
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        todo += [t for f in model.model_fields.values() for t in _walk(f.annotation)
                 if isinstance(t, type) and issubclass(t, BaseModel)]
    return seen


def _values(annotation: object) -> set[str]:
    """The enumerated values a parameter takes as names: Literal strings, true/false."""
    found: set[str] = set()
    for t in _walk(annotation):
        if typing.get_origin(t) is typing.Literal:
            found |= {a for a in typing.get_args(t) if isinstance(a, str) and re.fullmatch(NAME, a)}
        elif t is bool:
            found |= {"true", "false"}
    return found


def language_facts() -> Facts:
    """Collect the facts from the parser and the registry."""
    words, operators = _terminals()
    statements = _statement_keywords()
    missing = statements - set(DECLARES)
    if missing:
        raise KeyError(f"statement keywords without an entry in textmate.DECLARES: {missing}")
    params: dict[str, set[str]] = {SPACE_TIE: set()}
    for model in _models():
        for name, field in model.model_fields.items():
            params.setdefault(name, set()).update(_values(field.annotation))
    kinds = {k for role, entries in reg.REGISTRY.items() for k in entries if k not in statements}
    return Facts(tuple(sorted(statements)), tuple(sorted(set(words) - statements)),
                 operators, tuple(sorted(kinds | set(DISTRIBUTIONS))),
                 {k: tuple(sorted(v)) for k, v in sorted(params.items())})


def _words(names: typing.Iterable[str]) -> str:
    """An alternation of whole names, longest first so none shadows a longer one."""
    return "(?:" + "|".join(re.escape(n) for n in sorted(names, key=lambda n: (-len(n), n))) + ")"


def _scoped(scope: str) -> str:
    return f"{scope}.mtl"


def _captures(*scopes: str) -> dict[str, dict]:
    """TextMate's captures: group number -> scope."""
    return {str(i): {"name": _scoped(scope)} for i, scope in enumerate(scopes, 1)}


def _whole(scope: str) -> dict[str, dict]:
    """The scope of a whole begin or end match."""
    return {"0": {"name": _scoped(scope)}}


def _kwarg_rules(facts: Facts) -> list[dict]:
    """`name=` of a known parameter; where the parameter takes enumerated values, the value
    right after it as a constant (`act=relu`), so a kind's name elsewhere stays a kind."""
    key = ("variable.parameter", "keyword.operator.assignment")
    rules = [{"match": f"{BEFORE}({_words([param])})\\s*(=)(?!=)\\s*"
                       f"(?:({_words(values)}){AFTER}(?!\\s*\\())?",
              "captures": _captures(*key, "constant.language")}
             for param, values in facts.params.items() if values]
    plain = [param for param, values in facts.params.items() if not values]
    rules.append({"match": f"{BEFORE}({_words(plain)})\\s*(=)(?!=)", "captures": _captures(*key)})
    return rules


def _literal_rules() -> dict[str, dict]:
    """Comments, strings (one line; the escapes of docs/language.md, "Lexical rules") and
    numbers (grammar/mtl.lark's SIGNED_NUMBER; a sign right after a value is an operator)."""
    exponent = r"(?:[eE][-+]?\d+)"
    sign = r"(?<![\w.)\]])[-+]?"
    return {
        "comment": {"match": r"(#).*$", "name": _scoped("comment.line.number-sign"),
                    "captures": _captures("punctuation.definition.comment")},
        "string": {"begin": '"', "end": '"|$', "name": _scoped("string.quoted.double"),
                   "beginCaptures": _whole("punctuation.definition.string.begin"),
                   "endCaptures": _whole("punctuation.definition.string.end"),
                   "patterns": [
                       {"match": r'\\(?:["\\ntr]|u[0-9A-Fa-f]{4})',
                        "name": _scoped("constant.character.escape")},
                       {"match": r"\\.?", "name": _scoped("invalid.illegal.escape")},
                       {"match": r"[\x00-\x1f\x7f]",
                        "name": _scoped("invalid.illegal.character")}]},
        "number": {"patterns": [
            {"match": f"{sign}(?:\\d+\\.\\d*{exponent}?|\\.\\d+{exponent}?|\\d+{exponent}){AFTER}",
             "name": _scoped("constant.numeric.float")},
            {"match": f"{sign}\\d+{AFTER}", "name": _scoped("constant.numeric.integer")}]},
    }


def _value_rules(facts: Facts) -> dict[str, dict]:
    """The repository's rules for what may appear anywhere in a statement."""
    kinds = _words(facts.kinds)
    # longest first, so that `->` and `==` are not read as `-` and `=`
    operators = sorted(facts.operators.items(), key=lambda o: -len(o[0]))
    return {
        **_literal_rules(),
        "kwarg": {"patterns": _kwarg_rules(facts)},
        "kind": {"patterns": [
            {"match": f"{BEFORE}{kinds}(?=\\s*\\()", "name": _scoped("support.function")},
            {"match": f"{BEFORE}{kinds}{AFTER}", "name": _scoped("support.function")}]},
        "operator": {"patterns": [{"match": regex, "name": _scoped(scope)}
                                  for regex, scope in operators]},
        "punctuation": {"patterns": [
            {"match": ",", "name": _scoped("punctuation.separator.comma")},
            {"match": r"\.", "name": _scoped("punctuation.accessor.dot")}]},
        "values": {"patterns": [{"include": f"#{r}"} for r in (
            "comment", "string", "parens", "brackets", "number", "kwarg", "kind", "operator",
            "punctuation")]},
    }


def _next_statement(facts: Facts) -> str:
    """A lookahead for a line that starts a statement (`keyword NAME`, not `keyword=`)."""
    return f"(?=^\\s*{_words(facts.statements)}\\s+[A-Za-z_])"


def _bracket_rules(facts: Facts) -> dict[str, dict]:
    """Parentheses and brackets span lines (a wrapped call); an unclosed one ends where the
    next statement starts, so one missing `)` does not discolour the rest of the file."""
    rules = {}
    for what, (opening, closing) in {"parens": ("(", ")"), "brackets": ("[", "]")}.items():
        rules[what] = {
            "begin": re.escape(opening), "end": f"{re.escape(closing)}|{_next_statement(facts)}",
            "name": _scoped(f"meta.{what}"),
            "beginCaptures": _whole(f"punctuation.section.{what}.begin"),
            "endCaptures": _whole(f"punctuation.section.{what}.end"),
            "patterns": [{"include": "#values"}]}
    return rules


def _statement(facts: Facts, word: str, head: str, scopes: tuple[str, ...],
               patterns: list[dict]) -> dict:
    """A statement from its keyword to the end of its last line (brackets wrap lines)."""
    return {"begin": head, "end": f"$|{_next_statement(facts)}",
            "name": _scoped(f"meta.statement.{word}"), "beginCaptures": _captures(*scopes),
            "patterns": patterns}


def _statement_rules(facts: Facts) -> list[dict]:
    """One rule per statement keyword; its name after the keyword gets DECLARES' scope."""
    keyword = "keyword.other.statement"
    inner = [{"match": BEFORE + _words(facts.connectives) + AFTER,
              "name": _scoped("keyword.other.connective")}, {"include": "#values"}]
    rules = []
    for word in facts.statements:
        declared, head = DECLARES[word], f"^\\s*({re.escape(word)}){AFTER}"
        if word == "label":  # one derived label `label NAME = EXPR`, or a list of labels
            rules.append(_statement(facts, word, f"{head}\\s*({NAME})(?=\\s*=(?!=))",
                                    (keyword, declared), inner))
            names = {"match": BEFORE + NAME + AFTER, "name": _scoped(declared)}
            rules.append(_statement(facts, word, head, (keyword,), [names, *inner]))
        elif word == "transfer":  # the chain names tasks, which are not parameters
            chain = {"match": f"{BEFORE}{NAME}(?=\\s*(?:->|=(?!=)))"}
            rules.append(_statement(facts, word, head, (keyword,), [chain, *inner]))
        elif declared:
            rules.append(_statement(facts, word, f"{head}(?:\\s*({NAME}))?", (keyword, declared),
                                    inner))
        else:
            rules.append(_statement(facts, word, head, (keyword,), inner))
    return rules


def grammar(facts: Facts) -> dict:
    """The TextMate grammar as a JSON-ready dict."""
    return {
        "information_for_contributors": [
            "Generated by `python -m mtl_dsl.tools.editor.textmate` from grammar/mtl.lark and "
            "the registry: do not edit by hand (docs/editors.md)."],
        "name": "MTL",
        "scopeName": SCOPE,
        "fileTypes": ["mtl"],
        "patterns": [{"include": "#comment"}, {"include": "#statement"}, {"include": "#values"}],
        "repository": {"statement": {"patterns": _statement_rules(facts)},
                       **_value_rules(facts), **_bracket_rules(facts)},
    }


def render() -> str:
    """The grammar file's text, as committed."""
    return json.dumps(grammar(language_facts()), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the grammar, or with --check report whether the committed one is current."""
    args = argparse.ArgumentParser(prog="python -m mtl_dsl.tools.editor.textmate",
                                   description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args.add_argument("--output", type=Path, default=GRAMMAR, help=f"default: {GRAMMAR}")
    opts = args.parse_args(argv)
    text = render()
    if opts.check:
        current = opts.output.read_text(encoding="utf-8") if opts.output.is_file() else None
        if current != text:
            print(f"{opts.output} is stale: run python -m mtl_dsl.tools.editor.textmate",
                  file=sys.stderr)
            return 1
        return 0
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(text, encoding="utf-8")
    print(f"wrote {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
