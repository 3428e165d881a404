"""MiniMax-Text-01 in PyTorch: config, modules, checkpoints, tokenizers, backends, training."""

from .cache import ModelCache
from .config import PRESETS, MiniMaxConfig
from .modeling import MiniMaxForCausalLM, ParameterCounts
from .tokenizer import ByteTokenizer

__all__ = ["PRESETS", "ByteTokenizer", "MiniMaxConfig", "MiniMaxForCausalLM", "ModelCache", "ParameterCounts"]
