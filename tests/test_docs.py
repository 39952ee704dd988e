"""The project's documentation keeps up with the registry, the diagnostics and itself.

Every kind the registry knows (and every parameter it takes) is documented, every diagnostic
code the golden bad specs produce is listed, every relative link resolves, the README
stays a front page, every spec example checks, and `mtl --help` reads as the workflow.

The spec examples are found by their fence's tag: a ```mtl block is a whole spec, a
```mtl fragment block a few statements, checked inside CONTEXT below (which names the
features, labels, towers and tasks fragments read). Anything else (```text: a diagnostic,
a diagram) is no spec, and a test makes sure no spec hides under another tag.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT
from mtl_dsl.language.check import check_text
from mtl_dsl.language.diagnostics import MtlError, Source, errors, render_all
from mtl_dsl.language.parser import parse
from mtl_dsl.language.registry import REGISTRY, WEIGHTINGS

DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
OUTSIDE = "/".join(("..", "shared"))  # a folder beside the clone; in parts: not named here
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"\b(?:error|warning)\[([EW]\d{3})\]")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _named(text: str, word: str) -> bool:
    """`word` appears in code spans as a name: `word`, `word(...)` or `word=` ..."""
    return re.search(r"`" + re.escape(word) + r"(?![\w.])", text) is not None


def _page_for(role: str) -> Path:
    return DOCS / ("weighting.md" if role == "weighting" else "language.md")


KINDS = [(role, name, kind.params) for role, kinds in REGISTRY.items()
         for name, kind in kinds.items()]


@pytest.mark.parametrize("role,name,params", KINDS, ids=[f"{r}:{n}" for r, n, _ in KINDS])
def test_every_registry_kind_and_parameter_is_documented(role, name, params):
    text = _text(_page_for(role))
    assert _named(text, name), f"{role} kind '{name}' is not documented in {_page_for(role).name}"
    missing = [p for p in params.model_fields if not _named(text, p)]
    assert not missing, f"{role} kind '{name}': parameters {missing} not documented"


def test_every_weighting_method_is_in_the_weighting_page():
    text = _text(DOCS / "weighting.md")
    rows = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
    assert set(WEIGHTINGS) <= rows, f"no table row for {sorted(set(WEIGHTINGS) - rows)}"
    assert len(WEIGHTINGS) == 30


def test_every_golden_diagnostic_code_is_listed():
    found = {c for f in (ROOT / "tests" / "bad").glob("*.expected") for c in CODE.findall(_text(f))}
    assert found, "the golden bad specs produce no codes"
    listed = set(re.findall(r"^\| ([EW]\d{3}) \|", _text(DOCS / "language.md"), flags=re.M))
    assert found <= listed, f"codes not in docs/language.md: {sorted(found - listed)}"


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces as '-',
    a repeated heading suffixed -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for line in re.sub(r"```.*?```", "", _text(path), flags=re.S).splitlines():
        m = re.match(r"#+ (.*)", line)
        if not m or path.suffix != ".md":
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_point_to_existing_files(page):
    broken = []
    in_code = re.sub(r"```.*?```", "", _text(page), flags=re.S)
    for target in LINK.findall(in_code):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists() or (anchor and path.suffix == ".md"
                                 and anchor not in _anchors(path)):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_readme_is_a_front_page():
    text = _text(README)
    assert len(text.splitlines()) <= 250
    assert re.search(r"^## Quick start$", text, flags=re.M)
    assert "python3 -m pytest\n" in text  # CI runs the README's test command
    assert "docs/mmoe.svg" in text and (DOCS / "mmoe.svg").exists()


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_docs_stand_alone(page):
    text = _text(page)
    assert "ARCHITECTURES.md" not in text and OUTSIDE not in text


# --------------------------------------------------------------------------
# `mtl --help`: the first page a user reads (tools/cli/app.py registers every command)
# --------------------------------------------------------------------------

WORKFLOW = ["check", "render", "compile", "tune", "compare", "runs", "predict", "eval", "export",
            "fmt", "lsp", "studio"]


def _help_output(columns: int) -> str:
    from typer.testing import CliRunner

    from mtl_dsl.tools.cli.main import app

    done = CliRunner().invoke(app, ["--help"], env={"COLUMNS": str(columns), "NO_COLOR": "1"})
    assert done.exit_code == 0, done.output
    return done.output


def _commands_panel(output: str) -> list[str]:
    """The rows of the Commands box, without its frame."""
    rows = output.split("Commands")[1].splitlines()[1:]
    rows = rows[:next(i for i, r in enumerate(rows) if r.startswith("╰"))]
    return [r.removeprefix("│ ").rstrip().removesuffix("│").rstrip() for r in rows]


def test_mtl_help_lists_the_commands_in_the_order_of_the_workflow():
    import typer

    from mtl_dsl.tools.cli.main import app

    assert list(typer.main.get_command(app).commands) == WORKFLOW
    shown = [row.split()[0] for row in _commands_panel(_help_output(200))
             if not row.startswith(" ") and row]
    assert shown == WORKFLOW


def test_no_help_text_breaks_a_sentence_in_two():
    """Each paragraph of a command's help reaches click as one line, so the terminal alone
    wraps it: on a wide terminal every command's line is one row of `mtl --help`."""
    import typer

    from mtl_dsl.tools.cli.main import app

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        assert cmd.help and "\n" not in cmd.help.replace("\n\n", ""), (name, cmd.help)
        for param in cmd.params:
            assert "\n" not in (getattr(param, "help", None) or ""), (name, param.name)
    rows = _commands_panel(_help_output(250))
    assert len(rows) == len(WORKFLOW), rows  # no continuation rows
    assert any(len(r) > 120 for r in rows)  # a long one among them, not wrapped


