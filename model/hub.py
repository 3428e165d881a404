"""Models from the Hugging Face hub's local cache or a plain directory."""

from __future__ import annotations

from pathlib import Path

from mmx.errors import MmxError


def resolve_local(name_or_path: str) -> tuple[Path, str | None]:
    """A local model directory and, for the HF cache, its snapshot commit. Never touches the network."""
    if not name_or_path:
        raise MmxError("hf: needs a model directory or name", "write hf:PATH or hf:ORG/NAME (from the local HF cache)")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve(), None
    if path.exists():
        raise MmxError(f"{path} is not a directory", "pass the directory that holds config.json and the weights")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(name_or_path, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        raise MmxError(
            f"{name_or_path!r} is neither a local directory nor in the local Hugging Face cache",
            "mmx never downloads: fetch it first (`hf download NAME`) or pass hf:PATH to a model directory",
        ) from None
    return snapshot, snapshot.name
