"""The language server `mtl lsp` (docs/editors.md): `server` registers the protocol's features
on pygls, `session` keeps the open documents and checks them as they change, `assist` answers
hover and completion, `outline` symbols, folding, semantic tokens and inlay hints, `edits` the
quick fixes, rename and formatting, `data` reads the data source, `positions` converts
positions. pygls and lsprotocol come with the extra `mtl-dsl[lsp]`."""
