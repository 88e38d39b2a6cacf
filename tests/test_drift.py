"""conformance/harness/drift.py: what `tools/regenerate_golden.py --check` says of a regenerated tree made on another
CPU class. The stored golden files, perturbed here by known amounts, stand in for the regenerated ones."""

import json
import shutil

from safetensors.torch import load, save

from conformance.harness import drift
from conformance.harness import golden
from conformance.harness.tolerances import tolerance

MANIFEST = golden.load_manifest()
CASE = MANIFEST["cases"]["tiny_a/tone/fp32"]


def _tree(tmp_path):
    root = tmp_path / "golden"
    shutil.copytree(golden.ROOT, root)
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return root, files


def _perturbed(name: str, relative: float) -> bytes:
    tensors = load((golden.ROOT / CASE["path"]).read_bytes())
    t = tensors[name].clone()
    t.view(-1)[t.numel() // 2] += relative * t.abs().max()  # one value: max_rel moves, nmse and cosine barely
    tensors[name] = t
    return save(tensors)


def test_the_stored_tree_is_identical_to_itself(tmp_path):
    root, files = _tree(tmp_path)
    assert {d.verdict for d in drift.drift(root, files)} == {drift.IDENTICAL}


def test_another_class_within_tolerance_and_beyond(tmp_path):
    root, files = _tree(tmp_path)
    limit = tolerance("encoder.norm", "fp32", "chained").max_rel
    files[CASE["path"]] = _perturbed("encoder.norm", limit / 4)
    manifest = json.loads(files[golden.MANIFEST])
    manifest["provenance"]["cpu"] = {"class": "another class"}
    manifest["cases"]["tiny_a/tone/fp32"]["sha256"] = "0" * 64
    files[golden.MANIFEST] = json.dumps(manifest).encode()
    verdicts = {d.path: d for d in drift.drift(root, files)}
    assert verdicts[golden.MANIFEST].verdict == drift.WITHIN
    assert verdicts[CASE["path"]].verdict == drift.WITHIN and "encoder.norm" in verdicts[CASE["path"]].detail
    assert sum(d.verdict == drift.IDENTICAL for d in verdicts.values()) == len(files) - 2

    files[CASE["path"]] = _perturbed("encoder.norm", limit * 4)
    assert {d.path: d.verdict for d in drift.drift(root, files)}[CASE["path"]] == drift.BEYOND


def test_changed_ids_a_changed_config_or_a_missing_file_are_beyond(tmp_path):
    root, files = _tree(tmp_path)
    tensors = load(files[CASE["path"]])
    tensors["generated_ids"][0, 0] += 1
    files[CASE["path"]] = save(tensors)
    manifest = json.loads(files[golden.MANIFEST])
    manifest["models"]["tiny_a"]["seed"] += 1
    files[golden.MANIFEST] = json.dumps(manifest).encode()
    del files["tiny_b/tone.fp32.safetensors"]
    verdicts = {d.path: d for d in drift.drift(root, files)}
    assert "generated_ids: 1 of" in verdicts[CASE["path"]].detail and verdicts[CASE["path"]].verdict == drift.BEYOND
    assert verdicts[golden.MANIFEST].verdict == drift.BEYOND
    assert verdicts["tiny_b/tone.fp32.safetensors"].verdict == drift.BEYOND
