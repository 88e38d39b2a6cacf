"""Every stored golden case, every stage, chained and isolated, on every backend torch has here."""

import shutil

import pytest
import torch

from conformance.harness import golden
from conformance.harness import runner
from conformance.harness.cases import BF16_CASES, CASES, MODELS
from conformance.harness.stages import stages
from conformance.harness.tolerances import TABLE
from glm_asr.runtime import cpu
from glm_asr_cli import main

MANIFEST = golden.load_manifest()
BACKENDS = [
    pytest.param("cpu", id="torch-cpu"),
    pytest.param("cuda", id="torch-cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


@pytest.fixture(autouse=True)
def _no_tf32():
    # TF32 convolutions and matmuls on Ampere+ would move fp32 results by ~1e-3: parity needs them off.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id", sorted(MANIFEST["cases"]))
def test_case_matches_reference(case_id, backend):
    rows = runner.run_case(case_id, backend, manifest=MANIFEST)
    stage_names = {s.name for s in stages(MODELS[MANIFEST["cases"][case_id]["model"]].config)}
    assert {r.stage for r in rows if r.mode == "chained"} == stage_names  # nothing silently skipped
    assert {r.stage for r in rows if r.mode == "isolated"} >= {"encoder.norm", "merged", "projector", "inputs_embeds", "decoder.norm", "logits"}
    failed = [r for r in rows if not r.ok]
    assert not failed, "\n" + runner.format_table(failed)


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "widened-bf16"])
@pytest.mark.parametrize("case_id", sorted(c for c in MANIFEST["cases"] if c.endswith("/bf16")))
def test_each_bf16_path_matches_reference(case_id, native):
    # The test above runs the path this CPU chose; this one forces each, so both are proven on any CPU.
    with cpu.forced(native_bf16=native):
        rows = runner.run_case(case_id, "cpu", manifest=MANIFEST)
    failed = [r for r in rows if not r.ok]
    assert rows and not failed, "\n" + runner.format_table(failed)


def test_golden_covers_every_case_and_the_manifest_is_consistent():
    expected = {f"{m}/{c}/fp32" for m in MODELS for c in CASES} | {f"{m}/{c}/bf16" for m in MODELS for c in BF16_CASES}
    assert set(MANIFEST["cases"]) == expected
    assert MANIFEST["tolerances"] == {"/".join(k): v.as_dict() for k, v in sorted(TABLE.items())}, (
        "the tolerance table changed since golden/ was written: regenerate with `tox -e golden`"
    )
    assert MANIFEST["provenance"]["transformers"] == "5.24.0"
    assert MANIFEST["provenance"]["cpu"]["class"]  # bytes reproduce within a CPU class only (conformance/harness/drift.py)
    over_30s = MANIFEST["cases"]["tiny_a/over_30s/fp32"]["stages"]
    assert over_30s["mel"]["shape"] == [2, 128, 3000] and over_30s["conv1"]["stored_full"]  # two whole windows
    files = [p for p in golden.ROOT.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files if golden.FULL not in p.relative_to(golden.ROOT).parts)
    assert size < 20e6, f"golden/ without full/ is {size / 1e6:.1f} MB"
    # golden/full/ keeps a few rows per stage of the released shape; whole stages would be about 1 GB per 30 s window.
    full = sum(p.stat().st_size for p in files if golden.FULL in p.relative_to(golden.ROOT).parts)
    assert full < 16e6, f"golden/full/ is {full / 1e6:.1f} MB"


def test_every_golden_file_matches_its_hash():
    for entry in golden.all_entries(MANIFEST):
        golden.read_verified(golden.ROOT, entry)


def test_tampered_golden_is_named_and_fails_the_cli(tmp_path, capsys):
    root = tmp_path / "golden"
    shutil.copytree(golden.ROOT, root)
    entry = MANIFEST["cases"]["tiny_a/tone/fp32"]
    data = bytearray((root / entry["path"]).read_bytes())
    data[-1] ^= 1
    (root / entry["path"]).write_bytes(bytes(data))
    with pytest.raises(golden.GoldenError, match=r"tiny_a/tone\.fp32\.safetensors: sha256 .* does not match"):
        runner.run_case("tiny_a/tone/fp32", root=root)
    assert main(["conformance", "--golden", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tone.fp32.safetensors" in err and "Traceback" not in err


def test_cli_prints_the_table_and_fails_on_a_failing_stage(monkeypatch, capsys):
    assert main(["conformance", "--case", "tiny_b/noise/"]) == 0
    out = capsys.readouterr().out
    assert "tiny_b/noise/fp32" in out and "decoder.layers.2" in out and "FAIL" not in out
    # A tolerance no implementation can meet must turn the verdict and the exit code.
    strict = runner.Tolerance(0.0, 0.0, 0.0, 1.0, "impossible")
    monkeypatch.setattr(runner, "tolerance", lambda *a: strict)
    assert main(["conformance", "--case", "tiny_b/noise/"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_unknown_case_is_one_line(capsys):
    assert main(["conformance", "--case", "nope"]) == 2
    assert capsys.readouterr().err.startswith("glm-asr: error: --case 'nope' matches none")
