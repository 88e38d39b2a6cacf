"""The API and CLI end to end: parity of transcripts with the reference's tokens, chunked mode, bad input."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch

from conformance.harness import golden
from conformance.harness.cases import clips
from glm_asr import load_model_and_processor, transcribe, transcribe_detailed
from glm_asr_cli import main
from tests.conftest import SHARED_AUDIO, model_folder

MANIFEST = golden.load_manifest()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """tiny_b's golden weights and tokenizer as a checkpoint folder, as a user would download one."""
    return model_folder(tmp_path_factory.mktemp("tiny_b"))


@pytest.fixture(scope="module")
def loaded(model_dir):  # noqa: ANN201
    return load_model_and_processor(model_dir)


def wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    scipy.io.wavfile.write(path, rate, samples)
    return path


def expected_text(processor, case: str, row: int = 0) -> str:  # noqa: ANN001
    stored = golden.load_case(golden.ROOT, MANIFEST["cases"][f"tiny_b/{case}/fp32"])
    return processor.decode(stored["generated_ids"][row]).strip()  # transcribe() strips the text


def test_transcripts_equal_the_reference_tokens_decoded(loaded, tmp_path):
    model, processor = loaded
    tone, speech = clips("tone")[0], clips("batch")[1]
    texts = transcribe(model, processor, [tone, wav(tmp_path / "s.wav", speech), torch.from_numpy(tone)], max_new_tokens=24)
    assert texts == [expected_text(processor, "tone"), expected_text(processor, "batch", 1), expected_text(processor, "tone")]
    assert transcribe(model, processor, tone, max_new_tokens=24) == texts[:1]


def test_chunked_mode_transcribes_windows_independently(loaded):
    model, processor = loaded
    audio = clips("over_30s")[0]
    (result,) = transcribe_detailed(model, processor, audio, max_new_tokens=8, chunked=True)
    assert [(s.start, s.end) for s in result.segments] == [(0.0, 30.0), (30.0, 31.0)]
    first, second = transcribe(model, processor, [audio[:480_000], audio[480_000:]], max_new_tokens=8)
    assert [s.text for s in result.segments] == [first, second]
    assert result.audio_seconds == 31.0


def test_audio_past_the_reference_limit_is_chunked_automatically(loaded):
    model, processor = loaded
    audio = np.zeros(22 * 480_000, np.float32)
    (result,) = transcribe_detailed(model, processor, audio, max_new_tokens=1, batch_size=11)
    assert len(result.segments) == 22 and result.segments[-1].end == 660.0


def test_random_weights_need_no_download_and_say_so_unless_asked_for():
    with pytest.warns(UserWarning, match="random weights"):
        model, processor = load_model_and_processor(None)
    (text,) = transcribe(model, processor, clips("tone")[0], max_new_tokens=3)
    assert isinstance(text, str)
    assert model.config.text_config.vocab_size == 59264 and processor.audio_token_id == 59260
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model_and_processor(None, random_preset="small")  # named: meant, so no warning


def test_cli_transcribes_good_files_and_names_each_bad_one(model_dir, tmp_path, capsys):
    good = wav(tmp_path / "good.wav", (clips("tone")[0] * 32767).astype(np.int16))
    silent = wav(tmp_path / "silent.wav", np.zeros(16000, np.int16))  # all zeros: transcribed, no crash
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])
    empty = wav(tmp_path / "empty.wav", np.zeros(0, np.int16))
    nan = wav(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], np.float32))
    rate0 = tmp_path / "rate0.wav"
    data = bytearray(good.read_bytes())
    data[24:32] = bytes(8)
    rate0.write_bytes(bytes(data))
    files = [good, tmp_path / "missing.wav", text, truncated, empty, nan, rate0, silent]
    code = main(["transcribe", *map(str, files), "--model", str(model_dir), "--max-new-tokens", "4"])
    out, err = capsys.readouterr()
    assert code == 2
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(good), str(silent)]
    errors = [line for line in err.splitlines() if line.startswith("glm-asr: error: ")]
    assert len(errors) == 6 and err.splitlines()[-1].startswith("glm-asr: 8 records written: 2 transcribed, 6 failed")
    for name, fragment in [("missing.wav", "no such file"), ("notes.wav", "not a WAV file"), ("truncated.wav", "truncated"),
                           ("empty.wav", "no samples"), ("nan.wav", "NaN"), ("rate0.wav", "sample rate 0")]:
        assert any(name in e and fragment in e for e in errors), (name, errors)
    assert "Traceback" not in err


def test_cli_json(model_dir, tmp_path, capsys):
    good = wav(tmp_path / "good.wav", clips("over_30s")[0])
    assert main(["transcribe", str(good), "--model", str(model_dir), "--max-new-tokens", "3", "--json", "--chunked"]) == 0
    (line,) = capsys.readouterr().out.splitlines()  # one JSON record per input, as the --output file holds it
    record = json.loads(line)
    assert record["audio_filepath"] == str(good) and record["duration"] == 31.0 and len(record["segments"]) == 2
    # both are rounded to 4 decimals in the record: the factor is within half a unit of the last of them
    assert record["timings"]["model_s"] > 0 and record["timings"]["real_time_factor"] == pytest.approx(record["timings"]["model_s"] / 31.0, abs=6e-5)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda d: (d / "config.json").unlink(), "config.json: no such file"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer.json"),
        (lambda d: (d / "tokenizer.json").write_text("{oops"), "tokenizer.json"),
        (lambda d: (d / "config.json").write_text(json.dumps({"audio_config": {}, "text_config": {}})), "missing field audio_config.hidden_size"),
    ],
)
def test_cli_bad_model_dir_is_one_line(model_dir, tmp_path, capsys, damage, fragment):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    damage(broken)
    good = wav(tmp_path / "good.wav", clips("tone")[0])
    assert main(["transcribe", str(good), "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err


def test_demo_runs(capsys):
    assert main(["demo", "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "logits" in out and "2,136,470,528" in out and "meaningless" in out


@pytest.mark.skipif(not os.environ.get("GLM_ASR_CHECKPOINT"), reason="set GLM_ASR_CHECKPOINT to a downloaded zai-org/GLM-ASR-Nano-2512 folder")
@pytest.mark.parametrize(
    "name, text",
    [
        ("example_en.wav", "be careful not to allow fabric to become too hot which can cause shrinkage or in extreme cases scorch"),
        ("example_zh.wav", "我还能再搞一个，就算是非常小的声音也能识别准确"),
    ],
)
def test_real_weights_transcribe_the_samples(name, text):
    if not (SHARED_AUDIO / name).exists():
        pytest.skip(f"{SHARED_AUDIO / name} absent")
    model, processor = load_model_and_processor(os.environ["GLM_ASR_CHECKPOINT"])
    assert transcribe(model, processor, SHARED_AUDIO / name) == [text]
