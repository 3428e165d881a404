"""MiniMax-Text-01 in PyTorch: config and presets, modules, cache, checkpoints, generation, tokenizers, and the
backends every model under test implements."""

from .cache import ModelCache
from .config import PRESETS, MiniMaxConfig
from .modeling import MiniMaxForCausalLM, ParameterCounts
from .tokenizer import ByteTokenizer

__all__ = ["PRESETS", "ByteTokenizer", "MiniMaxConfig", "MiniMaxForCausalLM", "ModelCache", "ParameterCounts"]
