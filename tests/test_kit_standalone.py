"""The kit's standalone checker (check_kit.py, numpy only) gives the same verdicts as `glm-asr kit check` on
the same results: passing cases, failing ones, and each kind of unusable file; and it runs with torch and the
safetensors package made unimportable."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

from glm_asr_cli import main
from tests.test_kit import kit_dir, run_ours  # noqa: F401  (kit_dir: the shared exported kit)

# Run by a Python that cannot import torch or safetensors: what a porter without either has.
_BARE = ("import runpy, sys; sys.modules['torch'] = sys.modules['safetensors'] = None; "
         "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def _standalone(kit_dir, results, out, *args):  # noqa: F811
    run = subprocess.run([sys.executable, "-c", _BARE, str(kit_dir / "check_kit.py"), str(kit_dir), str(results), "--json", str(out), *args],
                         capture_output=True, text=True)
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, (json.loads(out.read_text()) if out.exists() else None), run.stdout


def _verdicts(report):
    return {cid: (c["pass"], c["first_failure"], [(r["stage"], r["status"]) for r in c.get("stages", [])], bool(c.get("error")), c.get("unknown", []))
            for cid, c in report["cases"].items()}


def test_the_standalone_checker_agrees_with_kit_check(kit_dir, tmp_path, capsys):  # noqa: F811
    results = tmp_path / "results"
    for case_id in ("tiny_b/silence/fp32", "tiny_a/batch/fp32", "tiny_b/tone/fp32", "tiny_a/speech_like/bf16"):
        run_ours(kit_dir, results, case_id)
    broken = load_file(results / "tiny_a.batch.fp32.safetensors")
    broken["decoder.layers.1"][1, -3, 5] += 1e-2  # one value: fails the layer and everything after
    broken["logits"][0, -1, 0] = float("nan")
    save_file(broken, results / "tiny_a.batch.fp32.safetensors")
    spelt = load_file(results / "tiny_b.tone.fp32.safetensors")
    spelt["encoder.layer.0"] = spelt.pop("encoder.layers.0")
    spelt["conv2"] = spelt["conv2"].transpose(1, 2).contiguous()
    save_file(spelt, results / "tiny_b.tone.fp32.safetensors")
    ids = load_file(results / "tiny_a.speech_like.bf16.safetensors")
    save_file({"generated_ids": ids["generated_ids"], "logits": ids["logits"].to(torch.bfloat16)}, results / "tiny_a.speech_like.bf16.safetensors")
    (results / "tiny_a.chirp.fp32.safetensors").write_bytes(b"garbage")  # unreadable
    save_file({"logits": torch.zeros(1)}, results / "tiny_a.chirp.fp16.safetensors")  # names no case

    for args in ([], ["--case", "tiny_b/silence,tiny_a/speech_like/bf16"], ["--case", "tiny_a/"]):
        ours = tmp_path / f"ours{len(args)}.json"
        code = main(["kit", "check", str(kit_dir), str(results), "--json", str(ours), *args])
        capsys.readouterr()
        code_bare, theirs, _ = _standalone(kit_dir, results, tmp_path / f"bare{len(args)}.json", *args)
        ours = json.loads(ours.read_text())
        assert code == code_bare and ours["passed"] == theirs["passed"]
        assert _verdicts(ours) == _verdicts(theirs)
    assert code == 1  # the last: tiny_a/ has failing and missing cases
    v = _verdicts(theirs)
    assert v["tiny_a/speech_like/bf16"][0] and not v["tiny_a/batch/fp32"][0] and v["tiny_a/batch/fp32"][1] == "decoder.layers.1"
    assert v["tiny_a/chirp/fp32"][3] and v["tiny_a.chirp.fp16.safetensors"][3] and v["tiny_a/tone/fp32"][3]  # unreadable, unknown, missing


def test_the_standalone_checker_exits_2_on_an_unusable_kit(kit_dir, tmp_path):  # noqa: F811
    code, report, _ = _standalone(kit_dir, tmp_path / "absent", tmp_path / "r.json")
    assert code == 2 and report is None
    code, _, _ = _standalone(kit_dir, tmp_path, tmp_path / "r.json", "--case", "tiny_c/")
    assert code == 2
