"""Property-based tests of the files mmx reads back: generated wrong-shaped `config.json`, `run.json` and
`samples.jsonl` contents must end in exit code 2 with one line, or in a clean recovery — never a traceback, never a
lost, changed or relabelled sample.

Each example runs the real command in this process (`mmx models --checkpoint`, `mmx report`, `mmx eval` resuming).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmx.commands.app import main
from mmx.model.config import PRESETS
from mmx.results.store import RunStore

EVAL = ("eval", "ruler", "--model", "random:tiny", "--tasks", "vt", "--lengths", "1k", "--samples", "2", "--quiet")
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def mmx(*args: object) -> tuple[int, str, str]:
    """`mmx ARGS…` in this process; any exception but SystemExit (a traceback for a user) fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code or 0
    return int(code), out.getvalue(), err.getvalue()


def assert_clean_refusal(code: int, err: str) -> None:
    """Exit 2 with exactly one `error: …` line."""
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per generated example (function-scoped pytest fixtures do not reset between examples)."""
    with tempfile.TemporaryDirectory(prefix="mmx-bad-input-") as folder:
        yield Path(folder)


# --- config.json -------------------------------------------------------------------------------------------------


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(sorted(base))
    replaced = st.builds(lambda k, v: {**base, k: v}, keys, json_values)
    dropped = st.builds(lambda k: {x: y for x, y in base.items() if x != k}, keys)
    several = st.builds(lambda extra: {**base, **extra}, st.dictionaries(keys, json_values, min_size=2, max_size=5))
    return replaced | dropped | several | json_values


@given(config=_mutations(PRESETS["tiny"].to_dict()))
@EXAMPLES
def test_a_wrong_shaped_config_json_is_one_error_or_a_working_model(config: Any) -> None:
    with scratch() as folder:
        (folder / "config.json").write_text(json.dumps(config))
        code, out, err = mmx("models", "--checkpoint", folder, "--json")
        if code == 0:
            described = json.loads(out)[-1]
            assert described["weights"] == "checkpoint" and described["total_params"] > 0
        else:
            assert_clean_refusal(code, err)


# --- a real run to damage -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bad-inputs") / "run"
    code, _, err = mmx(*EVAL, "--out", out)
    assert code == 0, err
    return out


def _samples(run: Path) -> list[dict[str, Any]]:
    return sorted(RunStore(run, on_corrupt=lambda _: None).samples(), key=lambda r: r["index"])


def _copy(run: Path, folder: Path) -> Path:
    return Path(shutil.copytree(run, folder / "run"))


@given(data=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_wrong_shaped_run_json_is_refused_or_reported_without_losing_a_sample(tiny_run: Path, data: Any) -> None:
    meta = json.loads((tiny_run / "run.json").read_text())
    damaged = data.draw(_mutations(meta) | st.builds(lambda p: {**meta, "params": p}, _mutations(meta["params"])))
    with scratch() as folder:
        run = _copy(tiny_run, folder)
        (run / "run.json").write_text(json.dumps(damaged))
        code, _, err = mmx("report", run, "--csv", folder / "csv", "--quiet")
        if code != 0:
            assert_clean_refusal(code, err)
            return
        scored = sum(int(row.split(",")[3]) for row in (folder / "csv" / "scores.csv").read_text().splitlines()[1:])
        assert scored == len(_samples(tiny_run))  # every sample reported, under the run.json they were made with
        assert damaged.get("run_id") == meta["run_id"]


def _bad_sample_lines(real: dict[str, Any]) -> st.SearchStrategy[str]:
    """Lines that cannot be a sample of this run: garbage, torn JSON, other JSON, or a real record with one field of
    the wrong type."""
    text = json.dumps(real)
    wrong = {
        "task": st.none() | st.integers() | st.just("") | st.lists(st.text(), max_size=2),
        "length": st.text(max_size=4) | st.integers(max_value=0) | st.floats(1.5, 1e6) | st.booleans() | st.none(),
        "index": st.text(max_size=4) | st.integers(max_value=-1) | st.floats(0.5, 9.5) | st.none(),
        "score": st.text(max_size=4)
        | st.floats(1.01, 1e9)
        | st.floats(-1e9, -0.01)
        | st.booleans()
        | st.lists(st.none()),
        "status": st.integers() | st.just("") | st.none(),
        "run_id": st.integers() | st.just(""),
    }
    field_wrong = st.sampled_from(sorted(wrong)).flatmap(
        lambda key: wrong[key].map(lambda value: json.dumps({**real, key: value}))
    )
    torn = st.integers(1, len(text) - 1).map(lambda n: text[:n])
    other_json = json_values.filter(lambda v: not isinstance(v, dict) or "task" not in v).map(json.dumps)
    garbage = st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t)
    return field_wrong | torn | other_json | garbage


@given(data=st.data())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_wrong_shaped_sample_lines_are_skipped_and_never_replace_a_real_sample(tiny_run: Path, data: Any) -> None:
    real = _samples(tiny_run)
    lines = (tiny_run / "samples.jsonl").read_text().splitlines()
    for _ in range(data.draw(st.integers(1, 3))):  # bad lines anywhere, before the real ones included
        bad = data.draw(_bad_sample_lines(data.draw(st.sampled_from(real))))
        lines.insert(data.draw(st.integers(0, len(lines))), bad)
    with scratch() as folder:
        run = _copy(tiny_run, folder)
        (run / "samples.jsonl").write_text("\n".join(lines) + "\n")
        code, _, err = mmx("report", run, "--quiet")
        assert code == 0, err
        code, _, err = mmx(*EVAL, "--out", run, "--json")  # resuming: nothing is missing, nothing runs again
        assert code == 0, err
        assert _samples(run) == real


def test_a_sample_of_another_run_makes_the_directory_refused_not_merged(tiny_run: Path) -> None:
    with scratch() as folder:
        run = _copy(tiny_run, folder)
        stranger = {**_samples(tiny_run)[0], "index": 7, "run_id": "0123456789abcdef"}
        with (run / "samples.jsonl").open("a") as fh:
            fh.write(json.dumps(stranger) + "\n")
        for args in (("report", run), (*EVAL, "--out", run)):
            code, _, err = mmx(*args)
            assert_clean_refusal(code, err)
            assert "holds records of another run" in err
