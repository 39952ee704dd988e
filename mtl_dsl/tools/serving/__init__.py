"""A trained run outside training: prediction and evaluation from a checkpoint, export to
ONNX, torch.export and a standalone `.py`, and serving through an export (docs/export.md)."""
