"""tox -e oracle: the golden comparisons, live against transformers instead of the stored files, for every
case in fp32 and bf16, plus greedy generation. Skips where transformers is not installed."""

from pathlib import Path

import pytest
import torch

from conformance.harness import runner
from conformance.harness.cases import CASES, MODELS, clips
from conformance.harness.ours import features
from conformance.harness.weights import golden_weights, save_checkpoint
from glm_asr import load_model
from glm_asr.transcription.generate import greedy_generate

pytestmark = pytest.mark.oracle
reference = pytest.importorskip("conformance.harness.reference", reason="transformers is not installed (tox -e oracle)")
fixture = pytest.importorskip("conformance.harness.tokenizer_fixture", reason="tokenizers is not installed")


@pytest.fixture(scope="module", params=sorted(MODELS))
def checkpoint(request, tmp_path_factory) -> tuple[str, Path]:
    tiny = MODELS[request.param]
    directory = save_checkpoint(tmp_path_factory.mktemp(tiny.name), tiny.config, golden_weights(tiny))
    fixture.build_bpe_tokenizer_json(directory / "tokenizer.json", tiny.n_base_tokens)
    return tiny.name, directory


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES)
def test_live_against_transformers(checkpoint, case, dtype):
    name, directory = checkpoint
    config = MODELS[name].config
    torch_dtype = runner.DTYPES[dtype]
    processor = reference.make_processor(directory / "tokenizer.json", config.audio_config.num_mel_bins)
    inputs = reference.prepare_inputs(processor, clips(case))
    ref_model = reference.load_reference(directory, torch_dtype)
    tensors, info = reference.case_tensors(ref_model, inputs, config)
    ours = load_model(directory, dtype=torch_dtype)
    rows = runner.compare_stages(f"{name}/{case}/{dtype}", ours, clips(case), tensors, {s: i["stored_full"] for s, i in info.items()}, dtype)
    failed = [r for r in rows if not r.ok]
    assert not failed, "\n" + runner.format_table(failed)
    if dtype == "fp32":
        expected = reference.generate(ref_model, inputs, 16)
        mel, mask = features(clips(case), config.audio_config.num_mel_bins)
        got = greedy_generate(ours, inputs["input_ids"], inputs["attention_mask"], mel, mask, max_new_tokens=16)
        assert torch.equal(got, expected)
