"""Our processor and tokenizer build the same prompt ids as the reference's GlmAsrProcessor (stored in the
goldens), for every case: one audio, two windows, a left-padded batch."""

import pytest
import torch

from conformance.harness import golden
from conformance.harness.cases import clips
from glm_asr import Processor, Tokenizer
from glm_asr.transcription.processor import prompt_text

MANIFEST = golden.load_manifest()


@pytest.fixture(scope="module", params=sorted(MANIFEST["models"]))
def processor(request) -> Processor:
    model = MANIFEST["models"][request.param]
    tokenizer = Tokenizer.from_file(golden.ROOT / model["tokenizer"]["path"])
    return request.param, Processor(tokenizer, model["config"]["audio_config"]["num_mel_bins"])


@pytest.mark.parametrize("audio", sorted({c["audio"] for c in MANIFEST["cases"].values()}))
def test_prompt_ids_equal_the_reference_processor(processor, audio):
    name, proc = processor
    stored = golden.load_case(golden.ROOT, MANIFEST["cases"][f"{name}/{audio}/fp32"])
    batch = proc(clips(audio))
    assert torch.equal(batch.input_ids, stored["inputs.input_ids"])
    assert torch.equal(batch.attention_mask, stored["inputs.attention_mask"])
    assert torch.equal(batch.input_features_mask, stored["inputs.input_features_mask"].to(torch.int32))
    assert batch.windows == [m.shape[0] // 480_000 + (m.shape[0] % 480_000 > 0) for m in clips(audio)]


def test_prompt_text_layout():
    assert prompt_text(2) == (
        "<|user|>\n<|begin_of_audio|><|pad|><|pad|><|end_of_audio|><|user|>\nPlease transcribe this audio into text<|assistant|>\n"
    )


def test_audio_beyond_the_limit_is_cut_to_21_windows(processor):
    _, proc = processor
    batch = proc([torch.zeros(22 * 480_000 + 5).numpy()])
    assert batch.windows == [21] and batch.input_features.shape[0] == 21
    assert int((batch.input_ids == proc.audio_token_id).sum()) == 21 * 375


def test_tokenizer_without_prompt_tokens_is_refused(tmp_path):
    import json

    model = next(iter(MANIFEST["models"].values()))
    spec = json.loads((golden.ROOT / model["tokenizer"]["path"]).read_text())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in ("<|pad|>", "<|begin_of_audio|>")]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"tokenizer.json: lacks the special tokens the prompt needs: .*<\|begin_of_audio\|>, <\|pad\|>"):
        Processor.from_dir(tmp_path)
