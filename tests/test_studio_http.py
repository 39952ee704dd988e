"""mtl studio over HTTP, without a browser: the real server on a free port (a thread of this
process), its token and loopback checks, the folder it may not leave, the analysis it answers
with (the same diagnostics as `mtl check`), and training followed through server-sent events
(docs/studio.md)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="the studio's tests need httpx (the dev extra)")
pytest.importorskip("starlette", reason="mtl studio needs the extra mtl-dsl[studio]")

from conftest import ROOT  # noqa: E402

from mtl_dsl.tools.studio.guard import MAX_BODY  # noqa: E402
from mtl_dsl.tools.studio.server import start_in_thread  # noqa: E402

NAME = "mmoe $(touch pwned).mtl"  # a shell would run it; the studio's argument lists do not


def tiny_spec(folder: Path, name: str = NAME, rows: int = 600, epochs: int = 2,
              monitor: bool = True) -> Path:
    """specs/mmoe.mtl on a few rows, trained in seconds."""
    text = (ROOT / "specs" / "mmoe.mtl").read_text(encoding="utf-8")
    text = text.replace("rows=20000", f"rows={rows}").replace("epochs=5", f"epochs={epochs}")
    if not monitor:
        text = text.replace(" monitor=a.mse patience=3", "")
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def studio(tmp_path):
    tiny_spec(tmp_path)
    running = start_in_thread(tmp_path)
    client = httpx.Client(base_url=running.base, headers={"X-Mtl-Token": running.token},
                          timeout=60)
    yield running, client
    client.close()
    running.stop()


def events(client, url: str, until: str = "end", limit: float = 90.0) -> list[tuple[str, dict]]:
    """The server-sent events of a stream, up to and including the first `until` event."""
    out, kind = [], None
    deadline = time.monotonic() + limit
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            assert time.monotonic() < deadline, f"no '{until}' event in {limit} s: {out[-3:]}"
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
                if kind == until and (until != "job" or out[-1][1]["state"] != "running"):
                    return out
    return out


# ---- safety ---------------------------------------------------------------------------

def test_every_request_needs_the_token(studio):
    running, client = studio
    bare = httpx.Client(base_url=running.base, timeout=10)
    for path in ("/", "/api/state", "/static/studio.js", "/api/runs", "/api/runs/x/events"):
        assert bare.get(path).status_code == 403, path
        assert bare.get(path, params={"token": running.token[:-1] + "x"}).status_code == 403
    assert bare.post("/api/spec", json={"path": NAME, "text": ""}).status_code == 403
    assert bare.get("/api/state", params={"token": running.token}).status_code == 200
    assert client.get("/api/state").json()["specs"] == [NAME]
    page = bare.get("/", params={"token": running.token})
    assert page.status_code == 200 and "access-control-allow-origin" not in page.headers
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"


def test_another_host_name_is_refused(studio):
    """A DNS name rebound to 127.0.0.1 reaches the port but not the studio."""
    running, client = studio
    assert client.get("/api/state", headers={"Host": "evil.example:80"}).status_code == 403
    assert client.get("/api/state", headers={"Host": "localhost"}).status_code == 200


def test_a_body_over_the_limit_is_refused(studio):
    running, client = studio
    big = "#" * (MAX_BODY + 1)
    response = client.post("/api/spec", json={"path": NAME, "text": big})
    assert response.status_code == 413
    assert "#" * 1000 not in (running.studio.folder.root / NAME).read_text()

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    assert client.post("/api/check", content=chunks()).status_code == 413


def test_no_file_outside_the_folder_is_read_or_written(studio, tmp_path_factory):
    running, client = studio
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.mtl").write_text("model secret\n")
    (running.studio.folder.root / "link.mtl").symlink_to(outside / "secret.mtl")
    for path in ("../outside/secret.mtl", str(outside / "secret.mtl"), "link.mtl",
                 "a/../../secret.mtl"):
        assert client.get("/api/spec", params={"path": path}).status_code == 403, path
        saved = client.post("/api/spec", json={"path": path, "text": "model x\n"})
        assert saved.status_code == 403, path
    assert (outside / "secret.mtl").read_text() == "model secret\n"
    assert client.post("/api/spec", json={"path": "x.py", "text": "1"}).status_code == 404
    assert not (running.studio.folder.root / "x.py").exists()


def test_saving_is_atomic_and_keeps_the_mode(studio):
    running, client = studio
    spec = running.studio.folder.root / NAME
    os.chmod(spec, 0o640)
    text = spec.read_text().replace("epochs=2", "epochs=3")
    assert client.post("/api/spec", json={"path": NAME, "text": text}).status_code == 200
    assert spec.read_text() == text
    assert stat.S_IMODE(spec.stat().st_mode) == 0o640
    assert [p.name for p in spec.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_the_page_without_scripts_saves_through_its_form(studio):
    """The textarea's form (scripts off) saves and shows `mtl check`'s rendering."""
    running, client = studio
    spec = running.studio.folder.root / NAME
    text = spec.read_text().replace("over e\n", "over ee\n", 1)
    done = client.post(f"/save?token={running.token}", data={"path": NAME, "text": text})
    assert done.status_code == 303 and spec.read_text() == text
    page = client.get(done.headers["location"])
    assert "error[E201]: unknown name &#x27;ee&#x27;" in page.text
    assert "<textarea" in page.text and "over ee" in page.text


# ---- the editor's answers ---------------------------------------------------------------

def test_diagnostics_are_mtl_checks(studio, tmp_path):
    """The page's diagnostics are `mtl check --json`'s: codes, lines, messages and hints."""
    from typer.testing import CliRunner

    from mtl_dsl.tools.cli.main import app

    running, client = studio
    text = (running.studio.folder.root / NAME).read_text()
    bad = text.replace("over e\n", "over ee\n", 1).replace("mlp(x, 16)", "mlp(x, 0)")
    found = client.post("/api/check", json={"path": NAME, "text": bad, "data": True}).json()
    (tmp_path / "bad.mtl").write_text(bad)
    cli = CliRunner().invoke(app, ["check", str(tmp_path / "bad.mtl"), "--json"])
    assert cli.exit_code == 1
    expected = [(d["code"], d["line"], d["message"], d.get("hint"))
                for d in json.loads(cli.stdout)]
    got = [(d["code"], d["span"]["line"], d["message"], d["hint"]) for d in found["diagnostics"]]
    assert got == expected and found["ok"] is False
    assert {c for c, *_ in got} >= {"E201"}


def test_summary_and_diagram_follow_the_text(studio):
    running, client = studio
    text = (running.studio.folder.root / NAME).read_text()
    found = client.post("/api/check", json={"path": NAME, "text": text}).json()
    assert found["ok"] and found["blocks"]["e"]["tasks"] == ["a", "b"]
    assert found["size"]["params"] == sum(b["params"] for b in found["blocks"].values())
    assert found["memory"]["e"] == found["blocks"]["e"]["params"] * 16
    first = client.post("/api/diagram", json={"path": NAME, "text": text}).json()
    assert first["svg"].lstrip().startswith("<?xml") and "<title>g_a</title>" in first["svg"]
    e = first["nodes"]["e"]
    assert text.splitlines()[e["line"] - 1].startswith("experts e[8]")
    assert first["nodes"]["t_a"]["tasks"] == ["a"] and first["nodes"]["a"]["kind"] == "task"
    wider = client.post("/api/diagram", json={"path": NAME,
                                              "text": text.replace("e[8]", "e[3]")}).json()
    assert "×8" in first["svg"] and "×3" in wider["svg"] and "×8" not in wider["svg"]
    broken = client.post("/api/diagram", json={"path": NAME, "text": text + "gate\n"}).json()
    assert broken["svg"] is None


def test_hover_and_completion_are_the_language_servers(studio):
    running, client = studio
    text = (running.studio.folder.root / NAME).read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("experts e["))
    column = text.splitlines()[line - 1].index("mlp") + 2
    hover = client.post("/api/hover", json={"path": NAME, "text": text, "line": line,
                                            "column": column}).json()
    assert hover["markdown"].startswith("**mlp**") and "net kind" in hover["markdown"]
    typed = text + "weighting pc"
    last = typed.count("\n") + 1
    done = client.post("/api/complete", json={"path": NAME, "text": typed, "line": last,
                                              "column": len("weighting pc") + 1}).json()
    labels = [i["label"] for i in done["items"]]
    assert "pcgrad" in labels and done["start"] == len("weighting ") + 1
    assert client.post("/api/hover", json={"path": NAME, "text": text}).status_code == 400


# ---- training ----------------------------------------------------------------------------

def test_train_streams_the_run_folder_and_lists_the_run(studio):
    """Two runs at once, each followed in its own folder (found by its process id)."""
    running, client = studio
    job = client.post("/api/train", json={"path": NAME}).json()
    other = client.post("/api/train", json={"path": NAME}).json()
    assert job["state"] == "running" and job["run"] is None and other["id"] != job["id"]
    got = events(client, f"/api/jobs/{job['id']}/events", until="job")
    second = events(client, f"/api/jobs/{other['id']}/events", until="job")[-1][1]
    records = [d for k, d in got if k == "record"]
    types = [r["type"] for r in records]
    assert types[0] == "start" and types[-1] == "end" and "step" in types
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [0, 1, 2]
    assert all(isinstance(v, float) for r in records if r["type"] == "step"
               for v in r["train_loss"].values())
    final = got[-1][1]
    assert final["state"] == "finished" and final["returncode"] == 0 and final["run"]
    assert second["state"] == "finished" and second["run"] not in (None, final["run"])
    rows = client.get("/api/runs").json()
    assert sorted((r["name"], r["status"], r["epochs_done"]) for r in rows) == \
        sorted([(final["run"], "finished", 2), (second["run"], "finished", 2)])
    assert not (running.studio.folder.root / "pwned").exists()  # no shell ran the name
    replay = events(client, f"/api/runs/{final['run']}/events")
    assert [d for k, d in replay if k == "record"] == records
    detail = client.get(f"/api/runs/{final['run']}").json()
    assert "<svg" in detail["diagram"]["svg"] and "losses.png" in detail["files"]
    png = client.get(f"/api/runs/{final['run']}/files/losses.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get(f"/api/runs/{final['run']}/files/resume.pt").status_code == 404
    assert client.get("/api/runs/..%2F..%2Fetc/events").status_code in (403, 404)


def test_stop_saves_the_run_and_resume_finishes_it(studio):
    running, client = studio
    tiny_spec(running.studio.folder.root, "long.mtl", rows=600, epochs=40, monitor=False)
    job = client.post("/api/train", json={"path": "long.mtl"}).json()
    url, kind = f"/api/jobs/{job['id']}/events", None
    with client.stream("GET", url) as response:
        for line in response.iter_lines():
            kind = line[7:] if line.startswith("event: ") else kind
            if kind == "record" and '"type": "epoch", "epoch": 1' in line:
                assert client.post(f"/api/jobs/{job['id']}/stop").json() == {"stopped": True}
            if kind == "job" and line.startswith("data: ") and \
                    json.loads(line[6:])["state"] != "running":
                final = json.loads(line[6:])
                break
    assert final["state"] == "interrupted" and final["returncode"] == 130
    row = next(r for r in client.get("/api/runs").json() if r["name"] == final["run"])
    assert row["status"] == "interrupted" and row["epochs_done"] < 40
    again = client.post("/api/train", json={"path": "long.mtl", "resume": final["run"]}).json()
    assert again["run"] == final["run"]
    done = events(client, f"/api/jobs/{again['id']}/events", until="job")[-1][1]
    assert done["state"] == "finished", done["output"]
    row = next(r for r in client.get("/api/runs").json() if r["name"] == final["run"])
    assert (row["status"], row["epochs_done"]) == ("finished", 40)
    assert client.post("/api/train", json={"path": "long.mtl", "resume": "../x"}
                       ).status_code == 403


def _fake_run(runs: Path, name: str, spec: Path, weighting: str, seed: int, a: float, b: float
              ) -> None:
    """A finished run folder as training/runs.py leaves it, with chosen best metrics."""
    folder = runs / name
    folder.mkdir(parents=True)
    (folder / "spec.mtl").write_text(spec.read_text())
    best = {"a": {"loss": a, "mse": a}, "b": {"loss": b, "mse": b}}
    records = [{"type": "start", "spec": "mmoe", "seed": seed, "epochs": 1,
                "weighting": weighting, "overrides": []},
               {"type": "epoch", "epoch": 1, "step": 4, "val": best},
               {"type": "end", "best_epoch": 1, "best": best, "epochs_run": 1}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "status.json").write_text(json.dumps({"status": "finished", "epochs": 1,
                                                    "epochs_done": 1, "best": best}))


def test_compare_pairs_runs_by_seed_with_mtl_compares_interval(studio):
    """Δ_t% of the second arm against the first, per seed, flagged only where the 95%
    t-interval of the paired differences excludes 0 (docs/cli.md, "mtl compare")."""
    import math
    import statistics

    running, client = studio
    runs, spec = running.studio.folder.runs, running.studio.folder.root / NAME
    fixed = {1: (1.0, 2.0), 2: (1.1, 2.0), 3: (0.9, 2.0)}
    tuned = {1: (0.8, 1.8), 2: (0.85, 2.3), 3: (0.7, 1.9)}
    for seed in fixed:
        _fake_run(runs, f"f{seed}", spec, "fixed", seed, *fixed[seed])
        _fake_run(runs, f"u{seed}", spec, "uncertainty", seed, *tuned[seed])
    table = client.post("/api/compare", json={"runs": ["f1", "f2", "f3", "u3", "u1", "u2"]}
                        ).json()
    assert table["primary"] == {"a": "mse", "b": "mse"}
    assert [a["label"] for a in table["arms"]] == ["mmoe · fixed", "mmoe · uncertainty"]
    arm = table["arms"][1]
    assert arm["seeds"] == [3, 1, 2]
    for task, i, flag in (("a", 0, "better"), ("b", 1, None)):
        gains = [-100 * (tuned[s][i] - fixed[s][i]) / fixed[s][i] for s in (3, 1, 2)]
        half = 4.302653 * statistics.stdev(gains) / math.sqrt(3)
        mean = statistics.fmean(gains)
        assert arm["delta"][task]["values"] == pytest.approx(gains)
        assert arm["delta"][task]["interval"] == pytest.approx([mean - half, mean + half])
        assert arm["delta"][task]["flag"] == flag
    assert arm["metrics"]["a"]["mse"] == "0.7833 ± 0.0764"
    assert table["arms"][0]["delta"] == {}
    one = client.post("/api/compare", json={"runs": ["f1", "u1"]}).json()
    assert one["arms"][1]["delta"]["a"]["flag"] is None and "no test" in one["rule"]
    assert client.post("/api/compare", json={"runs": ["f1"]}).status_code == 400
