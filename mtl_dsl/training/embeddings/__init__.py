"""Embedding tables while training: the engine the loop asks for the tables' rows and updates,
the row optimizers, replicated and row-sharded tables, and the TorchRec engine where it is
installed (docs/scaling.md, "Embedding tables")."""
