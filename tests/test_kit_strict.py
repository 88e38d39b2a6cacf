"""The kit's checker is strict by default: nothing a port's CI can do by accident passes. Each leniency of
issue 23 has its test: a folder missing cases, a misnamed results file, misspelled tensor names, one unreadable
file among good ones, a bf16 case with only greedy ids, a violated bound printed with too few digits, a shape
error that quotes the cropped shape instead of the port's."""

import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conformance.harness.metrics import Metrics, failures, violation
from conformance.harness.tolerances import tolerance
from conformance.kit import check as kit_check
from glm_asr_cli import main
from tests.test_kit import kit_dir, ours_port, run_ours  # noqa: F401  (kit_dir: the shared exported kit)

GOOD = ["tiny_b/silence/fp32", "tiny_a/speech_like/bf16"]


@pytest.fixture(scope="module")
def good(kit_dir, tmp_path_factory):  # noqa: F811
    """Our model's results for two cases: a folder the tests copy and spoil."""
    folder = tmp_path_factory.mktemp("good")
    for case_id in GOOD:
        run_ours(kit_dir, folder, case_id)
    return folder


def _copy(good, tmp_path):
    shutil.copytree(good, tmp_path / "results")
    return tmp_path / "results"


def test_a_folder_holding_some_cases_fails_naming_each_missing_one(kit_dir, good, tmp_path, capsys):  # noqa: F811
    assert main(["kit", "check", str(kit_dir), str(good)]) == 1
    out = capsys.readouterr().out
    n = len(kit_check.load_kit(kit_dir, verify=False)["cases"])
    assert f"{len(GOOD)} of {n} cases pass" in out
    assert "fail: no results file: " + str(good / "tiny_a.tone.fp32.safetensors") + " is missing" in out
    assert out.count("fail: no results file:") == n - len(GOOD)
    assert main(["kit", "check", str(kit_dir), str(good), "--case", ",".join(GOOD)]) == 0  # the subset, chosen explicitly
    assert f"{len(GOOD)} of {len(GOOD)} cases pass" in capsys.readouterr().out


def test_a_misnamed_results_file_beside_good_ones_fails(kit_dir, good, tmp_path, capsys):  # noqa: F811
    results = _copy(good, tmp_path)
    shutil.copy(results / "tiny_b.silence.fp32.safetensors", results / "tiny_b.silence.fp16.safetensors")
    assert main(["kit", "check", str(kit_dir), str(results), "--case", ",".join(GOOD)]) == 1
    out = capsys.readouterr().out
    assert "tiny_b.silence.fp16.safetensors: names no case of the kit (did you mean tiny_b.silence.fp32.safetensors?)" in out
    assert f"{len(GOOD)} of {len(GOOD) + 1} cases pass; failing: tiny_b.silence.fp16.safetensors" in out


