"""GLM-ASR-Nano-2512 in plain PyTorch, proven stage by stage against the reference implementation."""

from .audio import log_mel
from .capture import capture
from .config import AudioConfig, ConfigError, GlmAsrConfig, TextConfig
from .decoder import KVCache
from .loader import CheckpointError, load_model
from .model import GlmAsrModel

__all__ = ["AudioConfig", "CheckpointError", "ConfigError", "GlmAsrConfig", "GlmAsrModel", "KVCache", "TextConfig", "capture", "load_model", "log_mel"]
