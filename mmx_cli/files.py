"""Reading and writing the files mmx owns, safely: writes that never leave a half-written file, and reads that turn a
file of the wrong shape into one line naming the file, the field and what was expected.

Every part (model, results, the workflows) reads some file a user can hand it — a checkpoint's `config.json`, a run's
`run.json` or `samples.jsonl`, a training checkpoint — so the boundary checks live here, below all of them.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from mmx.errors import MmxError

T = TypeVar("T")
_RESUME = "then rerun the same command: it resumes where it stopped"
NO_ROOM = {  # write errors that mean "no room", not "a wrong path": the fix, and the run resumes
    errno.ENOSPC: f"free some disk space, {_RESUME}",
    errno.EDQUOT: f"free some of your disk quota, {_RESUME}",
    errno.EFBIG: f"raise the file-size limit (ulimit -f), {_RESUME}",
}


def write_hint(err: OSError, otherwise: str) -> str:
    """The fix for a failed write: make room (and resume) when there is none, else `otherwise`."""
    return NO_ROOM.get(err.errno, otherwise) if err.errno is not None else otherwise


def atomic_write(path: str | os.PathLike[str], data: str | bytes, hint: str = "choose another path") -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`: a reader sees
    the old file or the new one, never a torn one, whatever happens mid-write (disk full, SIGKILL, power loss)."""
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:64]}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as err:
        raise MmxError(f"cannot write {target}: {err.strerror}", write_hint(err, hint)) from None
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    return target


def read_json(path: Path, hint: str) -> Any:
    """The parsed contents of a JSON file; a missing, unreadable or malformed file is one MmxError with `hint`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MmxError(f"{path} does not exist", hint) from None
    except IsADirectoryError:
        raise MmxError(f"{path} is a directory, not a file", hint) from None
    except UnicodeDecodeError:
        raise MmxError(f"{path} is not UTF-8 text", hint) from None
    except OSError as err:
        raise MmxError(f"cannot read {path}: {err.strerror}", hint) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise MmxError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})", hint) from None
    except RecursionError:
        raise MmxError(f"{path} is nested too deeply to be a file mmx wrote", hint) from None


_EXPECTED = {  # pydantic error type -> what the field should have been, in words
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "model_attributes_type": "a JSON object",
}


def _expected(error: Mapping[str, Any]) -> str:
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    for bound, words in (("gt", "greater than"), ("ge", "at least"), ("lt", "less than"), ("le", "at most")):
        if bound in ctx and kind.startswith(("greater", "less")):
            return f"a number {words} {ctx[bound]}"
    if kind == "literal_error" and "expected" in ctx:
        return f"one of {ctx['expected']}"
    return str(error.get("msg", "a valid value")).removeprefix("Value error, ").replace("Input should be ", "")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_TYPE_TAGS = frozenset({"int", "str", "float", "bool", "list", "dict", "tuple", "none"})


def _field(loc: tuple[Any, ...]) -> str:
    """The dotted path of a field, without the tags pydantic adds for each member of a union (`list[...]`, `str`)."""
    parts = [
        str(part)
        for part in loc
        if not (isinstance(part, str) and ("[" in part or part.startswith("constrained-") or part in _TYPE_TAGS))
    ]
    return ".".join(parts) or "the top level"


def schema_error(where: str, err: Any, hint: str) -> MmxError:
    """A pydantic ValidationError as one line: `where: field: expected …, got …` (the first problem, and a count of
    the fields with others)."""
    problems = err.errors(include_url=False)
    first = problems[0]
    field = _field(first.get("loc", ()))
    rest = len({_field(p.get("loc", ())) for p in problems} - {field})
    more = f" (and {rest} more problem{'s' if rest > 1 else ''})" if rest else ""
    if first.get("type") == "missing":
        return MmxError(f"{where}: {field}: missing{more}", hint)
    whole = not first.get("loc") and isinstance(first.get("input"), dict)  # a check across fields: no one value
    got = "" if whole else f", got {_shown(first.get('input'))}"
    return MmxError(f"{where}: {field}: expected {_expected(first)}{got}{more}", hint)


def validated(schema: type[T], data: Any, where: str, hint: str) -> T:
    """`data` checked against a pydantic model; a mismatch is one MmxError naming `where`, the field and the fix."""
    from pydantic import ValidationError

    try:
        return schema.model_validate(data)  # type: ignore[attr-defined]
    except ValidationError as err:
        raise schema_error(where, err, hint) from None


def line_problem(schema: type[Any], data: Any) -> str | None:
    """Why one JSONL record does not fit `schema` ("field: expected …"), or None when it fits."""
    from pydantic import ValidationError

    try:
        schema.model_validate(data)
    except ValidationError as err:
        return str(schema_error("", err, "")).removeprefix(": ").split(" — ")[0]
    return None
