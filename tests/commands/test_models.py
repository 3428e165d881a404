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


TINY = MiniMaxConfig.from_name("tiny").to_dict()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([1, 2], "config.json: the top level: expected a JSON object, got [1, 2]"),
        ({**TINY, "hidden_size": "64"}, "config.json: hidden_size: expected an integer, got '64'"),
        ({**TINY, "hidden_size": -64}, "config.json: hidden_size: expected a number greater than 0, got -64"),
        ({**TINY, "hidden_size": 64.5}, "config.json: hidden_size: expected an integer, got 64.5"),
        ({**TINY, "max_position_embeddings": "1m"}, "max_position_embeddings: expected an integer, got '1m'"),
        ({}, "config.json: vocab_size: missing (and 7 more problems)"),
        ({**TINY, "hidden_size": 2**30}, "expected sizes that build a model of at most 4.40e+12 parameters"),
        ({**TINY, "rope_parameters": {"rope_theta": "x"}}, "rope_parameters.rope_theta: expected a number"),
        ({**TINY, "postnorm": "yes"}, "postnorm: expected true or false, got 'yes'"),
    ],
)
def test_a_config_of_the_wrong_shape_is_one_line_naming_the_field(
    mmx, tmp_path: Path, config: object, message: str
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, out, err = mmx("models", "--checkpoint", tmp_path)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert "fix that field, or restore the checkpoint's original config.json" in err


def test_a_null_optional_field_keeps_its_default(mmx, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "rope_theta": None, "head_dim": None}))
    assert MiniMaxConfig.from_pretrained(tmp_path).rope_theta == MiniMaxConfig().rope_theta
    code, _, err = mmx("models", "--checkpoint", tmp_path, "--json")
    assert code == 0, err
