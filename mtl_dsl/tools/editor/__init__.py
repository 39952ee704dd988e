"""The language in the editor: the formatter's file driver, the language server and the
TextMate grammar generated from the registry (docs/editors.md)."""
