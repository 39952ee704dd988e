"""The front end is total: mutants of every shipped spec, and raw bytes, end in diagnostics or
success, never in another exception; what it accepts compiles, runs forward and backward on a
tiny batch, and has exactly the parameters `mtl check` counted. Seeded (derandomized) and
bounded in time; bench/fuzz.py runs the same harness for minutes."""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT, SPECS

sys.path.insert(0, str(ROOT / "bench"))
import fuzz  # noqa: E402

from mtl_dsl.api import check_file, check_text  # noqa: E402
from mtl_dsl.language.diagnostics import MtlError  # noqa: E402

def fuzz_settings(examples: int) -> settings:
    """Seeded (derandomized), no example database, no deadline: a bounded, repeatable run."""
    return settings(derandomize=True, deadline=None, database=None, max_examples=examples,
                    suppress_health_check=list(HealthCheck))


@fuzz_settings(300)
@given(spec=st.sampled_from(SPECS), seed=st.integers(0, 2 ** 32 - 1),
       steps=st.integers(1, 4))
def test_mutants_end_in_diagnostics_or_a_running_model(spec: Path, seed: int, steps: int):
    text = fuzz.mutate(fuzz.SPECS[spec], random.Random(seed), steps)
    outcome = fuzz.run_one(text, spec)
    assert outcome.kind != "crashed", outcome.error
    assert outcome.seconds < 5, f"checking took {outcome.seconds:.1f} s"


@fuzz_settings(40)
@given(spec=st.sampled_from(SPECS), kind=st.sampled_from(fuzz.MUTATIONS),
       seed=st.integers(0, 2 ** 32 - 1))
def test_every_kind_of_mutation_is_handled(spec: Path, kind: str, seed: int):
    text = fuzz.MUTATORS[kind](fuzz.SPECS[spec], random.Random(seed))
    outcome = fuzz.run_one(text, spec, execute=False)
    assert outcome.kind != "crashed", outcome.error


@fuzz_settings(150)
@given(data=st.binary(max_size=300))
def test_raw_bytes_are_diagnosed_from_a_file(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.mtl"
        path.write_bytes(data)
        try:
            check_file(path)
        except MtlError as err:
            assert err.diagnostics
            err.render().encode("utf-8")  # printable: no lone surrogates


@fuzz_settings(150)
@given(text=st.text(alphabet=st.sampled_from(list("model task label feature = ( ) [ ] , : "
                                                  "\" \\ \n \r \f \t # * & | ! x 1 2 . e - "
                                                  "\u2028 \x00 é")), max_size=200))
def test_unicode_text_is_diagnosed(text: str):
    try:
        check_text(text)
    except MtlError as err:
        for d in err.diagnostics:
            assert d.span is None or d.span.line >= 1


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_the_size_estimate_is_the_compiled_parameter_count(spec: Path):
    checked = check_file(spec)
    assert checked.size is not None and checked.size.params > 0
    assert fuzz.run_model(checked) is None


def test_a_100_kb_spec_is_checked_in_linear_time():
    """Thousands of features, expert groups and duplicate declarations: no per-node graph
    search, no quadratic lookup (measured: about 0.6 s for 100 KB alone on one core)."""
    base = fuzz.SPECS[ROOT / "specs" / "mmoe.mtl"]
    lines = "".join(f"feature f{i} = dense(1)\nexperts e{i} = mlp(x, 4)\n" for i in range(1950))
    text = base + lines + "label y1\n" * 500
    assert 90_000 < len(text) < 110_000
    start = time.perf_counter()
    checked = check_text(text)
    elapsed = time.perf_counter() - start
    assert not checked.ok
    shown = [d for d in checked.diagnostics if d.code == "W002"]
    assert len(shown) == 1 and shown[0].message.startswith("1,950 unused features; first 5: f0")
    assert elapsed < 4, f"{elapsed:.1f} s"


def test_deep_templates_are_checked_quickly():
    text = fuzz.SPECS[ROOT / "specs" / "ple.mtl"].replace("levels=2", "levels=32")
    assert "levels=32" in text
    start = time.perf_counter()
    assert check_text(text).ok
    assert time.perf_counter() - start < 2
