"""`mmx models`: the preset table with parameter counts, and a checkpoint's row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmx.commands.app import main
from mmx.model import MiniMaxConfig, MiniMaxForCausalLM


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:  # Typer exits 0 after a command
        main(["models", *args])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_json_lists_every_preset_with_counts(capsys: pytest.CaptureFixture[str]) -> None:
    rows = {r["name"]: r for r in json.loads(_run(capsys, "--json"))}
    assert set(rows) >= {"minimax-text-01", "tiny", "small", "mmx-mini"}
    full = rows["minimax-text-01"]
    assert round(full["total_params"] / 1e9, 1) == 456.1
    assert round(full["active_params"] / 1e9, 1) == 45.9
    assert (full["lightning_layers"], full["softmax_layers"]) == (70, 10)


def test_table_fits_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys)
    assert "456.1B" in out and "45.9B" in out and "mmx-mini" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_checkpoint_row(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    MiniMaxForCausalLM(MiniMaxConfig.from_name("tiny")).save_pretrained(tmp_path)
    rows = json.loads(_run(capsys, "--json", "--checkpoint", str(tmp_path)))
    assert rows[-1]["name"] == str(tmp_path) and rows[-1]["weights"] == "checkpoint"
    assert rows[-1]["total_params"] == next(r for r in rows if r["name"] == "tiny")["total_params"]


def test_bad_checkpoint_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--checkpoint", str(tmp_path)])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: no config.json in {tmp_path} — point at a MiniMax checkpoint directory"
    )
