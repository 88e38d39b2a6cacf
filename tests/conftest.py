import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_AUDIO = Path(__file__).resolve().parent.parent.parent / "shared" / "audio"


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """tiny_a's golden weights as a release-layout checkpoint directory."""
    from conformance.harness.cases import MODELS
    from conformance.harness.weights import make_weights, save_checkpoint

    tiny = MODELS["tiny_a"]
    return save_checkpoint(tmp_path / "ckpt", tiny.config, make_weights(tiny.config, tiny.seed, tiny.residual_scale))
