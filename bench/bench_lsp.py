"""`mtl lsp` as you type: the time from a keystroke (a `didChange` with the whole text) to the
`publishDiagnostics` of that version in a warm server, and the analysis core alone
(language/analysis.py: a cold analysis, and a warm one after a one-character edit), on the
shipped specs and on a ~100 KB spec made by repeating specs/mmoe.mtl's experts, gates, towers
and tasks under distinct names. Medians and 90th percentiles over --edits edits.

The server waits session.DELAY (0.2 s) after a keystroke for the next one before it checks, as
an editor's server should; the keystroke column includes that wait, the next one leaves it out.

    python bench/bench_lsp.py                     # shipped specs + 100 KB, 20 edits each
    python bench/bench_lsp.py --edits 50 --specs specs/mmoe.mtl
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtl_dsl.language.analysis import Analyser  # noqa: E402
from mtl_dsl.tools.editor.lsp.session import DELAY  # noqa: E402


def big_spec(target: int = 100_000) -> str:
    """specs/mmoe.mtl's blocks repeated under distinct names up to `target` characters."""
    parts = ['model big "repeated mmoe"\n\n'
             "data synthetic.correlated(rows=20000, correlation=0.8, seed=1)\n\n"
             "feature x = dense(100)\nlabel y1, y2\n\n"]
    i, size = 0, len(parts[0])
    while size < target:
        block = (f"experts e{i}[8] = mlp(x, 16)\ngate g{i}_a = softmax(x) over e{i}\n"
                 f"gate g{i}_b = softmax(x) over e{i}\ntower t{i}_a = mlp(g{i}_a, 8)\n"
                 f"tower t{i}_b = mlp(g{i}_b, 8)\ntask a{i}: regression(label=y1) from t{i}_a\n"
                 f"task b{i}: regression(label=y2) from t{i}_b\n\n")
        parts.append(block)
        size, i = size + len(block), i + 1
    parts.append("weighting uncertainty\ntrain epochs=5 batch=128 lr=1e-3 seed=7\n")
    return "".join(parts)


def edited(text: str, n: int) -> str:
    """The text with one character of its middle line changed (a different one each edit)."""
    lines = text.split("\n")
    middle = len(lines) // 2
    while not lines[middle].strip() or lines[middle].startswith("#"):
        middle += 1
    lines[middle] = lines[middle] + " " * (n % 2 + 1)  # trailing spaces: same meaning
    return "\n".join(lines)


def percentiles(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def core(text: str, path: str, edits: int) -> tuple[float, float, float]:
    """Cold analysis (ms), and the median and p90 of warm analyses after one-character edits."""
    start = time.perf_counter()
    analyser = Analyser()
    analyser.analyse(text, path)
    cold = time.perf_counter() - start
    warm = []
    for n in range(edits):
        changed = edited(text, n)
        start = time.perf_counter()
        analyser.analyse(changed, path)
        warm.append(time.perf_counter() - start)
    return (cold * 1e3, *(x * 1e3 for x in percentiles(warm)))


async def keystrokes(texts: dict[str, str], edits: int) -> dict[str, tuple[float, float]]:
    """Per spec, the median and p90 (ms) from didChange to its publishDiagnostics."""
    client = LanguageClient("bench", "1")
    published: dict[tuple[str, int], float] = {}

    @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diagnostics(params: lsp.PublishDiagnosticsParams) -> None:
        published.setdefault((params.uri, params.version or 0), time.perf_counter())

    await client.start_io(sys.executable, "-m", "mtl_dsl", "lsp")
    await client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities()))
    client.initialized(lsp.InitializedParams())
    out = {}
    for path, text in texts.items():
        uri = (ROOT / path).as_uri() if not path.startswith("<") else f"untitled:{path[1:-1]}"
        client.text_document_did_open(lsp.DidOpenTextDocumentParams(
            lsp.TextDocumentItem(uri, "mtl", 1, text)))
        await _wait(published, (uri, 1))
        times = []
        for n in range(edits):
            version = n + 2
            sent = time.perf_counter()
            client.text_document_did_change(lsp.DidChangeTextDocumentParams(
                lsp.VersionedTextDocumentIdentifier(version=version, uri=uri),
                [lsp.TextDocumentContentChangeWholeDocument(edited(text, n))]))
            times.append(await _wait(published, (uri, version)) - sent)
            await asyncio.sleep(0.05)
        out[path] = tuple(x * 1e3 for x in percentiles(times))
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return out


async def _wait(published: dict, key: tuple, seconds: float = 60.0) -> float:
    deadline = time.monotonic() + seconds
    while key not in published:
        if time.monotonic() > deadline:
            raise SystemExit(f"no diagnostics for {key} within {seconds} s")
        await asyncio.sleep(0.002)
    return published[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="*", default=None, help="default: every shipped spec")
    ap.add_argument("--edits", type=int, default=20)
    args = ap.parse_args()
    paths = args.specs if args.specs is not None else \
        [str(p.relative_to(ROOT)) for p in sorted((ROOT / "specs").glob("*.mtl"))]
    texts = {p: (ROOT / p).read_text(encoding="utf-8") for p in paths}
    texts["<big100k>"] = big_spec()
    server = asyncio.run(keystrokes(texts, args.edits))
    print(f"{'spec':34} {'KB':>6} {'core cold':>10} {'core warm':>15} "
          f"{'keystroke->diagnostics':>24} {'less the wait':>15}")
    print(f"{'':34} {'':>6} {'ms':>10} {'median / p90':>15} {'median / p90 ms':>24} "
          f"{'median':>15}")
    for path, text in texts.items():
        cold, warm, warm90 = core(text, path, args.edits)
        med, p90 = server[path]
        print(f"{path:34} {len(text.encode()) / 1000:6.1f} {cold:10.1f} "
              f"{warm:7.1f} / {warm90:5.1f} {med:14.1f} / {p90:7.1f} {med - DELAY * 1e3:15.1f}")


if __name__ == "__main__":
    main()