# --------------------------------------------------------------------------
# Spec examples: ```mtl (a whole spec) and ```mtl fragment (checked inside CONTEXT)
# --------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent> *)```(?P<tag>[^\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.S | re.M)
# What fragments read, one statement a line; a fragment's statement replaces the one here
# that declares the same name (or the same once-only statement: model, data, weighting, train).
CONTEXT = """\
model docs "the context the docs' fragments are checked in"
data csv("rows.csv", split=[0.8, 0.1, 0.1])
feature x = dense(8)
label click
label purchase
label daction
label y1
label y2
label ctcvr_label = click & purchase
label rich = income == "50000+."
experts bottom = mlp(x, 16)
tower t_ctr = mlp(bottom, 8)
tower t_cvr = mlp(bottom, 8)
tower t_dar = mlp(bottom, 8)
tower t_buy_d = mlp(bottom, 8)
tower t_buy_o = mlp(bottom, 8)
tower t_a = mlp(bottom, 8)
tower t_b = mlp(bottom, 8)
tower t_income = mlp(bottom, 8)
task ctr: binary(label=click) from t_ctr
task cvr: binary(label=purchase, where=click) from t_cvr
task dar: binary(label=daction, where=click) from t_dar
task buy_d: binary(label=purchase, where=daction) from t_buy_d
task buy_o: binary(label=purchase) from t_buy_o
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
task income: binary(label=rich) from t_income
"""
ONCE = ("model", "data", "weighting", "train")


def _blocks(tag: str) -> list[tuple[str, str]]:
    """(page:line, text) of every fenced block whose tag is `tag`, its indent removed."""
    found = []
    for page in PAGES:
        text = _text(page)
        for m in FENCE.finditer(text):
            if m["tag"].strip() == tag:
                line = text.count("\n", 0, m.start()) + 1
                body = re.sub(rf"^{m['indent']}", "", m["body"], flags=re.M)
                found.append((f"{page.relative_to(ROOT)}:{line}", body))
    return found


def _declares(statement) -> set[str]:
    if statement.keyword in ONCE:
        return {statement.keyword}
    return {statement.name} if statement.name else {r.name for r in statement.refs}


def in_context(fragment: str) -> str:
    """CONTEXT without the statements the fragment declares again, then the fragment."""
    declared = set().union(*map(_declares, parse(Source(fragment))))
    lines = CONTEXT.splitlines()
    kept = [lines[st.span.line - 1] for st in parse(Source(CONTEXT))
            if not _declares(st) & declared]
    return "\n".join(kept) + "\n" + fragment


def _assert_checks(text: str, where: str) -> None:
    checked = check_text(text, where)
    assert checked.ok, render_all(errors(checked.diagnostics), checked.source)


SPEC_BLOCKS, FRAGMENTS = _blocks("mtl"), _blocks("mtl fragment")


@pytest.mark.parametrize("where,text", SPEC_BLOCKS, ids=[w for w, _ in SPEC_BLOCKS])
def test_every_spec_in_the_docs_checks(where, text):
    _assert_checks(text, where)


@pytest.mark.parametrize("where,text", FRAGMENTS, ids=[w for w, _ in FRAGMENTS])
def test_every_fragment_in_the_docs_checks_in_a_spec(where, text):
    _assert_checks(in_context(text), where)


def test_the_context_checks_alone_and_a_bad_fragment_fails_in_it():
    _assert_checks(CONTEXT, "CONTEXT")
    assert "task ctr: binary(label=click) from t_ctr" not in in_context(
        "task ctr: binary(label=click, weight=2) from t_dar")
    with pytest.raises(AssertionError, match="E201"):
        _assert_checks(in_context("tower t = mlp(nowhere, 8)"), "bad")


def _parses(text: str) -> bool:
    try:
        return bool(parse(Source(text)))
    except MtlError:
        return False


def test_no_spec_example_hides_under_another_tag():
    """A block that parses as statements is a spec example: tag it ```mtl (a whole spec) or
    ```mtl fragment. Diagnostics and diagrams do not parse."""
    tags = {m["tag"].strip() for page in PAGES for m in FENCE.finditer(_text(page))}
    hidden = [where for tag in tags - {"mtl", "mtl fragment"} for where, text in _blocks(tag)
              if _parses(text)]
    assert not hidden, f"spec examples not tagged mtl: {hidden}"
    assert len(SPEC_BLOCKS) >= 1 and len(FRAGMENTS) >= 7  # the README's tour, and more
