"""The model's own source, copied into the standalone file of `mtl export -o model.py`.

The block modules (`BLOCK_MODULES`) import torch and the standard library only, and take
plain constructor arguments, so their code runs outside this package as it is. Given the
classes and functions a model uses, `copy_of` finds every top-level definition they read,
transitively: the names in a definition's code, resolved through its module's own
definitions and its `from .x import y` imports. It returns their source verbatim (cut from
`inspect.getsource` of the module), modules in import order and definitions in source
order, so every name is defined before a class body or a constant reads it; the
intra-package imports are dropped and the others the copied code reads are returned for
the file's header. Anything it cannot copy faithfully (a definition reading the language
stage, an aliased or whole-module sibling import, two definitions of one name) is an
error, not a guess. docs/export.md describes the file.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from functools import cache
from graphlib import TopologicalSorter
from types import ModuleType

from ...model import blocks, gates, interactions, lookup, pepnet, relations, sequences

BLOCK_MODULES: tuple[ModuleType, ...] = (lookup, gates, blocks, interactions, pepnet,
                                         relations, sequences)
PACKAGE = "mtl_dsl.model"


class SourceError(RuntimeError):
    """A block module the standalone file cannot copy as it is (a rule of docs/export.md
    broken in the model's code, not a user's mistake)."""


@dataclass(frozen=True)
class Definition:
    """One top-level class, function or constant: its source and the names its code reads."""

    name: str
    text: str
    reads: frozenset[str]


@dataclass(frozen=True)
class ModuleSource:
    """A block module read for copying."""

    name: str
    definitions: dict[str, Definition]  # in source order
    siblings: dict[str, str]  # a name imported from another block module -> that module
    imports: dict[str, str]  # a name bound by any other import -> its import line


@dataclass(frozen=True)
class Copy:
    """What the standalone file takes from the model: the import lines the copied code
    needs, and each module's copied definitions (module name, their sources)."""

    imports: tuple[str, ...]
    sections: tuple[tuple[str, tuple[str, ...]], ...]


@cache
def module_source(name: str) -> ModuleSource:
    """A block module's definitions, sibling imports and other imports."""
    module = _block_module(name)
    text = inspect.getsource(module)
    lines = text.splitlines()
    definitions: dict[str, Definition] = {}
    siblings: dict[str, str] = {}
    imports: dict[str, str] = {}
    for i, node in enumerate(ast.parse(text).body):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            siblings |= _siblings(name, node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imports |= _imports(node)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)):
            defined = _defined(name, node)
            start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            reads = frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
            definitions[defined] = Definition(
                defined, "\n".join(lines[start - 1:node.end_lineno]), reads)
        elif not (i == 0 and isinstance(node, ast.Expr)):  # the module's docstring
            raise SourceError(f"{name}, line {node.lineno}: only imports, classes, functions "
                              "and constants can be copied into the standalone file")
    return ModuleSource(name, definitions, siblings, imports)


def _block_module(name: str) -> ModuleType:
    for module in BLOCK_MODULES:
        if module.__name__ == name:
            return module
    raise SourceError(f"{name} is not a block module: the standalone file copies only "
                      f"{', '.join(m.__name__ for m in BLOCK_MODULES)}")


def _siblings(name: str, node: ast.ImportFrom) -> dict[str, str]:
    """`from .gates import mix` -> {'mix': 'mtl_dsl.model.gates'}."""
    if node.level != 1 or node.module is None or any(a.asname for a in node.names):
        raise SourceError(f"{name}, line {node.lineno}: the standalone file copies names, "
                          "so a block module imports siblings as `from .module import name`")
    return {a.name: f"{PACKAGE}.{node.module}" for a in node.names}


def _imports(node: ast.Import | ast.ImportFrom) -> dict[str, str]:
    """Bound name -> the import line that binds it (`from __future__` binds nothing)."""
    if isinstance(node, ast.ImportFrom):
        if node.module == "__future__":
            return {}
        return {a.asname or a.name: f"from {node.module} import {a.name}" +
                (f" as {a.asname}" if a.asname else "") for a in node.names}
    return {a.asname or a.name.split(".")[0]: f"import {a.name}" +
            (f" as {a.asname}" if a.asname else "") for a in node.names}


def _defined(module: str, node: ast.stmt) -> str:
    """The one name a top-level class, function or constant defines."""
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return node.name
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    if len(targets) != 1 or not isinstance(targets[0], ast.Name):
        raise SourceError(f"{module}, line {node.lineno}: a constant the standalone file "
                          "copies binds one name")
    return targets[0].id


def copy_of(roots: list[object]) -> Copy:
    """The definitions that the classes and functions `roots` need, with their imports."""
    wanted = {(_block_module(r.__module__).__name__, r.__name__) for r in roots}
    todo, imports = list(wanted), set()
    while todo:
        module, name = todo.pop()
        source = module_source(module)
        if name not in source.definitions:
            raise SourceError(f"{module} defines no top-level '{name}' to copy")
        for read in source.definitions[name].reads:
            found = _resolve(source, read)
            if isinstance(found, tuple) and found not in wanted:
                wanted.add(found)
                todo.append(found)
            elif isinstance(found, str):
                imports.add(found)
    _check_names(wanted)
    sections = tuple((m, tuple(d.text for n, d in module_source(m).definitions.items()
                               if (m, n) in wanted))
                     for m in _module_order() if any(w[0] == m for w in wanted))
    return Copy(tuple(sorted(imports, key=_import_order)), sections)


def _resolve(source: ModuleSource, name: str) -> tuple[str, str] | str | None:
    """What a name read in `source` is: a definition (module, name), an import line, or None
    (a builtin, a local variable or an attribute)."""
    if name in source.definitions:
        return source.name, name
    if name in source.siblings:
        return source.siblings[name], name
    return source.imports.get(name)


def _check_names(wanted: set[tuple[str, str]]) -> None:
    """One file, one namespace: two copied definitions may not share a name."""
    seen: dict[str, str] = {}
    for module, name in sorted(wanted):
        if seen.setdefault(name, module) != module:
            raise SourceError(f"{seen[name]} and {module} both define '{name}'; the "
                              "standalone file holds them in one namespace: rename one")


def _module_order() -> list[str]:
    """The block modules, each after the siblings it imports from."""
    graph = {m.__name__: set(module_source(m.__name__).siblings.values())
             for m in BLOCK_MODULES}
    return list(TopologicalSorter(graph).static_order())


def _import_order(line: str) -> tuple[bool, bool, str]:
    """The standard library before torch; `import x` before `from x import y`."""
    module = line.split()[1]
    return module.split(".")[0] == "torch", line.startswith("from"), line


def names() -> set[str]:
    """Every name the block modules define or import: what the generated `forward` must not
    shadow with a variable."""
    return {n for m in BLOCK_MODULES for source in [module_source(m.__name__)]
            for n in (*source.definitions, *source.siblings, *source.imports)}
