"""MiniMax-Text-01 in PyTorch: config, modules, checkpoints, tokenizers, backends, training."""

from .tokenizer import ByteTokenizer

__all__ = ["ByteTokenizer"]
