"""Tokenizers: the byte-level one of native models (UTF-8 bytes plus three special ids, no downloaded vocabulary), a
checkpoint's own `tokenizer.json`, a transformers tokenizer behind the same protocol, and a stated estimate for
servers that neither count tokens for us nor name a tokenizer."""

from __future__ import annotations

import re
import threading
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

    def token_text(self, token_id: int) -> str | None:
        """How token `token_id` is written in text (a special token's name, e.g. `<s>`)."""
        return self._tok.id_to_token(token_id)

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


class EstimatedTokenizer:
    """A stand-in that estimates token counts where no real tokenizer is available (a server without `/tokenize`,
    and no `--tokenizer`). Text splits like a subword tokenizer's pre-tokenizer — a word with its leading space, in
    pieces of at most `WORD_PIECE` letters; each digit, punctuation mark and line break apart — which counts a little
    more than real English BPE tokenizers do, so prompts sized with it err short rather than overflow. Decoding is
    exact for text it encoded. Runs that use it say so (`describe()["type"] == "estimate"`)."""

    WORD_PIECE = 4
    _PIECES = re.compile(rf" ?[^\W\d_]{{1,{WORD_PIECE}}}|\d| ?[^\w\s]|\n|[^\S\n]+|_")

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._pieces: list[str] = []
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in self._PIECES.findall(text):
            found = self._ids.get(piece)
            if found is None:
                with self._lock:
                    found = self._ids.setdefault(piece, len(self._pieces))
                    if found == len(self._pieces):
                        self._pieces.append(piece)
            ids.append(found)
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self._pieces[i] for i in ids if 0 <= i < len(self._pieces))

    def describe(self) -> dict[str, object]:
        return {"type": "estimate", "rule": f"words in pieces of <= {self.WORD_PIECE} letters, digits and marks apart"}
