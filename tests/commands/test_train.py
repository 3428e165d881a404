"""`mmx train` from the command line: a tiny run end to end, resuming, and bad input as one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
        (["--stages", "1k:2:inf"], "steps and RoPE base must be positive"),
        (["--stages", "1k:2", "--data", "nope"], "unknown task"),
        (["--stages", "1k:2", "--data", "drill=inf"], "weight of 'drill' must be a positive number, got inf"),
        (["--stages", "4k:2", "--batch-tokens", "1k"], "shorter than a row"),
        (["--stages", "1000:2"], "multiples of --align"),
        (["--stages", "1k:2", "--set", "rope_theta"], "bad --set"),
        (["--stages", "1k:2", "--set", 'hidden_size="64"'], "--set: hidden_size: expected an integer, got '64'"),
        (["--stages", "1k:2", "--set", "hidden_size=-64"], "--set: hidden_size: expected a number greater than 0"),
        (["--stages", "1k:2", "--set", "num_key_value_heads=3"], "4 heads do not split into 3 KV groups"),
        (["--stages", "1k:2", "--export-dtype", "fp8"], "bad --export-dtype"),
        (["--stages", "1k:2", "--init", "/no/such/dir"], "no model directory"),
        (["--stages", "1k:2", "--checkpoint-every", "0"], "--checkpoint-every must be at least 1, got 0"),
        (["--stages", "1k:2", "--warmup", "-1"], "--warmup must be at least 0"),
        (["--stages", "1k:2", "--lr", "inf"], "--lr must be a positive number, got inf"),
        (["--stages", "1k:2", "--weight-decay", "nan"], "--weight-decay must be a non-negative number"),
        (["--stages", "1k:2", "--time-limit", "0"], "--time-limit must be a positive number"),
        (["--stages", "1k:2", "--log-every", "-5"], "--log-every must be 0 or more"),
    ],
)
def test_bad_input_is_one_clear_error(mmx, tmp_path: Path, args: list[str], message: str) -> None:
    code, out, err = mmx("train", "--out", tmp_path / "run", "--model", "tiny", *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_out_must_be_new_empty_or_a_training_run(mmx, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text("my own notes\n")
    code, _, err = mmx("train", "--out", mine, "--stages", "1k:2", *TINY)
    assert code == 2 and "is not empty and holds no mmx train run (metrics.jsonl)" in err
    assert (mine / "metrics.jsonl").read_text() == "my own notes\n" and sorted(p.name for p in mine.iterdir()) == [
        "metrics.jsonl"
    ]


def test_init_weights_cannot_take_a_config_change_of_shape(mmx, tmp_path: Path) -> None:
    from mmx.model.config import WEIGHTS_DIR

    code, _, err = mmx(
        "train",
        "--out",
        tmp_path / "run",
        "--init",
        WEIGHTS_DIR / "mmx-mini",
        "--stages",
        "1k:1",
        "--batch-tokens",
        "2k",
        "--set",
        "intermediate_size=128",
        "-q",
    )
    assert code == 2 and "cannot carry weights across the config change" in err, err
    assert not (tmp_path / "run").exists()


def test_ctrl_c_says_how_to_resume_and_a_second_trainer_is_refused(mmx, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--out", str(out), "--stages", "1k:200", "--checkpoint-every", "1", *TINY]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmx", "train", *args], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    code, _, err = mmx("train", *args)
    assert code == 2 and f"is in use by process {proc.pid}" in err, err
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("interrupted: rerun the same command to resume from step ")
