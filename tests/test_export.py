"""`mtl export` and `mtl predict --model`: every shipped spec (and a spec with sequence,
multiclass and regression parts), trained tiny once, exported to ONNX, torch.export and an
ejected .py file, predicts on real rows what the checkpoint predicts."""

from __future__ import annotations

import ast
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from conftest import ROOT, SPECS
from mtl_dsl.api import check_file
from mtl_dsl.data.frames import load as load_data
from mtl_dsl.tools.serving import artefacts, bundle as serving
from mtl_dsl.tools.serving.export import export_run
from mtl_dsl.tools.serving.signature import model_inputs
from mtl_dsl.tools.serving.predict import predictions
from mtl_dsl.training.checkpoints import load_checkpoint
from mtl_dsl.training.loop import train

EXTRA = """model kinds
data csv("rows.csv", split=[0.7, 0.3])
feature city = sparse(dim=4)
feature shop = sparse(hash=16, dim=4)
feature hist = sequence(share=city, pool=mean, max_len=3)
feature bag = sequence(share=shop, pool=sum, max_len=4, sep=";")
feature age = dense(norm=log, missing=mean)
feature spend = dense(norm=minmax, missing=zero)
label click, stars, value
input x = concat(city, shop, hist, bag, age, spend)
experts e[3] = mlp(x, 16, 8, norm=layer)
gate g1 = softmax(x, top_k=2, noise=0.1, balance=0.01) over e
gate g2 = softmax(x, temperature=2.0) over e
tower t1 = mlp(g1, 8, norm=batch, dropout=0.1)
tower t2 = mlp(g2, 8, act=gelu)
tower t3 = mlp(g2, 4)
task ctr: binary(label=click) from t1
task rating: multiclass(label=stars, classes=3) from t2
task worth: regression(label=value) from t3
train epochs=1 batch=64 seed=3
"""
CITIES = np.array(["Rome", "Oslo", "Lima", "Paris", "Quito"])


def _extra_rows(folder: Path, n: int = 400) -> None:
    rng = np.random.default_rng(1)
    lines = ["city,shop,hist,bag,age,spend,click,stars,value"]
    for i in range(n):
        hist = "|".join(rng.choice(CITIES, rng.integers(0, 5)))
        bag = ";".join(f"s{k}" for k in rng.integers(0, 30, rng.integers(0, 6)))
        age = "" if i % 17 == 0 else f"{rng.uniform(18, 80):.1f}"
        spend = "" if i % 13 == 0 else f"{rng.normal(50, 20):.2f}"
        lines.append(f"{rng.choice(CITIES)},s{rng.integers(0, 40)},{hist},{bag},{age},"
                     f"{spend},{rng.integers(0, 2)},{rng.integers(0, 3)},{rng.normal():.3f}")
    (folder / "rows.csv").write_text("\n".join(lines) + "\n")


def tiny_spec(spec: Path, folder: Path) -> Path:
    """The spec trained tiny: 300 synthetic rows, 1 epoch; a vendored data file (specs/data/) sampled."""
    text = re.sub(r"epochs=\d+", "epochs=1", re.sub(r"rows=\d+", "rows=300", spec.read_text()))
    found = re.search(r'csv\(\s*"([^"]+)"', text)  # `csv(` may wrap (mtl fmt)
    if found:
        source = (spec.parent / found.group(1)).resolve()
        if source.suffix == ".gz":  # census: its first 600 rows
            with gzip.open(source, "rt") as f:
                sample = folder / f"{spec.stem}.csv"
                sample.write_text("".join(next(f) for _ in range(600)))
            source = sample
        text = text.replace(found.group(0), f'csv("{source}"')
    path = folder / spec.name
    path.write_text(text)
    return path


NAMES = [s.stem for s in SPECS] + ["kinds"]


