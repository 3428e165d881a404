"""Run directories: the default name of a new one, and the check that an `--out` path is one mmx may write to.

mmx never writes over files it did not create: `--out` must be a new or empty directory, or a run of the same kind
(which the command then resumes). Anything else is refused with one line naming what is there.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from mmx.errors import MmxError
from mmx.results.lock import LOCK_FILE
from mmx.results.store import BENCH_FILE, RUN_FILE, SAMPLES_FILE, SUMMARY_FILE, SWEEPS_FILE, RunStore

TRAIN_FILE = "train.json"
# What each kind of run writes; a directory that lost its run.json (or train.json) may hold these and nothing else,
# and is then resumed only if its records' identity matches the new run's.
RUN_FILES = {
    "eval": {SAMPLES_FILE, SUMMARY_FILE, SWEEPS_FILE},
    "bench": {BENCH_FILE},
    "lm-eval": {SAMPLES_FILE, "lm_eval_requests.jsonl", "lm_eval_results.json", "lm_eval_output.json"},
    "train": {"metrics.jsonl", "checkpoint", "checkpoint.old", "checkpoint.tmp", "model"},
}
# The files whose presence makes a directory a (possibly damaged) run of that kind.
EVIDENCE = {"eval": SAMPLES_FILE, "bench": BENCH_FILE, "lm-eval": SAMPLES_FILE, "train": "checkpoint"}
_LISTED = 3


def model_slug(spec: str) -> str:
    """A directory-safe name for a spec: `random:tiny` -> `random-tiny`, `mmx:/ckpt/run7/` -> `mmx-run7`."""
    prefix, sep, rest = spec.partition(":")
    name = f"{prefix}-{Path(rest.rstrip('/')).name or rest}" if sep else spec
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def default_out(kind: str, spec: str) -> Path:
    """`runs/<kind>-<model>-<timestamp>`: a fresh directory per run unless `--out` names one (to resume)."""
    return Path("runs") / f"{kind}-{model_slug(spec)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_out_dir(out: Path, kind: str) -> None:
    """Refuse an output path mmx must not write to, before the model is loaded (cheap, no side effects): one that
    cannot be created or written, a file, or a directory holding anything but a run of this `kind`."""
    try:
        exists = out.exists()
    except OSError as err:  # e.g. a name longer than the file system allows
        shown = str(out) if len(str(out)) <= 80 else str(out)[:77] + "..."
        raise MmxError(f"cannot use {shown} as a run directory: {err.strerror}", "choose a shorter path") from None
    if not exists:
        _check_creatable(out)
        return
    if not out.is_dir():
        raise MmxError(f"{out} is a file, not a directory", "pass a new or empty --out directory")
    if not os.access(out, os.W_OK | os.X_OK):
        raise MmxError(f"cannot write to {out}: permission denied", "choose another --out directory")
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    if not entries:
        return
    marker = TRAIN_FILE if kind == "train" else RUN_FILE
    if marker in entries:
        if marker == RUN_FILE:
            found = str(RunStore(out).meta.get("kind") or "eval")
            if found != kind:
                raise MmxError(f"{out} holds a run of kind {found!r}, not {kind!r}", "pass a new --out directory")
        return
    foreign = [name for name in entries if name not in RUN_FILES.get(kind, set())]
    if foreign or EVIDENCE.get(kind) not in entries:
        shown = ", ".join((foreign or entries)[:_LISTED]) + (" …" if len(foreign or entries) > _LISTED else "")
        raise MmxError(
            f"{out} is not empty and holds no mmx {kind} run ({shown})",
            "pass a new or empty --out directory: mmx never writes over files it did not create",
        )


def _check_creatable(out: Path) -> None:
    probe = out
    while True:
        try:
            if probe.exists() or probe.parent == probe:
                break
        except OSError:
            pass
        probe = probe.parent
    if probe.exists() and (not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK)):
        raise MmxError(f"cannot write to {out}: {probe} is not a writable directory", "choose another --out directory")


HTML_MARK = b'<meta name="generator" content="mmx'  # in every report `mmx report --html` writes


def check_html_target(target: Path) -> None:
    """`--html FILE` may be a new file or an earlier mmx report, never anything else (a run's files included)."""
    if target.is_dir():
        raise MmxError(f"--html {target} is a directory", "name the report file, e.g. --html report.html")
    if target.exists():
        try:
            with target.open("rb") as fh:
                head = fh.read(1 << 14)
        except OSError as err:
            raise MmxError(f"cannot read {target}: {err.strerror}", "choose another --html path") from None
        if HTML_MARK not in head:
            raise MmxError(
                f"{target} exists and is not a report mmx wrote", "choose another --html path; mmx never replaces it"
            )


def check_csv_target(folder: Path, headers: dict[str, list[str]]) -> None:
    """`--csv DIR` may be new, or hold files of other names, or earlier report CSVs (recognised by their header
    row); never a run directory, and never a file of the same name that mmx did not write."""
    if folder.exists() and not folder.is_dir():
        raise MmxError(f"--csv {folder} is a file", "name a folder for the CSV files")
    if not folder.is_dir():
        return
    if any((folder / name).exists() for name in (RUN_FILE, TRAIN_FILE, SAMPLES_FILE, BENCH_FILE)):
        raise MmxError(f"--csv {folder} is a run directory", "write the CSV files to a folder of their own")
    for name, header in headers.items():
        path = folder / name
        if not path.exists():
            continue
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                first = fh.readline().rstrip("\r\n")
        except OSError as err:
            raise MmxError(f"cannot read {path}: {err.strerror}", "choose another --csv folder") from None
        if first != ",".join(header):
            raise MmxError(
                f"{path} exists and is not a CSV file mmx wrote", "choose another --csv folder; mmx never replaces it"
            )
