"""Lightning attention: the exact reference, the chunked PyTorch path (`torch_chunked`), and the dispatcher that
picks a path per device."""

from .dispatch import lightning_attn, lightning_decode
from .naive import naive_masked, naive_recurrence, naive_recurrence_grads
from .torch_chunked import chunk_lightning, decode_step

__all__ = [
    "chunk_lightning",
    "decode_step",
    "lightning_attn",
    "lightning_decode",
    "naive_masked",
    "naive_recurrence",
    "naive_recurrence_grads",
]
