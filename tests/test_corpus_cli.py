"""The corpus command line as a new user meets it (issue 19): one record per file however the corpus is named,
a token budget that follows the audio's length and says when it ran out, one record schema for --json and
--output, --overwrite, --retry-failed, and one-line errors that name the flag. Names new in issue 19 are
imported inside the tests, so that each test fails on its own against older code."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch

from glm_asr import load_model_and_processor, transcribe_detailed
from glm_asr.transcription.presets import demo_clip
from glm_asr_cli import main
from glm_asr_cli.main import build_parser
from tests.conftest import model_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """tiny_b's golden weights and tokenizer as a checkpoint folder: the fastest model there is."""
    return model_folder(tmp_path_factory.mktemp("tiny_b"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):  # noqa: ANN001, ANN201
    return load_model_and_processor(tiny_dir)


@pytest.fixture
def mixed(tmp_path) -> Path:
    """A corpus of three 1-2 s clips, one in a subfolder; the test runs in its parent folder."""
    for i, name in enumerate(["a.wav", "b.wav", "sub/c.wav"]):
        (tmp_path / "mixed" / name).parent.mkdir(parents=True, exist_ok=True)
        scipy.io.wavfile.write(tmp_path / "mixed" / name, 16000, demo_clip(1.0 + i / 2, seed=i))
    (tmp_path / "link").symlink_to(tmp_path / "mixed")
    return tmp_path / "mixed"


def transcribe(tiny_dir: Path, *argv: object) -> int:
    return main(["transcribe", *map(str, argv), "--model", str(tiny_dir), "--max-new-tokens", "2"])


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- 1, 2: one record per file ----------------------------------------------------------------------------


def test_resume_knows_a_corpus_by_absolute_relative_and_symlinked_names(tiny_dir, mixed, monkeypatch):
    monkeypatch.chdir(mixed.parent)
    out = Path("r.jsonl")
    assert transcribe(tiny_dir, mixed.resolve(), "--output", out) == 0
    first = out.read_bytes()
    assert transcribe(tiny_dir, "mixed", "--output", out, "--resume") == 0
    assert transcribe(tiny_dir, "link", "./mixed/sub/../a.wav", "--output", out, "--resume") == 0
    assert out.read_bytes() == first  # nothing transcribed again
    assert sorted(r["real_path"] for r in records(out)) == sorted(str(p.resolve()) for p in mixed.rglob("*.wav"))


def test_an_older_results_file_with_paths_as_typed_still_resumes(tiny_dir, mixed, monkeypatch):
    monkeypatch.chdir(mixed.parent)
    out, manifest = Path("old.jsonl"), mixed / "sub" / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "c.wav", "offset": 0.5}) + "\n")  # relative to the manifest, not here
    assert transcribe(tiny_dir, "mixed", manifest, "--output", out) == 0
    old = [{k: v for k, v in r.items() if k != "real_path"} for r in records(out)]  # as written before real_path
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert len(old) == 4 and old[3]["audio_filepath"] == "c.wav"
    assert transcribe(tiny_dir, mixed.resolve(), "link", manifest, "--output", out, "--resume") == 0
    assert records(out) == old


def test_overlapping_inputs_are_transcribed_once(tiny_dir, mixed, monkeypatch):
    from glm_asr.corpus.inputs import expand_inputs

    monkeypatch.chdir(mixed.parent)
    inputs = ["mixed", "mixed/sub", "mixed/a.wav", "link/b.wav", str(mixed / "sub" / "c.wav")]
    items = expand_inputs([Path(p) for p in inputs])
    assert [i.audio_filepath for i in items] == ["mixed/a.wav", "mixed/b.wav", "mixed/sub/c.wav"]  # the first name wins
    assert transcribe(tiny_dir, *inputs, "--output", "ov.jsonl") == 0
    assert [r["audio_filepath"] for r in records(Path("ov.jsonl"))] == ["mixed/a.wav", "mixed/b.wav", "mixed/sub/c.wav"]


# --- 3: the token budget ----------------------------------------------------------------------------------


