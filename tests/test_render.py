"""The diagram: a real SVG through Graphviz, the DOT source, and the fallback without it."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import graphviz
import pytest

from mtl_dsl.tools.drawing import graphviz as rd
from mtl_dsl.api import check_file, check_text

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"

PLE = """\
model ple2 "Two-level PLE"
data synthetic.correlated(rows=1000)
feature x = dense(100)
label y1, y2
extract p = ple(x, levels=2, specific=2, shared=2, expert=mlp(32, 16), tasks=[a, b])
tower t_a = mlp(p.a, 8)
tower t_b = mlp(p.b, 8)
task a: regression(label=y1) from t_a
task b: binary(label=y2) from t_b
"""


@pytest.fixture
def mmoe():
    checked = check_file(ROOT / "specs" / "mmoe.mtl")
    assert checked.ok, checked.diagnostics
    return checked


@pytest.fixture
def ple():
    checked = check_text(PLE, "ple2.mtl")
    assert checked.ok, checked.diagnostics
    return checked


def node_line(source: str, name: str) -> str:
    """The DOT statement declaring node `name` (its attributes sit on one line)."""
    starts = (f'"{name}" [', f"{name} [")  # graphviz quotes only ids that need it
    lines = [ln for ln in source.splitlines() if ln.strip().startswith(starts)]
    assert len(lines) == 1, f"node {name!r} declared {len(lines)} times"
    return lines[0]


def attr(line: str, key: str) -> str:
    m = re.search(rf'\b{key}="([^"]*)"', line) or re.search(rf"\b{key}=(\w+)", line)
    assert m, f"no {key} in {line}"
    return m.group(1)


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return [("".join(t.itertext())).strip() for t in root.iter(f"{SVG}text")]


# --------------------------------------------------------------------------
# Real output through Graphviz (CI installs it: never skipped)
# --------------------------------------------------------------------------

def test_mmoe_svg_is_valid_and_names_every_block(mmoe, tmp_path):
    out = tmp_path / "mmoe.svg"
    result = rd.render(mmoe.spec, mmoe.graph, out)
    assert result == rd.RenderResult(out, False, f"wrote {out}")
    texts = svg_texts(out)
    spec = mmoe.spec
    names = [n.name for n in (*spec.experts, *spec.gates, *spec.towers, *spec.tasks)]
    assert names == ["e", "g_a", "g_b", "t_a", "t_b", "a", "b"]
    for name in names:
        assert name in texts, f"{name!r} is not a text of the SVG"
    assert "×8" in texts  # the expert group's count
    assert "mlp 100→16" in texts
    assert "regression(y1)" in texts
    assert "shared by a, b" in texts
    assert "mmoe" in texts and "MMoE on the synthetic correlation benchmark" in texts


def test_png_and_pdf_are_real_images(mmoe, tmp_path):
    png = rd.render(mmoe.spec, mmoe.graph, tmp_path / "m.png")
    pdf = rd.render(mmoe.spec, mmoe.graph, tmp_path / "m.PDF")
    assert png.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.path.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.PDF", "m.png"]


def test_rendering_writes_only_the_requested_file(mmoe, tmp_path):
    keep = tmp_path / "m.dot"
    keep.write_text("mine")
    rd.render(mmoe.spec, mmoe.graph, tmp_path / "m.svg")
    assert keep.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dot", "m.svg"]


# --------------------------------------------------------------------------
# The DOT source: layout, sharing, clusters
# --------------------------------------------------------------------------

def test_mmoe_shared_and_task_fills(mmoe):
    source = rd.to_digraph(mmoe.spec, mmoe.graph).source
    colours = rd.task_colours(mmoe.spec)
    assert colours["a"] != colours["b"]
    assert rd.SHARED_FILL not in colours.values()
    assert attr(node_line(source, "e"), "fillcolor") == rd.SHARED_FILL
    assert attr(node_line(source, "e"), "shape") == "box3d"
    for task in ("a", "b"):
        for name in (f"g_{task}", f"t_{task}", task):
            assert attr(node_line(source, name), "fillcolor") == colours[task], name
    assert "rankdir=BT" in source


def test_mmoe_edges_mix_dashed_data_solid_with_widths(mmoe):
    source = rd.to_digraph(mmoe.spec, mmoe.graph).source
    mix = re.search(r'^\s*e -> g_a \[(.*)\]$', source, re.M)
    data = re.search(r'^\s*x -> e \[(.*)\]$', source, re.M)
    assert mix and data, source
    assert attr(mix.group(1), "style") == "dashed"
    assert attr(data.group(1), "style") == "solid"
    assert attr(data.group(1), "label").strip() == "100"


def test_ple_has_one_cluster_per_level(ple):
    source = rd.to_digraph(ple.spec, ple.graph).source
    for level in (1, 2):
        block = re.search(rf'subgraph "cluster_p\.l{level}" \{{(.*?)\n\t\}}', source, re.S)
        assert block, f"no cluster for level {level}"
        body = block.group(1)
        assert f"label=\"p · level {level}\"" in body
        for name in (f"p.l{level}.a", f"p.l{level}.b", f"p.l{level}.shared",
                     f"p.l{level}.gate_a", f"p.l{level}.gate_b"):
            assert node_line(body, name), f"{name} is not in level {level}'s cluster"
    assert "cluster_p.l3" not in source


def test_ple_shared_experts_look_different_from_task_experts(ple):
    source = rd.to_digraph(ple.spec, ple.graph).source
    colours = rd.task_colours(ple.spec)
    shared = node_line(source, "p.l2.shared")
    own_a, own_b = node_line(source, "p.l2.a"), node_line(source, "p.l2.b")
    assert attr(shared, "fillcolor") == rd.SHARED_FILL
    assert attr(own_a, "fillcolor") == colours["a"] != rd.SHARED_FILL
    assert attr(own_b, "fillcolor") == colours["b"] != colours["a"]
    assert "shared by a, b" in shared
    assert "shared by" not in own_a
    # level 1's task experts also feed the shared gate, so both tasks train them
    assert attr(node_line(source, "p.l1.a"), "fillcolor") == rd.SHARED_FILL
    assert attr(node_line(source, "p.l1.gate_shared"), "fillcolor") == rd.SHARED_FILL


def test_ple_legend_and_title(ple):
    source = rd.to_digraph(ple.spec, ple.graph).source
    title = source.split("\n\t", 1)[0] + source  # the graph label sits in the header
    assert "<b>ple2</b>" in title and "Two-level PLE" in title
    colours = rd.task_colours(ple.spec)
    for task, colour in colours.items():
        assert f'bgcolor="{colour}"' in source and f"task {task}" in source
    assert f'bgcolor="{rd.SHARED_FILL}"' in source


def test_dot_output_is_the_digraph_source(mmoe, tmp_path):
    out = tmp_path / "model.dot"
    result = rd.render(mmoe.spec, mmoe.graph, out)
    assert result == rd.RenderResult(out, False, f"wrote {out}")
    text = out.read_text()
    assert text == rd.to_digraph(mmoe.spec, mmoe.graph).source
    assert text.startswith("digraph mmoe {")
    assert [p.name for p in tmp_path.iterdir()] == ["model.dot"]


def test_embedding_ids_are_not_ports():
    checked = check_text('model m\ndata synthetic.correlated(rows=100)\n'
                         'feature u = sparse(vocab=10, dim=4, column=x_1)\nlabel y1, y2\n'
                         'tower t_a = mlp(u, 8)\ntower t_b = mlp(u, 8)\n'
                         'task a: regression(label=y1) from t_a\n'
                         'task b: regression(label=y2) from t_b\n')
    assert checked.ok, checked.diagnostics
    source = rd.to_digraph(checked.spec, checked.graph).source
    assert '"emb/u" -> u' in source
    assert not re.search(r"emb:u\"?\s*(\[|->)", source)  # `emb:u` would be node emb, port u
    assert attr(node_line(source, "emb/u"), "fillcolor") == rd.SHARED_FILL


def test_unknown_suffix_is_refused(mmoe, tmp_path):
    with pytest.raises(ValueError, match=r"\.svg, \.png, \.pdf, \.dot"):
        rd.render(mmoe.spec, mmoe.graph, tmp_path / "model.jpeg")
    with pytest.raises(ValueError, match="model"):
        rd.render(mmoe.spec, mmoe.graph, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# Without Graphviz's `dot` program
# --------------------------------------------------------------------------

def assert_fallback(result: rd.RenderResult, out: Path, spec, graph) -> None:
    source = out.with_suffix(".dot")
    assert result.fallback is True
    assert result.path == source
    assert source.read_text() == rd.to_digraph(spec, graph).source
    assert not out.exists()
    for how in ("apt-get install graphviz", "brew install graphviz", "conda install graphviz"):
        assert how in result.message
    assert "Graphviz" in result.message and str(source) in result.message


def test_fallback_when_dot_is_not_on_path(mmoe, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "model.svg"
    assert_fallback(rd.render(mmoe.spec, mmoe.graph, out), out, mmoe.spec, mmoe.graph)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty-bin", "model.dot"]


def test_fallback_when_graphviz_cannot_run_dot(mmoe, tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(rd.shutil, "which", lambda name: "/usr/bin/dot")
    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)
    out = tmp_path / "model.png"
    assert_fallback(rd.render(mmoe.spec, mmoe.graph, out), out, mmoe.spec, mmoe.graph)


def test_dot_output_needs_no_graphviz(mmoe, tmp_path, monkeypatch):
    monkeypatch.setattr(rd.shutil, "which", lambda name: None)
    result = rd.render(mmoe.spec, mmoe.graph, tmp_path / "m.dot")
    assert result.fallback is False and result.path.read_text().startswith("digraph")


# --------------------------------------------------------------------------
# The renderer never imports torch
# --------------------------------------------------------------------------

@pytest.mark.parametrize("code", [
    "import sys, mtl_dsl.tools.drawing.graphviz; assert 'torch' not in sys.modules",
    # torch made unimportable: the renderer and the front end must still work
    "import sys; sys.modules['torch'] = None; import mtl_dsl.tools.drawing.graphviz as r, mtl_dsl.api as s; "
    "c = s.check_file('specs/mmoe.mtl'); r.to_digraph(c.spec, c.graph)",
])
def test_render_does_not_import_torch(code):
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_transfer_edges_are_drawn_by_kind_and_product_tasks_sit_above(root):
    from mtl_dsl.tools.drawing.graphviz import to_digraph
    from mtl_dsl.api import check_file

    for name, role, label in (("esmm", "product", "product"), ("aitm", "ait", "AIT")):
        checked = check_file(root / "specs" / f"{name}.mtl")
        source = to_digraph(checked.spec, checked.graph).source
        edges = [line for line in source.splitlines() if "->" in line and f"label=\" {label}\""
                 in line]
        expected = [(u, v) for u, v, r in checked.graph.g.edges(data="role") if r == role]
        assert len(edges) == len(expected) > 0, name
    esmm = check_file(root / "specs" / "esmm.mtl")
    source = to_digraph(esmm.spec, esmm.graph).source
    assert "= ctr * cvr" in source and "no loss of its own" in source
    same_rank = next(block for block in source.split("{") if "rank=same" in block)
    assert "ctcvr" not in same_rank.split("}")[0]  # the derived output is drawn above


def test_metaheac_diagram_shows_shared_critics_and_task_gates(root):
    from mtl_dsl.tools.drawing.graphviz import to_digraph
    from mtl_dsl.api import check_file

    checked = check_file(root / "specs" / "metaheac.mtl")
    source = to_digraph(checked.spec, checked.graph).source
    assert "cluster_h" in source and "h · MetaHeac" in source
    assert "critics, mlp" in source and "shared by ctr, ctcvr" in source
    assert "ctr embedding 16 + input" in source
    assert source.count('label=" critic"') == 2


def test_pepnet_priors_are_drawn_as_the_towers_gate_inputs(root):
    """A PEPNet tower's `by=` prior reaches it by a `gate-input` edge although a tower is no
    gate (it once asked the tower for a gate form: KeyError); drawn dotted like a gate's."""
    checked = check_file(root / "specs" / "pepnet.mtl")
    source = rd.to_digraph(checked.spec, checked.graph).source
    priors = [(u, v) for u, v, r in checked.graph.g.edges(data="role")
              if r == "gate-input" and checked.graph.kind(v) == "tower"]
    assert ("prior", "t_ctr") in priors and ("category", "ep") in priors
    for u, v in priors:
        line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"{u} -> {v} "))
        assert attr(line, "style") == "dotted", line
    assert "PPNet gates by prior, γ=2" in source and "EPNet gates by category, γ=2" in source


