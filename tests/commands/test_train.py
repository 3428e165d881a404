"""`mmx train` from the command line: a tiny run end to end, resuming, and bad input as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmx.commands.app import _register_commands, app, main
from mmx.model.modeling import MiniMaxForCausalLM

TINY = ["--model", "tiny", "--data", "niah_single_1,vt", "--batch-tokens", "2k", "--min-doc-len", "600", "-q"]


def _run(args: list[str]):
    _register_commands()
    return CliRunner().invoke(app, ["train", *args])


def test_a_user_error_is_one_line_and_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path / "run"), "--stages", "4k:ten"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: bad stage '4k:ten'")


def test_tiny_run_exports_a_model_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _run(["--out", str(out), "--stages", "1k:2", *TINY])
    assert first.exit_code == 0, first.output
    meta = json.loads((out / "train.json").read_text())
    assert meta["kind"] == "train" and meta["params"]["stages"] == ["1k:2"]
    assert meta["command"][:4] == ["mmx", "train", "--out", str(out)] and "--stages" in meta["command"]
    model = MiniMaxForCausalLM.from_pretrained(out / "model", device="cpu")
    assert model.config.hidden_size == 64
    again = _run(["--out", str(out), "--stages", "1k:2", *TINY])  # already finished: nothing more to do
    assert again.exit_code == 0, again.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    changed = _run(["--out", str(out), "--stages", "1k:3", *TINY])
    assert changed.exit_code != 0
    assert "different parameters (stages)" in str(changed.exception)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stages", "1k"], "bad stage"),
        (["--stages", "1k:2", "--data", "nope"], "unknown task"),
        (["--stages", "4k:2", "--batch-tokens", "1k"], "shorter than a row"),
        (["--stages", "1000:2"], "multiples of --align"),
        (["--stages", "1k:2", "--set", "rope_theta"], "bad --set"),
        (["--stages", "1k:2", "--export-dtype", "fp8"], "bad --export-dtype"),
        (["--stages", "1k:2", "--init", "/no/such/dir"], "no model directory"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, args: list[str], message: str) -> None:
    result = _run(["--out", str(tmp_path / "run"), *args])
    assert result.exit_code != 0
    assert message in str(result.exception)
