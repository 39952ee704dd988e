"""The layout's rules, read from the source: which stage may import which, no import cycles
(function-level imports count), modules of a readable size, and citations that stay inside the
repository. See docs/internals.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mtl_dsl"
STAGES = ("language", "model", "data", "training", "tools")
# stage -> what it may import from the package (besides itself); None: anything.
ALLOWED = {
    "language": set(),
    "data": {"language"},
    "model": {"language"},
    "training": {"language", "data", "model"},
    "tools": None,
    "": None,  # the package's own api / __init__ / __main__
}
FORBIDDEN_THIRD_PARTY = {"language": {"torch", "numpy"}}
MAX_LINES = 450
LONG_TABLES: set[str] = set()  # modules allowed over MAX_LINES: none


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(current: str, is_package: bool, level: int, target: str | None) -> str:
    base = current.split(".")
    base = base if is_package else base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module this one imports, at any depth of the code (inside functions too)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module if node.level == 0 else \
                _resolve(name, is_package, node.level, node.module)
            found.add(target)
            for alias in node.names:  # `from . import x` imports the submodule x
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")
    return found


def import_graph() -> nx.DiGraph:
    mods = modules()
    known = set(mods)
    g = nx.DiGraph()
    g.add_nodes_from(known)
    for name, path in mods.items():
        for target in imports_of(name, path, known):
            if target in known and target != name:
                g.add_edge(name, target)
    return g


def stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else ""


def third_party(module: str, path: Path) -> set[str]:
    return {m.split(".")[0] for m in imports_of(module, path, set(modules()))}


def test_the_graph_sees_function_level_imports():
    # training.loop imports the compiler inside a function so that `import` stays light
    g = import_graph()
    assert any(stage_of(b) == "model" for b in g.successors("mtl_dsl.training.loop"))


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], f"{len(cycles)} import cycle(s), e.g. {' -> '.join(cycles[0])}"


@pytest.mark.parametrize("stage", [s for s in ALLOWED if ALLOWED[s] is not None])
def test_imports_flow_one_way(stage):
    g = import_graph()
    wrong = [(a, b) for a, b in g.edges
             if stage_of(a) == stage and stage_of(b) != stage
             and (stage_of(b) == "" or stage_of(b) not in ALLOWED[stage])]
    assert wrong == [], f"{stage} must not import {wrong}"


def test_the_language_imports_neither_torch_nor_numpy():
    bad = {name: third_party(name, path) & FORBIDDEN_THIRD_PARTY["language"]
           for name, path in modules().items() if stage_of(name) == "language"}
    assert {k: v for k, v in bad.items() if v} == {}


def test_modules_stay_readable():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert set(long) <= LONG_TABLES, f"modules over {MAX_LINES} lines: {long}"


CITED = re.compile(r"\b(docs/[\w./-]+\.md)\b")


def _code_files() -> list[Path]:
    return [*PACKAGE.rglob("*.py"), ROOT / "cli.py", *ROOT.glob("grammar/*")]


def test_code_cites_only_files_in_the_repository():
    cited = {(str(p.relative_to(ROOT)), m) for p in _code_files() if p.is_file()
             for m in CITED.findall(p.read_text(encoding="utf-8"))}
    missing = sorted((f, m) for f, m in cited if not (ROOT / m).is_file())
    assert missing == []
    outside = [str(p.relative_to(ROOT)) for p in _code_files() if p.is_file()
               and re.search(r"ARCHITECTURES\.md|\.\./shared", p.read_text(encoding="utf-8"))]
    assert outside == []


IMPLEMENTATION_STRING = re.compile(r"[\"']mtl_dsl(\.\w+)+:\w+[\"']")


def test_no_implementation_is_named_by_a_string():
    """"pkg.module:attr" strings resolved by importlib hide an import from the rules above:
    each stage owns a table of its implementations keyed by kind name instead."""
    named = {str(p.relative_to(ROOT)): m.group(0) for p in _code_files() if p.is_file()
             for m in [IMPLEMENTATION_STRING.search(p.read_text(encoding="utf-8"))] if m}
    assert named == {}


def test_code_cites_docs_not_issue_numbers():
    cited = {str(p.relative_to(ROOT)) for p in [*_code_files(), *ROOT.glob("docs/*.md"),
                                                ROOT / "README.md"]
             if p.is_file() and re.search(r"\bissues?[ -]#?\d+", p.read_text(encoding="utf-8"),
                                          re.IGNORECASE)}
    assert cited == set()


def _private_uses(path: Path) -> list[str]:
    """Another library's private names a module reaches: an import of a module or name with a
    leading underscore, or an underscore attribute of an imported module (`torch._dynamo`)."""
    tree, found, modules = ast.parse(path.read_text(encoding="utf-8")), [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] not in ("mtl_dsl", "__future__"):
            names = [*node.module.split("."), *(a.name for a in node.names)]
            found += [f"{node.lineno}: from {node.module}" for n in names if n.startswith("_")]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                modules.add(alias.asname or alias.name.split(".")[0])
                if any(part.startswith("_") for part in alias.name.split(".")):
                    found.append(f"{node.lineno}: import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_private_name_of_another_library_is_used():
    used = {name: found for name, path in modules().items() if (found := _private_uses(path))}
    assert used == {}


def test_the_private_name_check_can_fail(tmp_path: Path):
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\nfrom torch.optim.optimizer import _get_fused\n"
                     "x = torch._dynamo\n")
    assert len(_private_uses(probe)) == 2
