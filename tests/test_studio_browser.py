"""mtl studio end to end in a real headless browser (Debian's chromium driven by Playwright):
typing a typo marks its line, fixing it redraws the diagram, a diagram node selects its
declaration, Train streams the loss chart and lists the run, and the page still checks as you
type on a plain textarea when the editor bundle is missing (docs/studio.md). Each state is
saved as a screenshot under the test's tmp_path (the path is printed)."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(`bash .ci/quickstart test` installs it with apt-get)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need "
                               "playwright (the dev extra)")
pytest.importorskip("starlette", reason="mtl studio needs the extra mtl-dsl[studio]")

from mtl_dsl.tools.studio.server import start_in_thread  # noqa: E402

EXPERTS = "experts e[8] = mlp(x, 16)"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield launched
        launched.close()


@pytest.fixture
def studio(tmp_path):
    text = (ROOT / "specs" / "mmoe.mtl").read_text(encoding="utf-8")
    (tmp_path / "mmoe.mtl").write_text(text.replace("rows=20000", "rows=1500")
                                       .replace("epochs=5", "epochs=2"), encoding="utf-8")
    running = start_in_thread(tmp_path)
    yield running
    running.stop()


def shoot(page, tmp_path, name: str, full: bool = False) -> None:
    path = tmp_path / f"studio-{name}.png"
    page.screenshot(path=str(path), full_page=full)
    print(f"screenshot: {path}")


def line_of(page, selector: str) -> int:
    """The editor line (1-based) holding the first element matching `selector`."""
    return page.evaluate("""(sel) => {
        const view = MtlStudio.editor().view;
        return view.state.doc.lineAt(view.posAtDOM(document.querySelector(sel))).number; }""",
                         selector)


def test_type_fix_click_and_train(browser, studio, tmp_path):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(studio.url)
    page.wait_for_selector("body[data-editor=codemirror] .cm-content")
    page.wait_for_selector("#diagram svg g.node[data-node=e]")
    first_svg = page.inner_html("#diagram")
    experts_line = 1 + (studio.studio.folder.root / "mmoe.mtl").read_text().splitlines().index(
        EXPERTS)
    shoot(page, tmp_path, "loaded")

    page.click("#diagram g.node[data-node=e]")  # a node selects its declaration's line
    selected = page.evaluate("""() => { const s = MtlStudio.editor().view.state;
        return s.doc.lineAt(s.selection.main.from).number; }""")
    assert selected == experts_line
    page.hover("#diagram g.node[data-node=a]")  # a task's path through the graph
    assert page.is_visible("#diagram.tracing")
    assert page.get_attribute("#diagram g.node[data-node=t_a]", "class").split().count("on")
    assert "on" not in page.get_attribute("#diagram g.node[data-node=t_b]", "class").split()

    position = page.evaluate("""(needle) => { const d = MtlStudio.editor().view.state.doc;
        return d.toString().indexOf(needle) + needle.indexOf('(x'); }""", EXPERTS)
    page.evaluate("(p) => { const v = MtlStudio.editor().view; v.focus(); "
                  "v.dispatch({selection: {anchor: p}}); }", position)
    started = time.monotonic()
    page.keyboard.type("p")  # mlp -> mlpp: an unknown kind
    page.wait_for_selector(".cm-lintRange-error", timeout=1000)
    seconds = time.monotonic() - started
    assert line_of(page, ".cm-lintRange-error") == experts_line
    assert page.is_visible(".cm-gutter-lint .cm-lint-marker-error")
    assert "mlpp" in page.inner_text("#diagnostics li.error")
    print(f"keystroke to error mark: {seconds * 1000:.0f} ms "
          f"(the page's own count: {page.get_attribute('body', 'data-check-ms')} ms)")
    shoot(page, tmp_path, "typo")

    page.keyboard.press("Backspace")  # fixed, and the experts made wider
    page.evaluate("""(needle) => { const v = MtlStudio.editor().view; const d = v.state.doc;
        const at = d.toString().indexOf(needle) + needle.indexOf('16');
        v.dispatch({selection: {anchor: at, head: at + 2}}); }""", EXPERTS)
    page.keyboard.type("32")
    page.wait_for_function("() => document.querySelector('#diagram svg') && "
                           "document.querySelector('#diagram').textContent.includes('→32')",
                           timeout=3000)
    assert page.query_selector(".cm-lintRange-error") is None
    assert page.inner_html("#diagram") != first_svg
    shoot(page, tmp_path, "fixed")

    page.click("#train")  # saves the edited spec first, then trains it
    page.wait_for_function("() => Number((document.querySelector('.card[data-job] .loss-chart "
                           "svg') || {dataset: {}}).dataset.points || 0) > 0", timeout=60000)
    assert "mlp(x, 32)" in (studio.studio.folder.root / "mmoe.mtl").read_text()
    page.wait_for_selector(".card[data-job][data-state=finished]", timeout=60000)
    run = page.get_attribute(".card[data-job]", "data-run")
    page.wait_for_selector(f"#runs tr[data-run='{run}'] td.status-finished", timeout=10000)
    assert page.query_selector(".card[data-job] .heat[data-gate=g_a] td") is not None
    page.mouse.move(5, 5)
    page.evaluate("() => window.scrollTo(0, document.querySelector('#training').offsetTop - 8)")
    shoot(page, tmp_path, "training")
    page.click(f"#runs tr[data-run='{run}'] a")  # the run's curves, diagram and plots
    page.wait_for_function("() => [...document.querySelectorAll('#detail img')].some("
                           "(i) => i.complete && i.naturalWidth > 0)", timeout=10000)
    assert page.query_selector("#detail .diagram svg") is not None
    assert int(page.get_attribute("#detail .loss-chart svg", "data-points")) > 0
    shoot(page, tmp_path, "trained", full=True)

    spot = page.evaluate("""(needle) => { const v = MtlStudio.editor().view;
        const at = v.state.doc.toString().indexOf(needle) + needle.indexOf('mlp') + 1;
        const c = v.coordsAtPos(at); return [c.left + 2, (c.top + c.bottom) / 2]; }""",
                         EXPERTS.replace("16", "32"))
    page.mouse.move(*spot)  # hover the kind `mlp`: the language server's description
    page.wait_for_selector(".cm-tooltip-hover .tooltip-md", timeout=3000)
    assert "net kind" in page.inner_text(".cm-tooltip-hover")
    page.evaluate("() => { const v = MtlStudio.editor().view; v.focus(); "
                  "v.dispatch({selection: {anchor: v.state.doc.length}}); }")
    page.keyboard.type("weighting pc")  # completion offers the methods that fit
    page.wait_for_selector(".cm-tooltip-autocomplete", timeout=3000)
    assert "pcgrad" in page.inner_text(".cm-tooltip-autocomplete")

    refused = page.request.get(studio.base + "/api/state")  # no token: refused
    assert refused.status == 403
    assert page.evaluate("() => fetch('/api/runs').then((r) => r.status)") == 403
    page.close()


def test_the_textarea_still_checks_without_the_bundle(browser, studio, tmp_path):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.route("**/static/editor.js*", lambda route: route.abort())
    page.goto(studio.url)
    page.wait_for_selector("body[data-editor=textarea]")
    page.wait_for_selector("#diagram svg")
    page.fill("#source", page.input_value("#source").replace(" over e\n", " over ee\n", 1))
    page.wait_for_selector("#diagnostics li.error", timeout=2000)
    assert "E201" in page.inner_text("#diagnostics li.error")
    shoot(page, tmp_path, "textarea")
    page.click("#diagnostics li.error")  # a diagnostic selects its line
    assert page.evaluate("() => document.querySelector('#source').value.slice("
                         "document.querySelector('#source').selectionStart, "
                         "document.querySelector('#source').selectionEnd)").startswith("gate g_a")
    page.close()
