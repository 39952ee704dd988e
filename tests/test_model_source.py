"""The block modules are the one copy of each block: they import torch and the standard
library only, so the standalone file of `mtl export -o model.py` copies their source as it is
(tools/serving/model_source.py, docs/export.md)."""

from __future__ import annotations

import ast
import inspect
import sys

import pytest
import torch

from mtl_dsl.model import blocks, gates, interactions, steps
from mtl_dsl.tools.serving.model_source import (BLOCK_MODULES, SourceError, copy_of,
                                                module_source)

BLOCK_NAMES = {m.__name__ for m in BLOCK_MODULES}


@pytest.mark.parametrize("module", BLOCK_MODULES, ids=lambda m: m.__name__.split(".")[-1])
def test_a_block_module_imports_torch_the_standard_library_and_its_siblings_only(module):
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            assert node.level == 1 and f"mtl_dsl.model.{node.module}" in BLOCK_NAMES, \
                ast.unparse(node)
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            top = name.split(".")[0]
            assert top == "torch" or top in sys.stdlib_module_names, ast.unparse(node)


def test_the_model_modules_that_read_the_spec_are_not_block_modules():
    """The plan steps and the compiler read the language stage; the copier refuses them."""
    with pytest.raises(SourceError, match="not a block module"):
        copy_of([steps.Features])


def _run(copied) -> dict:
    """The copied code executed on its own, with its import lines and nothing else."""
    text = "\n".join(["from __future__ import annotations", *copied.imports,
                      *(t for _, texts in copied.sections for t in texts)])
    namespace: dict = {}
    exec(compile(text, "<standalone>", "exec"), namespace)  # noqa: S102 - our own source
    return namespace


def test_every_block_definition_copies_and_runs_without_the_package():
    everything = [getattr(m, name) for m in BLOCK_MODULES
                  for name, d in module_source(m.__name__).definitions.items()
                  if inspect.isclass(getattr(m, name)) or inspect.isfunction(getattr(m, name))]
    copied = copy_of(everything)  # no two block modules define one name
    assert {line.split()[1].split(".")[0] for line in copied.imports} - {"torch"} <= \
        set(sys.stdlib_module_names)
    namespace = _run(copied)
    modules = {v.__name__.split(".")[0] for v in namespace.values() if inspect.ismodule(v)}
    assert "torch" in modules and modules - {"torch"} <= set(sys.stdlib_module_names)
    torch.manual_seed(0)
    theirs = namespace["ExpertGroup"](6, 3, (5, 4), act="gelu", norm="layer")
    ours = blocks.ExpertGroup(6, 3, (5, 4), act="gelu", norm="layer")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(4, 6)
    torch.testing.assert_close(theirs(x), ours(x), rtol=0, atol=0)


def test_a_block_comes_with_what_it_reads_in_dependency_order_and_nothing_else():
    copied = copy_of([interactions.FusionGate])
    modules = [m for m, _ in copied.sections]
    assert modules == ["mtl_dsl.model.gates", "mtl_dsl.model.interactions"]
    texts = {m: "\n".join(t) + "\n" for m, t in copied.sections}
    for needed in (gates.SoftmaxGate, gates.mix, gates.keep_top_k):
        assert inspect.getsource(needed) in texts["mtl_dsl.model.gates"], needed
    assert "class DSelectGate" not in texts["mtl_dsl.model.gates"]
    assert texts["mtl_dsl.model.interactions"] == inspect.getsource(interactions.FusionGate)
    gate = _run(copied)["FusionGate"](5, 3, 2, residual="gated")
    assert type(gate).__name__ == "FusionGate" and gate(torch.randn(2, 5),
                                                        torch.randn(2, 3, 4)).shape == (2, 4)