def test_the_token_budget_follows_the_audio_length(tiny, monkeypatch):
    from glm_asr.transcription import transcribe as module

    model, processor = tiny
    asked = []
    real = module.greedy_generate
    monkeypatch.setattr(module, "greedy_generate", lambda *a, max_new_tokens, **k: asked.append(max_new_tokens) or real(*a, max_new_tokens=max_new_tokens, **k))
    for seconds in (1.0, 20.0, 45.0):
        transcribe_detailed(model, processor, demo_clip(seconds, seed=0))
    assert asked == [24, 176, 376]  # 16 + 8 a second
    from glm_asr.transcription.processor import token_budget
    from glm_asr.transcription.transcribe import token_budgets

    assert [token_budget(s) for s in (1.0, 20.0, 45.0)] == asked
    # ten minutes of audio would need more tokens than the decoder's positions leave after its prompt
    assert token_budgets(model, [7900], [np.zeros(600 * 16000, np.float32)], None) == [8192 - 7900]
    assert token_budgets(model, [7900], [np.zeros(16000, np.float32)], 700) == [700]  # as asked


def test_each_clip_keeps_its_own_budget_in_a_batch(tiny, mixed):
    from glm_asr.corpus.batching import transcribe_items
    from glm_asr.corpus.inputs import expand_inputs

    model, processor = tiny
    items = expand_inputs([mixed])  # 1, 1.5 and 2 s: budgets of 24, 28 and 32 tokens
    batched = [(r.text, r.truncated) for r in transcribe_items(model, processor, items, batch_size=3)]
    alone = [(r.text, r.truncated) for r in transcribe_items(model, processor, items, batch_size=1)]
    assert batched == alone and len({t for t, _ in batched}) == 3


def test_decoding_that_reaches_the_budget_says_so(tiny, tiny_dir, tmp_path, capsys):
    from glm_asr.transcription.generate import greedy_generate
    from glm_asr.transcription.transcribe import transcribe_batch

    model, processor = tiny
    clip = demo_clip(1.0, seed=3)
    batch = processor([clip])
    first = int(greedy_generate(model, batch.input_ids, batch.attention_mask, batch.input_features, batch.input_features_mask, max_new_tokens=1)[0, 0])
    (cut,) = transcribe_batch(model, processor, [clip], 1, eos_token_id=(first + 1,))
    (ended,) = transcribe_batch(model, processor, [clip], 3, eos_token_id=(first,))
    assert cut.truncated and not ended.truncated
    (detailed,) = transcribe_detailed(model, processor, clip, max_new_tokens=1)
    assert detailed.truncated and detailed.segments[0].truncated
    wav = tmp_path / "a.wav"
    scipy.io.wavfile.write(wav, 16000, clip)
    assert transcribe(tiny_dir, wav, "--output", tmp_path / "r.jsonl") == 0  # 2 new tokens: cut short
    (record,) = records(tmp_path / "r.jsonl")
    assert record["truncated"] is True and record["segments"][0]["truncated"] is True
    err = capsys.readouterr().err
    assert f"glm-asr: warning: {wav}: decoding reached its token budget" in err and "--max-new-tokens" in err


# --- 4, 7: device and model -------------------------------------------------------------------------------


