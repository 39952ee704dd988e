"""The `mtl` command end to end, through a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BAD, ROOT

MMOE = ROOT / "specs" / "mmoe.mtl"


def mtl(*args: str, cwd: Path | None = None, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_no_traceback(out: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in out.stdout + out.stderr


def test_check_ok():
    out = mtl("check", str(MMOE))
    assert out.returncode == 0, out.stderr
    assert "ok:" in out.stdout and "2 tasks" in out.stdout


@pytest.mark.parametrize("path", BAD[:6], ids=lambda p: p.stem)
def test_check_bad_spec_exits_1_with_its_diagnostics(path):
    out = mtl("check", str(path))
    assert out.returncode == 1
    assert_no_traceback(out)
    assert f"{path.name}:" in out.stderr or str(path) in out.stderr
    assert "error[E" in out.stderr


def test_check_json_is_machine_readable():
    out = mtl("check", str(next(p for p in BAD if p.stem == "bad_values")), "--json")
    assert out.returncode == 1
    found = json.loads(out.stdout)
    assert [d["code"] for d in found] == ["E301", "E301", "E301"]
    assert found[0]["line"] == 5 and found[0]["column"] == 27


def test_missing_spec_file_is_an_io_error(tmp_path):
    out = mtl("check", str(tmp_path / "nope.mtl"))
    assert out.returncode == 2
    assert_no_traceback(out)
    assert "nope.mtl" in out.stderr


def test_usage_error_exits_2():
    out = mtl("render", str(MMOE))  # -o is required
    assert out.returncode == 2
    assert_no_traceback(out)


def test_render_svg(tmp_path):
    target = tmp_path / "mmoe.svg"
    out = mtl("render", str(MMOE), "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert target.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_render_without_dot_writes_dot_source(tmp_path):
    target = tmp_path / "mmoe.png"
    empty = tmp_path / "bin"
    empty.mkdir()
    out = mtl("render", str(MMOE), "-o", str(target), env={"PATH": str(empty)})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "mmoe.dot").read_text().startswith("digraph")
    assert "graphviz" in out.stderr.lower() and not target.exists()


def test_render_unknown_format_is_a_usage_error(tmp_path):
    out = mtl("render", str(MMOE), "-o", str(tmp_path / "x.jpg"))
    assert out.returncode == 2
    assert ".svg" in out.stderr


def test_compile_prints_blocks_shapes_and_sharing():
    out = mtl("compile", str(MMOE))
    assert out.returncode == 0, out.stderr
    for text in ("e", "g_a", "t_b", "(B, 8, 16)", "a, b"):
        assert text in out.stdout
    summary = json.loads(mtl("compile", str(MMOE), "--json").stdout)
    rows = {r["name"]: r for r in summary["blocks"]}
    assert rows["e"]["shared_by"] == ["a", "b"] and rows["g_a"]["shared_by"] == ["a"]
    assert summary["parameters"] == sum(r["params"] for r in summary["blocks"])


def test_train_writes_a_run_folder(tmp_path):
    out = mtl("compile", str(MMOE), "--train", "--epochs", "1", "--out", str(tmp_path),
              "--quiet", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    run = Path(result["run_dir"])
    assert run.parent == tmp_path
    for name in ("spec.mtl", "metrics.jsonl", "checkpoint.pt", "losses.png"):
        assert (run / name).is_file(), name  # stdout is no terminal: --plots auto waits
    assert set(result["val"]) == {"a", "b"}


def test_weighting_override_is_recorded_in_the_run(tmp_path):
    out = mtl("compile", str(MMOE), "--train", "--epochs", "1", "--out", str(tmp_path),
              "--quiet", "--json", "--weighting", "gradnorm(alpha=1.0)")
    assert out.returncode == 0, out.stderr
    run = Path(json.loads(out.stdout)["run_dir"])
    assert "weighting gradnorm(alpha=1.0)" in (run / "spec.mtl").read_text()
    assert "weighting uncertainty" not in (run / "spec.mtl").read_text()


def test_bad_weighting_override_exits_1(tmp_path):
    out = mtl("compile", str(MMOE), "--train", "--weighting", "gradnrom", "--out", str(tmp_path))
    assert out.returncode == 1
    assert "did you mean 'gradnorm'" in out.stderr
    assert not any(tmp_path.iterdir())


def test_train_on_csv_with_bad_label_exits_1_naming_the_column(tmp_path):
    spec = tmp_path / "s.mtl"
    (tmp_path / "d.csv").write_text("f,y\n1.0,0\n2.0,1\n3.0,2\n4.0,0\n")
    spec.write_text('model s\ndata csv("d.csv")\nfeature f = dense()\nlabel y\n'
                    'tower t = mlp(f, 4)\ntask c: binary(label=y) from t\n')
    out = mtl("compile", str(spec), "--train", "--out", str(tmp_path / "runs"), "--quiet")
    assert out.returncode == 1
    assert_no_traceback(out)
    assert "'y'" in out.stderr or " y " in out.stderr


def test_binary_spec_and_directory_give_clean_errors(tmp_path):
    binary = tmp_path / "bin.mtl"
    binary.write_bytes(b"model m\n\xff\xfe\n")
    out = mtl("check", str(binary))
    assert out.returncode == 1 and "not UTF-8" in out.stderr
    assert_no_traceback(out)
    out = mtl("check", str(tmp_path))
    assert out.returncode == 2 and "directory" in out.stderr.lower()
    assert_no_traceback(out)


@pytest.mark.parametrize("name", ["esmm", "aitm", "metaheac"])
def test_relation_specs_check_render_and_compile(tmp_path, name):
    spec = ROOT / "specs" / f"{name}.mtl"
    assert mtl("check", str(spec)).returncode == 0
    out = mtl("render", str(spec), "-o", str(tmp_path / f"{name}.svg"))
    assert out.returncode == 0, out.stderr
    out = mtl("compile", str(spec), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["parameters"] > 0


@pytest.mark.parametrize("enabled", [True, False])
def test_commands_run_in_process_leave_the_collector_as_the_caller_set_it(tmp_path, enabled):
    """The collector's policy is the process entry's (tools/cli/entry.py): a command run in
    someone else's process (a test, a notebook) neither turns it on nor off nor freezes
    anything, also after a failure."""
    import gc

    from typer.testing import CliRunner
    from mtl_dsl.tools.cli.main import app

    bad = tmp_path / "bad.mtl"
    bad.write_text("model m\nfoo\n")
    (gc.enable if enabled else gc.disable)()
    try:
        frozen = gc.get_freeze_count()
        for args, code in ((["check", str(MMOE)], 0), (["check", str(bad)], 1),
                           (["render", str(MMOE), "-o", str(tmp_path / "m.dot")], 0)):
            assert CliRunner().invoke(app, args).exit_code == code
            assert (gc.isenabled(), gc.get_freeze_count()) == (enabled, frozen)
    finally:
        gc.enable()


@pytest.mark.parametrize("enabled", [True, False])
def test_check_text_leaves_the_collector_alone(enabled):
    """A library call (an editor's language server checks on every edit) changes no
    interpreter-wide state: the collector is as the caller set it while the check runs (seen
    from the column lookup it calls in the middle) and afterwards, and nothing is frozen;
    also for a search space (each candidate checked) and for a spec with errors."""
    import gc

    from mtl_dsl.language.check import check_text

    during = []

    def columns(source, base_dir) -> list[str]:
        during.append(gc.isenabled())
        return ["income", "marital"]

    texts = [(ROOT / "specs" / name).read_text() for name in
             ("census_mmoe.mtl", "tuning/census_mmoe_space.mtl", "mmoe.mtl")]
    (gc.enable if enabled else gc.disable)()
    try:
        frozen = gc.get_freeze_count()
        for text in (*texts, texts[2].replace("over e", "over nowhere")):
            check_text(text, columns=columns)
            assert (gc.isenabled(), gc.get_freeze_count()) == (enabled, frozen)
    finally:
        gc.enable()
    assert len(during) >= 2 and set(during) == {enabled}


@pytest.mark.parametrize("args", [["check", "specs/mmoe.mtl"],
                                  ["compile", "specs/mmoe.mtl", "--json"]], ids=lambda a: a[0])
def test_the_mtl_process_sets_one_collector_policy_at_its_entry(args):
    """tools/cli/entry.py, for every command alike: no collection while the command line's
    modules import; collections while the command runs, with that start-up heap frozen out
    of them; at exit what is alive frozen too, so the last collection skips it."""
    code = """
import atexit, gc, json, sys

def phase():
    main = sys.modules.get("mtl_dsl.tools.cli.main")
    return "start" if main is None else "importing" if not hasattr(main, "main") else "command"

seen = []  # (phase, frozen objects) at each collection
gc.callbacks.append(lambda step, _: step == "start"
                    and seen.append((phase(), gc.get_freeze_count())))

def report():
    frozen = [f for p, f in seen if p == "command"]
    print(json.dumps([sorted({p for p, _ in seen} - {"start"}), min(frozen, default=0) > 0,
                      gc.get_freeze_count() > max(frozen, default=0)]))

atexit.register(report)  # before the entry's own hook, so run after it (last in, first out)
sys.argv = ["mtl", *sys.argv[1:]]
from mtl_dsl.tools.cli.entry import run
run()
"""
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [["command"], True, True]


@pytest.mark.parametrize("args, code", [(["check", "specs/ple.mtl"], 141),
                                        (["compile", "specs/mmoe.mtl"], 1)])
def test_a_reader_that_closes_the_pipe_gets_no_error_message(args, code):
    """`mtl check spec | head -1`: the reader has gone; no 'internal error'. Exit 141 (128 +
    SIGPIPE, as git); a table printed by rich exits 1 through rich's own handler."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "mtl_dsl", *args], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the command writes anything
    err = child.stderr.read().decode()
    assert child.wait() == code
    assert err == ""


@pytest.mark.parametrize("given, seen", [(None, "__all__"), ("", ""), ("logfire", "logfire")])
def test_the_mtl_process_turns_pydantic_plugins_off_unless_told(given, seen):
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if given is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = given
    code = ("import os, sys\nsys.argv = ['mtl', 'check', 'specs/mmoe.mtl']\n"
            "from mtl_dsl.tools.cli.entry import run\n"
            "try:\n    run()\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print(repr(os.environ['PYDANTIC_DISABLE_PLUGINS']))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == repr(seen)
