"""Lightning attention: exact reference, chunked PyTorch, and the dispatcher that picks a path per device."""

from .chunk import chunk_lightning, decode_step
from .dispatch import lightning_attn, lightning_decode
from .naive import naive_masked, naive_recurrence, naive_recurrence_grads

__all__ = [
    "chunk_lightning",
    "decode_step",
    "lightning_attn",
    "lightning_decode",
    "naive_masked",
    "naive_recurrence",
    "naive_recurrence_grads",
]