def test_device_cuda_without_cuda_is_one_line(tiny_dir, mixed, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the CPU-only message cannot show")
    assert main(["transcribe", str(mixed), "--model", str(tiny_dir), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("glm-asr: error: --device cuda: ") and "--device cpu" in err
    assert main(["transcribe", str(mixed), "--model", str(tiny_dir), "--device", "gpu0"]) == 2
    assert "--device 'gpu0'" in capsys.readouterr().err


def test_random_weights_are_announced_and_a_hub_name_is_explained(mixed, monkeypatch, capsys):
    monkeypatch.chdir(mixed.parent)
    assert main(["transcribe", str(mixed / "a.wav"), "--max-new-tokens", "1"]) == 0
    assert "no --model: transcribing with random weights" in capsys.readouterr().err
    assert main(["transcribe", str(mixed / "a.wav"), "--model", "zai-org/GLM-ASR-Nano-2512"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected a local model folder" in err and "huggingface-cli download zai-org/GLM-ASR-Nano-2512" in err


# --- 5: the Python API ------------------------------------------------------------------------------------


def test_corpus_api_from_a_plain_import(tiny, mixed):
    code = ("import glm_asr, sys; from pathlib import Path\n"
            "items = glm_asr.corpus.expand_inputs([Path(sys.argv[1])])\n"
            "assert glm_asr.bulk.transcribe_items is glm_asr.corpus.transcribe_items\n"
            "assert callable(glm_asr.ray_corpus.transcribe_items_on_ray)\n"
            "print(len(items))")
    run = subprocess.run([sys.executable, "-c", code, str(mixed)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0 and run.stdout == "3\n", run.stderr
    import glm_asr

    model, processor = tiny
    results = list(glm_asr.bulk.transcribe_items(model, processor, glm_asr.corpus.expand_inputs([mixed]), max_new_tokens=2))
    assert [r.item.path.name for r in results] == ["a.wav", "b.wav", "c.wav"] and all(r.error is None for r in results)


# --- 6: one record schema ---------------------------------------------------------------------------------


def test_json_prints_the_results_files_records(tiny_dir, mixed, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert transcribe(tiny_dir, mixed, tmp_path / "missing.wav", "--json", "--output", out, "--stop-on-repeat", "2") == 2
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == records(out) and len(printed) == 4  # both: the same records, failed input included
    assert "no such file" in printed[3]["error"]
    assert {"audio_filepath", "real_path", "offset", "duration", "text", "segments", "timings", "stopped_on_repeat", "truncated"} == set(printed[0])
    assert transcribe(tiny_dir, mixed / "a.wav", "--json") == 0  # without --output: the same keys
    assert set(json.loads(capsys.readouterr().out)) == set(printed[0])


# --- 8: overwrite -----------------------------------------------------------------------------------------


def test_overwrite_replaces_only_when_asked_and_the_message_fits_the_case(tiny_dir, mixed, tmp_path, capsys):
    subs, out = tmp_path / "subs", tmp_path / "r.jsonl"
    assert transcribe(tiny_dir, mixed / "a.wav", "--format", "txt", "--output-dir", subs) == 0
    (subs / "a.txt").write_text("mine")
    assert transcribe(tiny_dir, mixed / "a.wav", "--format", "txt", "--output-dir", subs) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite to replace it" in err and "--resume" not in err and (subs / "a.txt").read_text() == "mine"
    assert transcribe(tiny_dir, mixed / "a.wav", "--format", "txt", "--output-dir", subs, "--overwrite") == 0
    assert (subs / "a.txt").read_text() != "mine"

    assert transcribe(tiny_dir, mixed, "--output", out) == 0
    assert transcribe(tiny_dir, mixed / "a.wav", "--output", out) == 2
    err = capsys.readouterr().err
    assert "pass --resume to continue it" in err and "--overwrite to replace it" in err and len(records(out)) == 3
    assert transcribe(tiny_dir, mixed / "a.wav", "--output", out, "--overwrite") == 0
    assert [r["audio_filepath"] for r in records(out)] == [str(mixed / "a.wav")]
    assert transcribe(tiny_dir, mixed / "a.wav", "--output", out, "--overwrite", "--resume") == 2
    assert "give one of them" in capsys.readouterr().err


# --- 9: the onnx extra ------------------------------------------------------------------------------------


def test_export_without_the_onnx_extra_names_it(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import export_onnx
    finally:
        sys.path.remove(str(REPO / "tools"))
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now raises ImportError
    assert export_onnx.main(["--random", "small", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxscript" in err and "pip install 'glm-asr[onnx]'" in err and not (tmp_path / "out").exists()


def test_the_exporters_torchvision_warnings_are_silenced(caplog):
    pytest.importorskip("onnxscript")
    from glm_asr.onnx.extra import REGISTRATION_LOGGER, quiet_exporter
    from torch.onnx._internal.exporter import _registration

    assert _registration.logger.name == REGISTRATION_LOGGER  # the logger torch warns on is the one filtered
    with caplog.at_level(logging.WARNING, logger=REGISTRATION_LOGGER):
        with quiet_exporter():
            _registration.logger.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
            _registration.logger.warning("something else")
        _registration.logger.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
    assert [r.getMessage() for r in caplog.records] == ["something else", "torchvision is not installed. Skipping torchvision::nms"]


# --- 10: smaller ------------------------------------------------------------------------------------------


def _subparsers(parser):  # noqa: ANN001, ANN202
    for action in parser._actions:
        if action.choices and hasattr(action, "_name_parser_map"):
            for name, sub in action._name_parser_map.items():
                yield name, sub
                yield from _subparsers(sub)


def test_every_option_has_help_and_shows_its_default(capsys):
    parser = build_parser()
    for name, sub in [("glm-asr", parser), *_subparsers(parser)]:
        help_text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if not action.option_strings or action.dest in ("help", "version"):
                continue
            assert action.help, f"{name} {action.option_strings[0]}: no help"
            if action.default not in (None, False):
                shown = " ".join(sub._get_formatter()._get_help_string(action).split()) % {"default": action.default}
                assert "default" in shown and shown in help_text, f"{name} {action.option_strings[0]}: default not shown"
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("glm-asr 0.")


@pytest.mark.parametrize("argv, fragment", [
    (["--output-dir", "subs"], "--output-dir subs holds the --format files; give --format"),
    (["--ray-actors", "2"], "--ray-actors 2 sets the actors of a --ray run; give --ray too"),
    (["--max-new-tokens", "-1"], "--max-new-tokens -1: expected 1 or more"),
    (["--retry-failed"], "--retry-failed transcribes again"),
    (["--quantize", "int8", "--dtype", "bf16"], "--quantize int8 applies to --dtype fp32 on --device cpu"),
])
def test_flag_errors_name_the_flags(tiny_dir, mixed, argv, fragment, capsys):
    assert main(["transcribe", str(mixed), "--model", str(tiny_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


def test_the_pyav_hint_shows_only_without_pyav(tiny_dir, tmp_path, capsys):
    pytest.importorskip("av")
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all")
    assert transcribe(tiny_dir, junk) == 2
    err = capsys.readouterr().err
    assert "junk.mp3" in err and "pip install" not in err


def test_plain_transcripts_have_no_leading_space(mixed):
    model, processor = load_model_and_processor(None, random_preset="small")  # its tokenizer marks word starts with a space
    clip = demo_clip(2.0, seed=1)
    (whole,) = transcribe_detailed(model, processor, clip, max_new_tokens=3)
    (chunked,) = transcribe_detailed(model, processor, clip, max_new_tokens=3, chunked=True)
    assert whole.text == chunked.text == whole.segments[0].text and whole.text and not whole.text[0].isspace()


def test_summary_line_unwritable_output_and_offset_past_the_end(tiny_dir, mixed, tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(mixed / "a.wav"), "offset": 99.0}) + "\n")
    assert transcribe(tiny_dir, mixed, manifest, "--output", tmp_path / "r.jsonl") == 2
    err = capsys.readouterr().err.splitlines()
    assert "offset 99 s is at or past the end of the audio (1.00 s)" in records(tmp_path / "r.jsonl")[3]["error"]
    assert err[-1] == f"glm-asr: 4 records written to {tmp_path / 'r.jsonl'}: 3 transcribed, 1 failed, 3 truncated; 0 skipped (already recorded)"
    assert transcribe(tiny_dir, mixed, "--output", mixed / "a.wav" / "r.jsonl") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--output {mixed / 'a.wav' / 'r.jsonl'}: {mixed / 'a.wav'} is a file, not a folder" in err
    assert "Errno" not in err


def test_retry_failed_replaces_only_the_failed_lines(tiny_dir, mixed, tmp_path):
    out, late = tmp_path / "r.jsonl", tmp_path / "late.wav"
    assert transcribe(tiny_dir, mixed / "a.wav", late, mixed / "b.wav", "--output", out) == 2
    before = out.read_text().splitlines(keepends=True)
    assert "no such file" in json.loads(before[1])["error"]
    assert transcribe(tiny_dir, mixed / "a.wav", late, mixed / "b.wav", "--output", out, "--resume") == 0  # skipped, still failed
    assert out.read_text().splitlines(keepends=True) == before
    shutil.copy(mixed / "a.wav", late)
    assert transcribe(tiny_dir, mixed / "a.wav", late, mixed / "b.wav", "--output", out, "--resume", "--retry-failed") == 0
    after = out.read_text().splitlines(keepends=True)
    assert after[:1] + after[1:2] == [before[0], before[2]]  # the others' lines as they were
    assert len(after) == 3 and json.loads(after[2])["audio_filepath"] == str(late) and "error" not in json.loads(after[2])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.jsonl")]  # no staging file left
