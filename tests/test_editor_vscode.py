"""The VS Code extension and the TextMate grammar (editors/vscode, docs/editors.md).

The generated grammar must equal what the generator writes from the registry and the parser's
grammar, and must colour what the registry holds; the snippets must expand to specs that
`mtl check` accepts; the package manifest must declare what the client reads. The tests that
need node (the grammar cases, the server lookup, the build) skip when node or the package's
node_modules (`npm ci --prefix editors/vscode`) are absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from mtl_dsl.language import registry as reg
from mtl_dsl.language.check import check_text
from mtl_dsl.language.diagnostics import MtlError
from mtl_dsl.language.space import DISTRIBUTIONS
from mtl_dsl.tools.editor import textmate

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "editors" / "vscode"
PACKAGE = json.loads((EXT / "package.json").read_text(encoding="utf-8"))
GRAMMAR = json.loads(textmate.GRAMMAR.read_text(encoding="utf-8"))
NODE = shutil.which("node")
NPX = shutil.which("npx")
INSTALLED = (EXT / "node_modules" / ".bin" / "vscode-tmgrammar-test").exists()
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")
needs_modules = pytest.mark.skipif(
    NODE is None or NPX is None or not INSTALLED,
    reason="node/npx or the extension's node_modules are missing: npm ci --prefix editors/vscode")


# ---- the generated grammar --------------------------------------------------------------

def test_the_committed_grammar_is_the_generated_one():
    assert textmate.GRAMMAR.read_text(encoding="utf-8") == textmate.render(), \
        "stale: python -m mtl_dsl.tools.editor.textmate"


def _generator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtl_dsl.tools.editor.textmate", *args],
                          cwd=ROOT, capture_output=True, text=True)


def test_check_fails_on_a_stale_grammar(tmp_path):
    stale = tmp_path / "mtl.tmLanguage.json"
    assert _generator("--check").returncode == 0
    assert _generator("--check", "--output", str(stale)).returncode == 1  # no file yet
    assert _generator("--output", str(stale)).returncode == 0
    assert _generator("--check", "--output", str(stale)).returncode == 0
    text = stale.read_text(encoding="utf-8")
    assert "|mlp|" in text
    stale.write_text(text.replace("|mlp|", "|"), encoding="utf-8")  # a kind forgotten
    done = _generator("--check", "--output", str(stale))
    assert done.returncode == 1 and "stale" in done.stderr


def test_the_generator_imports_no_torch():
    script = ("import sys; from mtl_dsl.tools.editor import textmate; textmate.render(); "
              "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", script], cwd=ROOT).returncode == 0


def _rules(key: str) -> list[dict]:
    return GRAMMAR["repository"][key]["patterns"]


def _matching(key: str, text: str) -> re.Match | None:
    """The first rule of a repository entry that matches at the start of `text` (the patterns
    are Oniguruma; the ones generated here are also Python regexes)."""
    for rule in _rules(key):
        if "match" in rule and (m := re.compile(rule["match"]).match(text)):
            return m
    return None


def test_every_kind_of_every_role_is_a_support_function():
    kinds = {k for role, entries in reg.REGISTRY.items() if role != "train" for k in entries}
    assert kinds and set(DISTRIBUTIONS) <= set(textmate.language_facts().kinds)
    for kind in sorted(kinds | set(DISTRIBUTIONS)):
        m = _matching("kind", f"{kind}(x)")
        assert m and m.group(0) == kind, kind
    assert _matching("kind", "mlpx(") is None and _matching("kind", "softmax_g") is None


def test_every_parameter_is_a_variable_parameter_and_literals_are_constants():
    params = {p for role in reg.REGISTRY.values() for kind in role.values()
              for p in kind.params.model_fields}
    assert {"act", "dropout", "levels", "epochs", "label", "stop"} <= params
    for param in sorted(params | {"name"}):
        m = _matching("kwarg", f"{param}=1")
        assert m and m.group(1) == param, param
    relu = _matching("kwarg", "act=relu, dropout=0.1")
    assert relu and relu.group(3) == "relu"
    assert _matching("kwarg", "act=relux").group(3) is None  # not a value of `act`
    assert _matching("kwarg", "label=binary").lastindex == 2  # task kinds are not labels' values
    assert _matching("kwarg", "header=false").group(3) == "false"  # booleans
    assert _matching("kwarg", "act == 1") is None  # a comparison is not a keyword argument


def test_every_statement_keyword_of_the_parser_has_a_rule():
    heads = [r["begin"] for r in _rules("statement")]
    for keyword in ("model", "data", "feature", "label", "input", "experts", "gate", "tower",
                    "task", "transfer", "extract", "weighting", "train"):
        assert any(re.match(h, f"{keyword} x") for h in heads), keyword
    assert set(textmate.language_facts().connectives) == {"over", "from"}


# ---- language configuration, manifest ---------------------------------------------------

def test_the_language_configuration():
    config = json.loads((EXT / "language-configuration.json").read_text(encoding="utf-8"))
    assert config["comments"] == {"lineComment": "#"}
    assert ["(", ")"] in config["brackets"] and ["[", "]"] in config["brackets"]
    assert {p["open"] for p in config["autoClosingPairs"]} == {"(", "[", '"'}
    assert ['"', '"'] in config["surroundingPairs"]
    word = re.compile(config["wordPattern"])
    assert word.fullmatch("t_ctr2") and word.fullmatch("1e-3") and not word.fullmatch("p.a")
    indent = re.compile(config["indentationRules"]["increaseIndentPattern"])
    # a call `mtl fmt` wrapped: its first line opens a bracket it does not close
    lines = (ROOT / "specs" / "census_mmoe.mtl").read_text(encoding="utf-8").splitlines()
    opened = [line for line in lines if line.rstrip().endswith("(")]
    assert opened and all(indent.search(line) for line in opened)
    assert not indent.search("experts e[8] = mlp(x, 16)")  # a closed call indents nothing
    assert not indent.search("tower t_a = mlp(p.a, 8)  # (a comment")


def test_the_manifest():
    assert re.fullmatch(r"\^1\.\d+\.\d+", PACKAGE["engines"]["vscode"])
    assert PACKAGE["main"] == "./dist/extension.js"
    assert "onLanguage:mtl" in PACKAGE["activationEvents"]
    contributes = PACKAGE["contributes"]
    (language,) = contributes["languages"]
    assert language["id"] == "mtl" and language["extensions"] == [".mtl"]
    assert (EXT / language["configuration"]).is_file()
    (grammar,) = contributes["grammars"]
    assert grammar["scopeName"] == GRAMMAR["scopeName"] == "source.mtl"
    assert (EXT / grammar["path"]).resolve() == textmate.GRAMMAR
    assert (EXT / contributes["snippets"][0]["path"]).is_file()
    settings = contributes["configuration"]["properties"]
    assert settings["mtl.server.command"]["type"] == "array"
    assert settings["mtl.server.args"]["type"] == "array"
    assert settings["mtl.trace.server"]["enum"] == ["off", "messages", "verbose"]
    assert [c["command"] for c in contributes["commands"]] == ["mtl.restartServer"]
    # the client's id `mtl` is what makes `mtl.trace.server` its trace setting
    source = (EXT / "src" / "extension.js").read_text(encoding="utf-8")
    assert "new LanguageClient('mtl'," in source and "'mtl.restartServer'" in source
    restricted = PACKAGE["capabilities"]["untrustedWorkspaces"]["restrictedConfigurations"]
    assert set(restricted) == {"mtl.server.command", "mtl.server.args"}


def test_node_dependencies_are_pinned_locked_and_ignored():
    lock = json.loads((EXT / "package-lock.json").read_text(encoding="utf-8"))
    for group in ("dependencies", "devDependencies"):
        for name, version in PACKAGE[group].items():
            assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned: {version}"
            assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert "node_modules/" in ignored and "*.vsix" in ignored


# ---- snippets ---------------------------------------------------------------------------

@dataclass
class Stop:
    """A tab stop in a parsed snippet: a placeholder (`parts`), a choice or a mirror."""
    number: int
    parts: list | None = None
    options: list[str] | None = None


def _parse(body: str, i: int = 0, until: str = "") -> tuple[list, int]:
    """VS Code's snippet syntax, as far as the snippets use it: `$1`, `${1}`, `${1:default}`
    (nested), `${1|a,b|}` and the escapes `\\$`, `\\}`, `\\\\`; a variable is an error."""
    parts: list = []
    while i < len(body) and body[i] not in until:
        if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in "$}\\":
            parts.append(body[i + 1])
            i += 2
        elif m := re.compile(r"\$(\d+)|\$\{(\d+)\}").match(body, i):
            parts.append(Stop(int(m.group(1) or m.group(2))))
            i = m.end()
        elif m := re.compile(r"\$\{(\d+)\|((?:[^|\\]|\\.)*)\|\}").match(body, i):
            options = [re.sub(r"\\(.)", r"\1", o) for o in re.split(r"(?<!\\),", m.group(2))]
            parts.append(Stop(int(m.group(1)), options=options))
            i = m.end()
        elif m := re.compile(r"\$\{(\d+):").match(body, i):
            inner, i = _parse(body, m.end(), "}")
            parts.append(Stop(int(m.group(1)), parts=inner))
            i += 1
        elif body[i] == "$":
            raise ValueError(f"unsupported snippet syntax at {body[i:i + 20]!r}")
        else:
            parts.append(body[i])
            i += 1
    return parts, i


def _stops(parts: list) -> list[Stop]:
    return [s for p in parts if isinstance(p, Stop)
            for s in [p, *(_stops(p.parts) if p.parts else [])]]


def _render(parts: list, chosen: dict[int, str]) -> str:
    out = []
    for p in parts:
        if not isinstance(p, Stop):
            out.append(p)
        elif p.number in chosen:
            out.append(chosen[p.number])
        elif p.parts is not None:
            out.append(_render(p.parts, chosen))
    return "".join(out)


def expansions(body: str) -> list[str]:
    """The snippet with every placeholder at its default, once per option of each choice
    (the others at their first option); a mirror `$N` repeats what stop N holds."""
    parts, _ = _parse(body)
    stops = _stops(parts)
    defaults = {s.number: s.options[0] if s.options else _render(s.parts, {}) for s in stops
                if s.options or s.parts is not None}
    variants = [{}] + [{s.number: o} for s in stops if s.options for o in s.options[1:]]
    return [_render(parts, {**defaults, **variant}) for variant in variants]


def test_the_snippet_expander():
    assert expansions("a ${1:x ${2:y}} $2 ${3|p,q\\,r|} $3$0 \\$") == \
        ["a x y y p p $", "a x y y q,r q,r $"]
    with pytest.raises(ValueError):
        expansions("model $TM_FILENAME")


SNIPPETS = json.loads((EXT / "snippets" / "mtl.json").read_text(encoding="utf-8"))
# A minimal complete spec; a fragment snippet replaces the line of its own statement.
HOST = """model host
data synthetic.correlated(rows=1000, seed=1)
feature x = dense(100)
label y1
experts e[4] = mlp(x, 32)
gate g_a = softmax(x) over e
tower t_a = mlp(g_a, 8)
task a: regression(label=y1) from t_a
train epochs=1
"""


def _errors(text: str) -> list[str]:
    """`mtl check`'s errors, syntax errors included (warnings are fine in a snippet)."""
    try:
        found = check_text(text).diagnostics
    except MtlError as err:
        found = err.diagnostics
    return [f"{d.code} {d.span}: {d.message}" for d in found if d.severity == "error"]


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_every_snippet_expands_to_a_valid_spec(name):
    body = "\n".join(SNIPPETS[name]["body"])
    texts = expansions(body)
    assert texts
    for text in texts:
        keyword = text.split()[0]
        if keyword == "model":
            spec = text
        else:
            lines = HOST.splitlines(keepends=True)
            slot = next(i for i, line in enumerate(lines) if line.split()[0] == keyword)
            lines[slot] = text.rstrip("\n") + "\n"
            spec = "".join(lines)
        assert _errors(spec) == [], spec