def test_every_node_kind_has_a_describer_shape_and_style() -> None:
    from mtl_dsl.language.graph import KINDS
    from mtl_dsl.tools.drawing.graphviz import SHAPES, STYLES
    from mtl_dsl.tools.drawing.labels import DESCRIBE

    for table in (DESCRIBE, SHAPES, STYLES):
        assert set(table) == set(KINDS)


# --------------------------------------------------------------------------
# Mermaid (tools/drawing/mermaid.py): `-o x.mmd`
# --------------------------------------------------------------------------

def test_mermaid_has_every_node_and_edge_of_the_graph(tmp_path, ple):
    from mtl_dsl.tools.drawing.mermaid import node_ids

    for checked in (ple, check_file(ROOT / "specs" / "esmm.mtl"), check_file(ROOT / "specs" / "aitm.mtl")):
        out = tmp_path / "m.mmd"
        result = rd.render(checked.spec, checked.graph, out)
        assert result.path == out and not result.fallback
        text = out.read_text()
        lines = text.splitlines()
        assert "flowchart BT" in lines
        ids = node_ids(checked.spec, checked.graph)
        assert set(ids) == set(checked.graph.g.nodes)
        declared = {ln.split("[")[0].split("(")[0].strip(): ln for ln in lines
                    if re.match(r"\s+n\d+[\[(]", ln)}
        assert set(declared) == set(ids.values())
        for name, nid in ids.items():
            assert f'{name.replace("<", "#lt;")}<br/>' in declared[nid]
        edges = {(m.group(1), m.group(2)) for m in
                 re.finditer(r"^\s+(n\d+) \S+ (n\d+)$", text, re.M)}
        assert edges == {(ids[u], ids[v]) for u, v in checked.graph.g.edges}
        classed = {n for ln in lines if ln.strip().startswith("class ")
                   for n in ln.split()[1].split(",")}
        assert classed == set(ids.values())  # every node has its fill