def test_misspelled_stage_names_fail_the_case_and_are_named(kit_dir, good, tmp_path, capsys):  # noqa: F811
    results = _copy(good, tmp_path)
    path = results / "tiny_b.silence.fp32.safetensors"
    tensors = load_file(path)
    tensors["encoder.layer.0"] = tensors.pop("encoder.layers.0")
    tensors["decoder.layers.0.mlp_act"] = tensors.pop("decoder.layers.0.mlp.act")
    save_file(tensors, path)
    assert main(["kit", "check", str(kit_dir), str(results), "--case", "tiny_b/silence/fp32", "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "unknown tensor 'encoder.layer.0': not a stage or sub-stage name of tiny_b/silence/fp32 (did you mean 'encoder.layers.0'?)" in out
    assert "unknown tensor 'decoder.layers.0.mlp_act'" in out and "(did you mean 'decoder.layers.0.mlp.act'?)" in out
    assert "fail: 2 tensor name(s) the kit does not know" in out and "0 of 1 cases pass" in out


def test_one_unreadable_file_fails_its_case_and_every_other_case_is_still_checked(kit_dir, good, tmp_path, capsys):  # noqa: F811
    results = _copy(good, tmp_path)
    (results / "tiny_a.tone.fp32.safetensors").write_bytes(b"\x00" * 7)
    assert main(["kit", "check", str(kit_dir), str(results), "--case", ",".join([*GOOD, "tiny_a/tone/fp32"])]) == 1
    out = capsys.readouterr().out
    assert "tiny_a.tone.fp32.safetensors: not a readable safetensors file" in out
    assert out.count("pass: ") == len(GOOD) and f"{len(GOOD)} of {len(GOOD) + 1} cases pass; failing: tiny_a/tone/fp32" in out


def test_a_bf16_case_with_only_greedy_ids_is_accepted(kit_dir, good, tmp_path, capsys):  # noqa: F811
    results = tmp_path / "results"
    results.mkdir()
    tensors = load_file(good / "tiny_a.speech_like.bf16.safetensors")
    save_file({"generated_ids": tensors["generated_ids"]}, results / "tiny_a.speech_like.bf16.safetensors")
    assert main(["kit", "check", str(kit_dir), str(results), "--case", "tiny_a/speech_like/bf16"]) == 0
    out = capsys.readouterr().out
    assert "generated_ids not compared: bf16 cases keep no greedy ids" in out and "1 of 1 cases pass" in out


def test_a_violated_bound_prints_with_enough_digits_to_show_it():
    cos = tolerance("decoder.layers.0", "fp32", "chained").min_cos  # 1 - 1e-8
    m = Metrics(0.0, 0.0, 0.0, math.nextafter(cos, 0.0))  # the closest violation there is
    assert m.min_cos < cos
    (line,) = failures(m, tolerance("decoder.layers.0", "fp32", "chained"))
    value, bound = line.split()[1], line.split()[3]
    assert value != bound and float(value) < float(bound) and float(bound) == cos, line
    assert violation("max_rel", 5.0004e-5, ">", 5e-5) == "max_rel 5.0004e-05 > 5e-05"
    assert violation("nmse", 3.3e-3, ">", 1e-10) == "nmse 0.0033 > 1e-10"


def test_a_shape_error_quotes_the_ports_own_shape(kit_dir, good):  # noqa: F811
    made = kit_check.load_kit(kit_dir, verify=False)
    case = made["cases"]["tiny_b/silence/fp32"]
    tensors = load_file(good / case["results"])
    tensors["conv2"] = tensors["conv2"].transpose(1, 2).contiguous()  # channels first, as conv1: a layout slip
    tensors["merged"] = tensors["merged"][:, :3]  # cropped shorter than the kept tokens
    result = kit_check.check_case(kit_dir, "tiny_b/silence/fp32", case, tensors)
    rows = {r.stage: r for r in result.rows}
    assert rows["conv2"].failures == ("shape (1, 24, 1500) (the port's) != (1, 1500, 24) expected (kit.json full_shape; see the layout in the README)",)
    assert rows["merged"].failures[0].startswith("shape (1, 3, 96) (the port's) != (1, 375, 96) expected")
    assert torch.equal(load_file(good / case["results"])["conv2"], tensors["conv2"].transpose(1, 2))  # the port's file untouched


def test_a_case_ends_in_eos_before_the_limit_and_a_port_that_ignores_the_stop_rule_fails(kit_dir, tmp_path):  # noqa: F811
    made = kit_check.load_kit(kit_dir, verify=False)
    case_id = "tiny_a/batch_eos/fp32"  # both rows end before the limit: row 1 at its 9th id, row 0 at its 15th
    case = made["cases"][case_id]
    expected = load_file(kit_dir / case["dir"] / "expected.safetensors")["generated_ids"]
    assert expected.shape == (2, 15) and expected[1, 9:].tolist() == [300] * 6  # row 1 padded after its eos id
    model = ours_port.load(kit_dir, case)
    tensors = ours_port.run_case(model, kit_dir, case, made["generate"]["max_new_tokens"], False, False)
    assert kit_check.check_case(kit_dir, case_id, case, tensors).passed
    ignored = ours_port.run_case(ours_port.load(kit_dir, made["cases"]["tiny_a/batch/fp32"]), kit_dir, case, 24, False, False)
    result = kit_check.check_case(kit_dir, case_id, case, {"generated_ids": ignored["generated_ids"]})  # the config's eos list unread
    assert result.first_failure == "generated_ids" and result.rows[-1].failures == ("shape (2, 24) != reference (2, 15)",)
    unpadded = tensors["generated_ids"].clone()
    unpadded[1, 9:] = unpadded[1, 8]  # a finished row repeating its last id instead of the first eos id
    result = kit_check.check_case(kit_dir, case_id, case, {"generated_ids": unpadded})
    assert result.first_failure == "generated_ids" and "first at (1, 9): 270 where the reference has 300" in result.rows[-1].failures[0]