# ---- node: the grammar cases, the server lookup, the build --------------------------------

def _grammar_test(*cases: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NPX, "--no-install", "vscode-tmgrammar-test", "--compact",
                           *map(str, cases)], cwd=EXT, capture_output=True, text=True, timeout=120)


@needs_modules
def test_the_grammar_cases_pass():
    cases = sorted((EXT / "tests" / "grammar").glob("*.mtl"))
    assert len(cases) >= 3
    done = _grammar_test(*cases)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_modules
def test_a_wrong_scope_fails_the_grammar_cases(tmp_path):
    case = tmp_path / "wrong.mtl"
    case.write_text('# SYNTAX TEST "source.mtl"\nfeature x = dense(4)\n'
                    "#           ^^^^^ keyword.other.statement.mtl\n", encoding="utf-8")
    done = _grammar_test(case)
    assert done.returncode != 0 and "keyword.other.statement.mtl" in done.stdout + done.stderr
    case.write_text(case.read_text(encoding="utf-8").replace("keyword.other.statement",
                                                              "support.function"))
    assert _grammar_test(case).returncode == 0


def _resolve(where: dict, platform: str | None = None) -> dict:
    """Run src/server.js's lookup under node; `platform` fakes another OS with a fake disk."""
    script = ("const s = require('./src/server.js'); const w = JSON.parse(process.argv[1]);"
              "if (w.files) { const f = new Set(w.files); w.exists = (p) => f.has(p); }"
              "process.stdout.write(JSON.stringify(s.resolveServer(w)));")
    done = subprocess.run([NODE, "-e", script, json.dumps({**where, "platform": platform}
                                                          if platform else where)],
                          cwd=EXT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _executable(path: Path, text: str = "#!/bin/sh\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@needs_node
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX executables")
def test_the_server_command_is_looked_up_in_order(tmp_path):
    ws, other, bin_ = tmp_path / "ws", tmp_path / "other", tmp_path / "bin"
    ws.mkdir()
    on_path = _executable(bin_ / "mtl")
    env = {"PATH": str(bin_)}
    base = {"settings": {}, "folders": [str(ws), str(other)], "trusted": True, "env": env}
    assert _resolve(base) == {"command": str(on_path), "args": ["lsp"], "source": "PATH"}
    venv = _executable(other / "venv" / "bin" / "mtl")
    assert _resolve(base)["command"] == str(venv)
    dot = _executable(ws / ".venv" / "bin" / "mtl")
    assert _resolve(base)["command"] == str(dot)
    _executable(other / ".venv" / "bin" / "mtl")
    assert _resolve(base)["command"] == str(dot)  # the first folder first
    assert _resolve({**base, "trusted": False})["command"] == str(on_path)
    extra = {**base, "settings": {"args": ["--verbose"]}}
    assert _resolve(extra)["args"] == ["lsp", "--verbose"]
    mine = {**base, "settings": {"command": [str(on_path), "lsp", "-v"], "args": ["--x"]}}
    assert _resolve(mine) == {"command": str(on_path), "args": ["lsp", "-v", "--x"],
                              "source": "the setting mtl.server.command"}
    named = {**base, "settings": {"command": ["mtl", "lsp"]}}  # a bare name: on PATH
    assert _resolve(named)["command"] == str(on_path)
    relative = {**base, "settings": {"command": [".venv/bin/mtl", "lsp"]}}  # to the folders
    assert _resolve(relative)["command"] == str(dot)
    missing = {**base, "settings": {"command": ["/nowhere/mtl", "lsp"]}}
    assert "/nowhere/mtl" in _resolve(missing)["error"]
    (ws / ".venv" / "bin" / "mtl").chmod(0o644)  # not executable: skipped
    assert _resolve(base)["command"] == str(other / ".venv" / "bin" / "mtl")
    nothing = {"settings": {}, "folders": [], "trusted": True, "env": {"PATH": ""}}
    assert "No mtl command was found" in _resolve(nothing)["error"]


@needs_node
def test_the_windows_lookup():
    where = {"settings": {}, "folders": ["C:\\ws"], "trusted": True,
             "env": {"Path": "C:\\py\\Scripts", "PATHEXT": ".COM;.EXE"},
             "files": ["C:\\ws\\venv\\Scripts\\mtl.exe", "C:\\py\\Scripts\\mtl.exe"]}
    assert _resolve(where, "win32")["command"] == "C:\\ws\\venv\\Scripts\\mtl.exe"
    assert _resolve({**where, "folders": []}, "win32")["command"] == "C:\\py\\Scripts\\mtl.exe"


FAKE_SERVER = """import json, sys
log = open(sys.argv[1], "a")
while True:
    headers = {}
    while (line := sys.stdin.buffer.readline().strip()):
        key, _, value = line.decode().partition(":")
        headers[key.lower()] = value.strip()
    if not headers:
        break
    msg = json.loads(sys.stdin.buffer.read(int(headers["content-length"])))
    print(msg.get("method"), *sys.argv[2:], file=log, flush=True)
    if "id" in msg:
        result = {"capabilities": {}} if msg["method"] == "initialize" else None
        body = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode()
        sys.stdout.buffer.write(b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
        sys.stdout.buffer.flush()
    if msg.get("method") == "exit":
        break
"""


def _activate(where: dict) -> list[list]:
    """Activate the built bundle outside VS Code (editors/vscode/tests/activate.js)."""
    done = subprocess.run([NODE, "tests/activate.js", "dist/extension.js", json.dumps(where)],
                          cwd=EXT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def bundle() -> Path:
    """dist/extension.js, bundled afresh from src/ (a second or so)."""
    subprocess.run([NPX, "--no-install", "esbuild", "--log-level=warning", "src/extension.js",
                    "--bundle", "--platform=node", "--format=cjs", "--target=node20",
                    "--external:vscode", "--outfile=dist/extension.js"], cwd=EXT, check=True)
    return EXT / "dist" / "extension.js"


@needs_modules
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX executables")
def test_the_client_starts_restarts_and_stops_the_server(bundle, tmp_path):
    calls = tmp_path / "calls.txt"
    _executable(tmp_path / "ws" / ".venv" / "bin" / "mtl",
                f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "server.py"}" "{calls}" "$@"\n')
    (tmp_path / "server.py").write_text(FAKE_SERVER)
    log = _activate({"folders": [str(tmp_path / "ws")], "trusted": True, "restart": True,
                     "settings": {"mtl.server.args": ["--flag"]}})
    assert ["command", "mtl.restartServer"] in log
    assert [e for e in log if e[0] in ("warning", "error", "exception")] == []
    assert [e[1] for e in log if e[0] == "status"].count("mtl lsp") == 2  # running, twice
    methods = calls.read_text().splitlines()
    assert methods.count("initialize lsp --flag") == 2  # `mtl lsp` + args, no --stdio
    assert methods.count("shutdown lsp --flag") == 2 and methods[-1] == "exit lsp --flag"


@needs_modules
def test_the_client_says_how_to_install_a_missing_server(bundle, tmp_path):
    for settings, named in (({}, "No mtl command was found"),
                            ({"mtl.server.command": ["/nowhere/mtl", "lsp"]}, "/nowhere/mtl")):
        log = _activate({"folders": [str(tmp_path)], "trusted": True, "settings": settings,
                         "path": ""})
        (warning,) = [e for e in log if e[0] == "warning"]
        assert named in warning[1] and "pip install 'mtl-dsl[lsp]'" in warning[1]
        assert "mtl.server.command" in warning[1] and warning[2] == ["Open Settings", "Show Output"]
        assert ["status", "mtl lsp: not running"] in log


@needs_modules
def test_the_build_bundles_and_packages_only_what_the_extension_needs(tmp_path):
    done = subprocess.run(["bash", str(EXT / "build.sh"), "--no-install", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    bundle = EXT / "dist" / "extension.js"
    assert bundle.is_file()
    (vsix,) = tmp_path.glob("*.vsix")
    assert vsix.name == f"{PACKAGE['name']}-{PACKAGE['version']}.vsix"
    names = set(zipfile.ZipFile(vsix).namelist())
    files = {n.removeprefix("extension/") for n in names if n.startswith("extension/")}
    assert files == {"package.json", "readme.md", "LICENSE.txt", "language-configuration.json",
                     "syntaxes/mtl.tmLanguage.json", "snippets/mtl.json", "dist/extension.js"}
    # the packaged bundle carries the client: it starts (and fails to find) a server
    log = _activate({"settings": {"mtl.server.command": ["/nowhere/mtl"]}, "path": ""})
    assert any(e[0] == "warning" and "/nowhere/mtl" in e[1] for e in log)
