import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_AUDIO = Path(__file__).resolve().parent.parent.parent / "shared" / "audio"


@pytest.fixture(scope="module")
def small():  # noqa: ANN201
    """The small random preset's model and processor, built once per test module (the serving, realtime and bulk
    tests share it within a module)."""
    from glm_asr import load_model_and_processor

    return load_model_and_processor(None, random_preset="small")


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """tiny_a's golden weights as a release-layout checkpoint directory."""
    from conformance.harness.cases import MODELS
    from conformance.harness.weights import golden_weights, save_checkpoint

    tiny = MODELS["tiny_a"]
    return save_checkpoint(tmp_path / "ckpt", tiny.config, golden_weights(tiny))


def model_folder(directory: Path, name: str = "tiny_b") -> Path:
    """A tiny golden model's weights and tokenizer as a checkpoint folder, as a user would download one
    (tiny_b: the fastest model with varied transcripts)."""
    import shutil

    from conformance.harness import golden
    from conformance.harness.cases import MODELS
    from conformance.harness.weights import golden_weights, save_checkpoint

    tiny = MODELS[name]
    directory.mkdir(parents=True, exist_ok=True)
    save_checkpoint(directory, tiny.config, golden_weights(tiny))
    shutil.copy(golden.ROOT / golden.load_manifest()["models"][name]["tokenizer"]["path"], directory / "tokenizer.json")
    return directory