def test_cli_renders_mermaid_and_names_it_among_the_formats(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mtl_dsl", "render", str(ROOT / "specs" / "mmoe.mtl"),
                          "-o", str(tmp_path / "mmoe.mmd")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "mmoe.mmd").read_text().startswith("---\ntitle: mmoe")
    bad = subprocess.run([sys.executable, "-m", "mtl_dsl", "render", str(ROOT / "specs" / "mmoe.mtl"),
                          "-o", str(tmp_path / "mmoe.txt")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and ".mmd" in bad.stderr


# --------------------------------------------------------------------------
# A search space (tools/drawing/searched.py): its first candidates, its values shown
# --------------------------------------------------------------------------

SPACE = """\
model small "a small space"
data synthetic.correlated(rows=500, seed=1)
feature x = dense(10)
label y1, y2
experts e[int_uniform(2, 4)] = mlp(x, choice(32, 64), 16, act=choice(relu, gelu))
gate g_a = softmax(x, temperature=uniform(0.5, 2)) over e
gate g_b = softmax(x) over e
tower t_a = mlp(g_a, 8)
tower t_b = mlp(g_b, 8)
task a: regression(label=y1, weight=choice(0.5, 1)) from t_a
task b: regression(label=y2) from t_b
weighting choice(fixed, uncertainty)
train epochs=1 lr=loguniform(1e-4, 1e-2)
"""


def _label(source: str, name: str) -> str:
    """A node's label text: its HTML rows without tags, entities decoded."""
    import html

    label = re.search(r"label=<(.*)>", node_line(source, name)).group(1)
    return html.unescape(re.sub(r"<[^>]+>", "|", label))


def test_a_space_is_drawn_at_its_first_candidates_with_every_value_where_it_applies():
    checked = check_text(SPACE, "small.mtl")
    assert checked.ok and checked.space
    source = rd.to_digraph(checked.spec, checked.graph, checked.space).source
    e = _label(source, "e")
    assert "e| ×[2, 4] int" in e and "mlp 10→{32, 64}→16" in e and "act ∈ {relu, gelu}" in e
    assert "softmax over 2, T=0.5" in _label(source, "g_a")  # the first candidates, drawn
    assert "temperature ∈ [0.5, 2]" in _label(source, "g_a")
    assert "weight ∈ {0.5, 1}" in _label(source, "a")
    assert "∈" not in _label(source, "g_b") + _label(source, "t_a")
    title = html_title(source)
    assert "search space: 7 dimensions, continuous" in title
    assert "weighting ∈ {fixed, uncertainty}" in title and "train lr ∈ [0.0001, 0.01] log" in title
    plain = rd.to_digraph(checked.spec, checked.graph).source  # without the space: nothing
    assert "∈" not in plain and "{32, 64}" not in plain


def html_title(source: str) -> str:
    """The graph's title and legend (the `label` of the digraph's own attributes)."""
    import html

    line = next(ln for ln in source.splitlines() if ln.strip().startswith("fontname="))
    return html.unescape(re.sub(r"<[^>]+>", "|", line))


def test_the_census_space_shows_its_tied_dimensions_on_every_block(tmp_path):
    checked = check_file(ROOT / "specs" / "tuning" / "census_mmoe_space.mtl")
    source = rd.to_digraph(checked.spec, checked.graph, checked.space).source
    sparse = [f.name for f in checked.spec.features if f.kind == "sparse"]
    assert len(sparse) == 32
    for name in sparse:
        assert "dim ∈ {4, 8, 16} as emb_dim" in _label(source, name), name
    assert "×{4, 8, 12}" in _label(source, "e") and "dropout ∈ [0, 0.3]" in _label(source, "e")
    for tower in ("t_income", "t_marital"):
        label = _label(source, tower)
        assert "→{8, 16, 32}" in label and "width searched as tower" in label
        assert "dropout ∈ [0, 0.3] as tower_dropout" in label
    assert "train batch ∈ {256, 512, 1024}" in html_title(source)
    out = tmp_path / "space.mmd"
    rd.render(checked.spec, checked.graph, out, checked.space)
    text = out.read_text()
    assert text.count("dim ∈ {4, 8, 16} as emb_dim") == 32
    assert "count ∈ {4, 8, 12}" in text and "width ∈ {32, 64, 128}" in text
    assert re.search(r'^    space\["search space: 8 dimensions.*train lr ∈ \[0.0003, 0.01\] log"\]$',
                     text, re.M)


def test_the_cli_renders_a_space_but_compile_still_refuses_it(tmp_path):
    from typer.testing import CliRunner

    from mtl_dsl.tools.cli.main import app

    spec = tmp_path / "small.mtl"
    spec.write_text(SPACE)
    runner = CliRunner()
    for suffix in (".svg", ".mmd"):
        done = runner.invoke(app, ["render", str(spec), "-o", str(tmp_path / f"s{suffix}")])
        assert done.exit_code == 0, done.output
    assert "{32, 64}" in (tmp_path / "s.svg").read_text()
    refused = runner.invoke(app, ["compile", str(spec)])
    assert refused.exit_code == 1 and "E720" in refused.output
    spec.write_text(SPACE.replace("over e\ngate g_b", "over ee\ngate g_b"))  # an error stays one
    broken = runner.invoke(app, ["render", str(spec), "-o", str(tmp_path / "b.svg")])
    assert broken.exit_code == 1 and "E201" in broken.output and "E720" not in broken.output
    assert not (tmp_path / "b.svg").exists()


def test_a_space_in_a_nested_call_a_template_or_a_whole_call_is_shown_too():
    spec = """\
model s3
data synthetic.funnel(rows=500, seed=1, history=10)
feature user = sparse(dim=8)
feature item = sparse(dim=8)
feature hist = sequence(share=item, column=history, pool=attention(query=item, width=choice(8, 16)))
label click, purchase
input x = concat(user, item, hist)
extract p = ple(x, levels=choice(1, 2), specific=1, shared=1, expert=mlp(16), tasks=[ctr, cvr])
tower t_ctr = choice(mlp(p.ctr, 8), mlp(p.ctr, 16))
tower t_cvr = mlp(p.cvr, int_uniform(4, 8), 4)
task ctr: binary(label=click) from t_ctr
task cvr: binary(label=purchase) from t_cvr
"""
    checked = check_text(spec, "s3.mtl")
    assert checked.ok and len(checked.space.dims) == 4
    source = rd.to_digraph(checked.spec, checked.graph, checked.space).source
    assert "sequence(pool).attention(width) ∈ {8, 16}" in _label(source, "hist")
    assert "call ∈ {mlp(p.ctr, 8), mlp(p.ctr, 16)}" in _label(source, "t_ctr")
    assert "mlp 16→[4, 8] int→4" in _label(source, "t_cvr")
    assert "extract p: ple(levels) ∈ {1, 2}" in html_title(source)  # a template: no one block
