"""GLM-ASR-Nano-2512 in plain PyTorch, proven stage by stage against the reference implementation."""

from glm_asr.model.front_end import log_mel
from glm_asr.io.audio_file import AudioError, load_audio
from glm_asr.model.taps import capture
from glm_asr.model.config import AudioConfig, ConfigError, GlmAsrConfig, TextConfig
from glm_asr.model.decoder import KVCache
from glm_asr.transcription.generate import greedy_generate
from glm_asr.io.checkpoint import CheckpointError, load_model
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.onnx.backend import OnnxModel, load_onnx_model_and_processor
from glm_asr.transcription.processor import Processor
from glm_asr.text.tokenizer import Tokenizer
from glm_asr.transcription.transcribe import Segment, Transcription, load_model_and_processor, transcribe, transcribe_detailed
from glm_asr import corpus

# Older docs name the corpus modules by their former names: glm_asr.bulk and glm_asr.ray_corpus.
_ALIASES = {"bulk": "glm_asr.corpus.batching", "ray_corpus": "glm_asr.corpus.ray_cluster"}

__all__ = [
    "AudioConfig", "AudioError", "CheckpointError", "ConfigError", "GlmAsrConfig", "GlmAsrModel", "KVCache",
    "OnnxModel", "Processor", "corpus", "Segment", "TextConfig", "Tokenizer", "Transcription", "capture", "greedy_generate", "load_audio",
    "load_model", "load_model_and_processor", "load_onnx_model_and_processor", "log_mel", "transcribe", "transcribe_detailed",
]


def __getattr__(name: str):  # noqa: ANN202
    if name in _ALIASES:
        import importlib

        return importlib.import_module(_ALIASES[name])
    raise AttributeError(f"module 'glm_asr' has no attribute {name!r}")