@pytest.fixture(scope="module", params=NAMES)
def exported(request, tmp_path_factory):
    """(checkpoint, real rows, {suffix: artefact}) of one spec, trained and exported once."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "kinds":
        _extra_rows(folder)
        (folder / "kinds.mtl").write_text(EXTRA)
        path = folder / "kinds.mtl"
    else:
        path = tiny_spec(ROOT / "specs" / f"{request.param}.mtl", folder)
    checked = check_file(path).raise_for_errors()
    torch.manual_seed(0)
    result = train(checked.spec, checked.graph, out_dir=folder / "runs", progress=False)
    ck = load_checkpoint(result.checkpoint)
    frame = load_data(ck.spec)
    files = {s: export_run(ck, folder / f"model{s}") for s in (".onnx", ".pt2", ".py")}
    return ck, frame, files


def _reference(ck, frame) -> dict[str, np.ndarray]:
    return predictions(ck, frame)


def _close(got: dict, want: dict, atol: float) -> None:
    assert list(got) == list(want)
    for k in want:
        assert got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=atol, err_msg=k)


def test_onnx_with_the_bundle_predicts_what_the_checkpoint_does(exported):
    ck, frame, files = exported
    got = serving.onnx_predictions(files[".onnx"], frame, batch=97)  # batches of 97 and less
    _close(got, _reference(ck, frame), 1e-5)


def test_exported_program_predicts_what_the_checkpoint_does(exported):
    ck, frame, files = exported
    _close(artefacts.frame_predictions(files[".pt2"], ck, frame, batch=101),
           _reference(ck, frame), 1e-6)
    one = {k: v[:1] for k, v in frame.items()}  # the batch axis is dynamic down to 1
    _close(artefacts.frame_predictions(files[".pt2"], ck, one), _reference(ck, one), 1e-6)


def test_ejected_file_loads_the_weights_strictly_and_predicts_the_same(exported):
    ck, frame, files = exported
    _close(artefacts.frame_predictions(files[".py"], ck, frame), _reference(ck, frame), 1e-6)


def test_the_bundle_matches_its_schema_and_encodes_like_the_checkpoint(exported):
    ck, frame, files = exported
    bundle = json.loads(serving.bundle_path(files[".onnx"]).read_text())
    jsonschema.validate(bundle, json.loads(serving.SCHEMA.read_text()))
    assert [i["name"] for i in bundle["inputs"]] == \
        [i["name"] for i in model_inputs(ck.model, ck.encoders)]
    ours, theirs = serving.BundleEncoder(bundle).encode(frame), ck.encoders.encode(frame)
    for name, x in ours.items():
        assert x.dtype == theirs[name].dtype, name
        np.testing.assert_array_equal(x, theirs[name], err_msg=name)


def test_the_ejected_file_imports_torch_only(exported):
    ck, _, files = exported
    tree = ast.parse(files[".py"].read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom)}
    assert imported <= {"math", "torch"}, imported
    text = files[".py"].read_text()
    assert f"# model {ck.spec.name}" in text  # the spec is the header comment
    code = [line for line in text.splitlines() if not line.startswith("#")]  # not the spec
    assert max(len(line) for line in code) <= 99


def test_the_bundle_rejects_what_the_schema_forbids():
    schema = json.loads(serving.SCHEMA.read_text())
    bad = {"format": "mtl-dsl serving bundle", "version": 1, "model": "m", "inputs": [],
           "outputs": [], "features": [{"name": "a", "kind": "sparse", "columns": ["a"]}],
           "vocabs": {}, "scalers": {}}
    with pytest.raises(jsonschema.ValidationError, match="table"):
        jsonschema.validate(bad, schema)


# ---- outside this package, and through the CLI --------------------------------

BLOCK = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
         "        if name.split('.')[0] in {blocked}:\n"
         "            raise ImportError(f'{{name}} is blocked in this test')\n"
         "sys.meta_path.insert(0, Block())\n")


@pytest.fixture(scope="module")
def esmm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    path = tiny_spec(ROOT / "specs" / "esmm.mtl", folder)
    checked = check_file(path).raise_for_errors()
    result = train(checked.spec, checked.graph, out_dir=folder / "runs", progress=False)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(load_data(checked.spec)), folder / "rows.parquet")
    return folder, result


def mtl(*args, cwd, blocked=()) -> subprocess.CompletedProcess:
    code = BLOCK.format(blocked=set(blocked)) if blocked else "import sys\n"
    code += f"sys.path.insert(0, {str(ROOT)!r})\nsys.argv = ['mtl', *{list(map(str, args))!r}]\n"
    code += "import cli\ncli.main()\n"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=240)


def test_the_ejected_file_runs_where_mtl_dsl_cannot_be_imported(esmm, tmp_path):
    folder, result = esmm
    ck = load_checkpoint(result.checkpoint)
    export_run(ck, tmp_path / "esmm_model.py")
    names = [i["name"] for i in model_inputs(ck.model, ck.encoders)]
    batch = ck.encode(load_data(ck.spec), labels=False).tensors
    torch.save({"state": ck.model.state_dict(), "x": [batch[n] for n in names],
                "want": ck.model.predict(batch)}, tmp_path / "data.pt")
    code = BLOCK.format(blocked={"mtl_dsl"}) + (
        "import torch\nfrom esmm_model import Model\nd = torch.load('data.pt')\n"
        "m = Model(); m.load_state_dict(d['state'], strict=True); m.eval()\n"
        "got = m(*d['x'])\nassert list(got) == list(d['want'])\n"
        "for k in got: torch.testing.assert_close(got[k], d['want'][k], rtol=0, atol=1e-6)\n"
        "import mtl_dsl\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert "mtl_dsl is blocked in this test" in out.stderr, out.stderr  # ran to the end


def test_export_then_predict_through_onnx_without_torch(esmm, monkeypatch):
    folder, result = esmm
    out = cli("export", "esmm.mtl", "--checkpoint", result.run_dir, "-o", "m.onnx", cwd=folder,
              monkeypatch=monkeypatch)
    assert out.exit_code == 0 and "wrote m.onnx" in out.output, out.output
    assert "torchvision" not in out.output
    got = mtl("predict", "esmm.mtl", "--checkpoint", result.run_dir, "--data", "rows.parquet",
              "--model", "m.onnx", "--out", "onnx.parquet", "--json", cwd=folder,
              blocked={"torch"})
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["rows"] == 300
    import pyarrow.parquet as pq

    ck = load_checkpoint(result.checkpoint)
    table = pq.read_table(folder / "onnx.parquet")
    _close({k: table[k].to_numpy() for k in table.column_names},
           predictions(ck, load_data(ck.spec)), 1e-5)


def cli(*args, cwd, monkeypatch):
    """The CLI in this process (a subprocess costs seconds of imports)."""
    from typer.testing import CliRunner

    from mtl_dsl.tools.cli.main import app

    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, list(map(str, args)))


@pytest.mark.parametrize("suffix", [".pt2", ".py"])
def test_predict_through_pt2_and_py_from_the_cli(esmm, suffix, monkeypatch):
    folder, result = esmm
    out = cli("export", "esmm.mtl", "--checkpoint", result.run_dir, "-o", f"m{suffix}",
              cwd=folder, monkeypatch=monkeypatch)
    assert out.exit_code == 0, out.output
    got = cli("predict", "esmm.mtl", "--checkpoint", result.run_dir, "--data", "rows.parquet",
              "--model", f"m{suffix}", "--out", f"p{suffix}.parquet", cwd=folder,
              monkeypatch=monkeypatch)
    assert got.exit_code == 0 and "300 predictions" in got.output, got.output
    import pyarrow.parquet as pq

    ck = load_checkpoint(result.checkpoint)
    want = predictions(ck, load_data(ck.spec))
    table = pq.read_table(folder / f"p{suffix}.parquet")
    _close({k: table[k].to_numpy() for k in table.column_names}, want, 1e-6)


def test_bad_export_and_artefact_requests_get_clear_errors(esmm, monkeypatch):
    folder, result = esmm
    run = result.run_dir

    def call(*args):
        return cli(*args, cwd=folder, monkeypatch=monkeypatch)

    out = call("export", "esmm.mtl", "--checkpoint", run, "-o", "m.txt")
    assert out.exit_code == 2 and "-o must end in .onnx, .pt2, .py" in out.output
    out = call("export", "esmm.mtl", "--checkpoint", folder / "nowhere", "-o", "m.onnx")
    assert out.exit_code == 2 and "no checkpoint at" in out.output
    predict = ("predict", "esmm.mtl", "--checkpoint", run, "--data", "rows.parquet",
               "--out", "p.csv", "--model")
    out = call(*predict, "m.onnx.txt")
    assert out.exit_code == 1 and "--model must end in .onnx, .pt2, .py" in out.output
    out = call(*predict, "absent.onnx")
    assert out.exit_code == 2 and "no exported model at absent.onnx" in out.output
    (folder / "lone.onnx").write_bytes(b"")
    out = call(*predict, "lone.onnx")
    assert out.exit_code == 2 and "no serving bundle at lone.bundle.json" in out.output
    (folder / "lone.bundle.json").write_text(json.dumps({"model": "other"}))
    out = call(*predict, "lone.onnx")
    assert out.exit_code == 1 and "exported from model 'other', not 'esmm'" in out.output
    (folder / "rows.csv").write_text("user,item\n1,2\n")
    (folder / "any.pt2").write_bytes(b"")
    out = call("predict", "esmm.mtl", "--checkpoint", run, "--data", "rows.csv",
               "--out", "p.csv", "--model", "any.pt2")
    assert out.exit_code == 1 and "column 'category' is not in the data" in out.output
    assert "Traceback" not in out.output


def test_a_block_the_exporters_refuse_is_named(esmm, tmp_path, monkeypatch):
    """A construct that cannot be traced (here: a tower made data-dependent by hand) gets an
    error naming its node, for both exporters."""
    from mtl_dsl.model.blocks import MLP
    from mtl_dsl.tools.serving.export import ExportError

    _, result = esmm
    ck = load_checkpoint(result.checkpoint)
    plain = MLP.forward

    def branchy(self, x):  # Python control flow on a tensor's value: untraceable
        return plain(self, x) if float(x.sum()) > -1e30 else x
    monkeypatch.setattr(MLP, "forward", branchy)
    for suffix, exporter in ((".pt2", "torch.export"), (".onnx", "torch.onnx")):
        with pytest.raises(ExportError, match=rf"{exporter} cannot export model 'esmm' at node "
                                              r"'t_ctr' \(tower, MLP\)"):
            export_run(ck, tmp_path / f"m{suffix}")
