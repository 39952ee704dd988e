"""mtl-dsl: a declarative language for multi-task learning models, compiled to PyTorch.

    import mtl_dsl as mtl
    spec = mtl.load("specs/mmoe.mtl")   # validated; MtlError lists every error
    model = mtl.compile(spec)           # nn.Module: model(batch) -> {task: output}
    run = mtl.train(spec, epochs=2)     # a run folder with metrics, checkpoint, plot

The API functions are imported lazily, so `import mtl_dsl.render` (or `mtl check`)
never loads torch.
"""

from __future__ import annotations

__all__ = ["load", "compile", "train", "check_file", "check_text", "MtlError", "DataError"]


def __getattr__(name: str):
    if name in ("load", "compile", "train", "check_file", "check_text"):
        from . import api

        return getattr(api, name)
    if name in ("MtlError", "DataError"):
        from .language import diagnostics

        return getattr(diagnostics, name)
    raise AttributeError(f"module 'mtl_dsl' has no attribute '{name}'")
