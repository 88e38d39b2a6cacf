"""GLM-ASR-Nano-2512 in plain PyTorch, proven stage by stage against the reference implementation."""

from .audio import log_mel
from .audio_io import AudioError, load_audio
from .capture import capture
from .config import AudioConfig, ConfigError, GlmAsrConfig, TextConfig
from .decoder import KVCache
from .generate import greedy_generate
from .loader import CheckpointError, load_model
from .model import GlmAsrModel
from .onnx_backend import OnnxModel, load_onnx_model_and_processor
from .processor import Processor
from .tokenizer import Tokenizer
from .transcribe import Segment, Transcription, load_model_and_processor, transcribe, transcribe_detailed

__all__ = [
    "AudioConfig", "AudioError", "CheckpointError", "ConfigError", "GlmAsrConfig", "GlmAsrModel", "KVCache",
    "OnnxModel", "Processor", "Segment", "TextConfig", "Tokenizer", "Transcription", "capture", "greedy_generate", "load_audio",
    "load_model", "load_model_and_processor", "load_onnx_model_and_processor", "log_mel", "transcribe", "transcribe_detailed",
]
