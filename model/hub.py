"""Models from a local directory or the Hugging Face Hub, the way Hugging Face users expect: a Hub name downloads when
online and comes from the local cache when `HF_HUB_OFFLINE` is set (transformers and huggingface_hub decide both)."""

from __future__ import annotations

from pathlib import Path

from mmx.errors import MmxError


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is off limits (`HF_HUB_OFFLINE`, as huggingface_hub read it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def locate(name_or_path: str) -> Path | None:
    """The local directory `name_or_path` names, or None when it names a Hub repository (`org/name`)."""
    if not name_or_path:
        raise MmxError("hf: needs a model directory or name", "write hf:PATH or hf:ORG/NAME")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise MmxError(f"{path} is not a directory", "pass the directory that holds config.json and the weights")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise MmxError(
            f"{name_or_path!r} is neither a local directory nor a Hugging Face model name",
            "pass hf:PATH to a model directory, or hf:ORG/NAME",
        ) from None
    return None


def cached_snapshot(repo_id: str, revision: str | None = None) -> tuple[Path, str] | None:
    """The cached snapshot a Hub model was loaded from: its directory and commit (None if the cache has none)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if not isinstance(found, str):
        return None
    snapshot = Path(found).parent
    return snapshot, snapshot.name


def load_failure(name: str, err: BaseException, what: str = "model") -> MmxError:
    """One line for a model or tokenizer that would not load, with the fix that fits being offline or online."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if Path(name).expanduser().is_dir():
        return MmxError(f"cannot load a {what} from {name}: {first}", "check the directory's files")
    if hub_offline():
        return MmxError(
            f"{name!r} is not a local directory and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)",
            f"download it once (`hf download {name}`), or unset HF_HUB_OFFLINE to let mmx fetch it",
        )
    return MmxError(
        f"cannot load the {what} {name!r} from the Hugging Face Hub: {first}",
        "check the name and your network; gated models need `hf auth login`",
    )
