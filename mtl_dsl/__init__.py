"""mtl-dsl: a declarative language for multi-task learning models, compiled to PyTorch."""
