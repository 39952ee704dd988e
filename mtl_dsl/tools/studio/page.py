"""The studio's page: index.html filled in on the server, so it works before any script runs.

The spec's text is in a plain textarea inside a form that saves it, and `mtl check`'s own
rendering of its diagnostics is under it. The page's script (static/studio.js) then replaces
the textarea with the CodeMirror editor (static/editor.js, the committed bundle built from
editors/studio-web/) and takes over; if the bundle is missing it keeps the textarea and still
checks as you type; with scripts off, the form and the server-side check remain.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape
from importlib import resources

from ...language import registry as reg
from ...language.analysis import Analysis
from ...language.context import KEYWORDS
from ...language.diagnostics import Source, render_all

STATIC = "mtl_dsl.tools.studio"
ASSETS = {"studio.js": "text/javascript", "runs.js": "text/javascript", "studio.css": "text/css",
          "editor.js": "text/javascript"}


@lru_cache(maxsize=None)
def asset(name: str) -> bytes | None:
    """A static file shipped in the package (None: not there, e.g. an unbuilt bundle)."""
    if name not in ASSETS and name != "index.html":
        return None
    try:
        return resources.files(STATIC).joinpath("static", name).read_bytes()
    except (FileNotFoundError, OSError):
        return None


def language() -> dict:
    """What the editor's highlighter colours: the statement keywords and every kind."""
    return {"keywords": list(KEYWORDS),
            "kinds": sorted({name for kinds in reg.REGISTRY.values() for name in kinds})}


def index(token: str, path: str | None, text: str, analysis: Analysis | None,
          folder: str) -> str:
    """index.html with the spec, its diagnostics (as `mtl check` renders them) and the token
    the page's requests carry."""
    shown = "no spec open" if path is None else \
        (render_all(analysis.diagnostics, Source(text, path)) if analysis and
         analysis.diagnostics else f"ok: {path}")
    page = (asset("index.html") or b"").decode("utf-8")
    for key, value in {"TOKEN": token, "PATH": path or "", "TEXT": text, "CHECK": shown,
                       "FOLDER": folder}.items():
        page = page.replace("{{" + key + "}}", escape(value, quote=True))
    return page
