"""Tokenizers of native models: the byte-level one (UTF-8 bytes plus three special ids, no downloaded vocabulary)
and a checkpoint's own `tokenizer.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmx.errors import MmxError


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


class JsonTokenizer:
    """A Hugging Face `tokenizer.json` through the `tokenizers` package (the `hf` extra), without special tokens."""

    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise MmxError("this checkpoint needs the tokenizers package", "pip install 'mmx[hf]'") from None
        self.path = path
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as err:  # the tokenizers package raises a bare Exception for any file it cannot parse
            reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
            raise MmxError(
                f"{path} is not a tokenizer.json the tokenizers package can read ({reason})",
                "restore the file from the model's repository, or pass another tokenizer",
            ) from None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no BOS/EOS added."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, special tokens dropped."""
        return self._tok.decode(ids, skip_special_tokens=True)

    def describe(self) -> dict[str, object]:
        """What a run records about its tokenizer."""
        return {"type": "tokenizer.json", "path": str(self.path), "vocab_size": self._tok.get_vocab_size()}


class HFTokenizer:
    """A transformers tokenizer behind mmx's `Tokenizer` protocol: `encode` adds no special tokens, `decode` drops
    them, so task lengths count exactly the text."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` alone (no BOS/EOS); `verbose=False` silences the over-length warning for long texts."""
        return self.tok.encode(text, add_special_tokens=False, verbose=False)

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, special tokens dropped."""
        return self.tok.decode(ids, skip_special_tokens=True)

    @property
    def eos_token(self) -> str | None:
        return self.tok.eos_token

    @property
    def bos_token(self) -> str | None:
        return self.tok.bos_token

    @property
    def pad_token(self) -> str | None:
        return self.tok.pad_token

    def describe(self) -> dict[str, Any]:
        """What a run records about its tokenizer."""
        return {"type": "hf", "class": type(self.tok).__name__, "vocab_size": len(self.tok)}
