"""Byte-level tokenizer for native models: UTF-8 bytes plus three special ids, no downloaded vocabulary."""

from __future__ import annotations


class ByteTokenizer:
    """Ids 0-255 are bytes; PAD, BOS and EOS follow. Decoding is lossless for any string encoding produced."""

    pad_id = 256
    bos_id = 257
    eos_id = 258
    vocab_size = 259

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of `text`, one id each (no BOS/EOS: callers add them where a model needs them)."""
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        """Bytes back to text; special ids are dropped and a cut multi-byte character becomes U+FFFD."""
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def describe(self) -> dict[str, object]:
        """What a run records about its tokenizer."""
        return {"type": "byte", "vocab_size": self.vocab_size, "bos_id": self.bos_id, "eos_id": self.eos_id}
