"""Size strings as RULER counts them: binary suffixes, `4k` = 4096, `4m` = 4,194,304."""

from __future__ import annotations

import re

from mmx.errors import MmxError

_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)\s*$", re.IGNORECASE)
MIN_SWEEP = 4096


def parse_size(text: str) -> int:
    """`'128k'` -> 131072; plain integers pass through."""
    match = _SIZE.match(str(text))
    if not match or int(match.group(1)) == 0:
        raise MmxError(f"bad size {text!r}", "use a positive integer with an optional k/m suffix, e.g. 4k, 128k, 4m")
    return int(match.group(1)) * _SUFFIX[match.group(2).lower()]


def parse_sizes(text: str) -> list[int]:
    """A comma-separated list of sizes, sorted and deduplicated."""
    return sorted({parse_size(part) for part in str(text).split(",") if part.strip()})


def sweep(max_len: int, min_len: int = MIN_SWEEP) -> list[int]:
    """The powers of two from `min_len` up to `max_len` (RULER's sweep); `max_len` itself if smaller."""
    if max_len < min_len:
        return [max_len]
    lengths, n = [], min_len
    while n <= max_len:
        lengths.append(n)
        n *= 2
    return lengths


def format_size(n: int) -> str:
    """The inverse of `parse_size` where it is exact: 131072 -> '128k', 5000 -> '5000'."""
    for suffix, unit in (("m", 1 << 20), ("k", 1 << 10)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def resolve_lengths(max_len: str | None, lengths: str | None, default_max: str) -> list[int]:
    """`--lengths` as given, or the powers of two from 4k up to `--max-len` (else `default_max`); not both."""
    if max_len is not None and lengths is not None:
        raise MmxError("--max-len and --lengths both given", "use --max-len for a sweep or --lengths for a list")
    if lengths is not None:
        parsed = parse_sizes(lengths)
        if not parsed:
            raise MmxError(f"bad size list {lengths!r}", "give comma-separated sizes, e.g. 4k,16k,64k")
        return parsed
    return sweep(parse_size(max_len or default_max))
