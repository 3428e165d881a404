"""The shipped default model: its weights load, and a short CPU `mmx eval` reproduces the recorded predictions.

`benchmarks/results/mmx-mini/cpu-check/` is a run directory written by the command in its run.json, on a CPU, from
the shipped weights; rerunning that command must give the same prompts, the same predictions and the same scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mmx.model
from mmx.commands.app import _register_commands, app
from mmx.model.backends.base import load_backend
from mmx.model.config import MiniMaxConfig
from mmx.results.store import RunStore

WEIGHTS = Path(mmx.model.__file__).parent / "weights" / "mmx-mini"
REFERENCE = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "mmx-mini" / "cpu-check"


def test_shipped_weights_match_the_preset_and_the_size_budget() -> None:
    shipped = MiniMaxConfig.from_pretrained(WEIGHTS)
    assert shipped == MiniMaxConfig.from_name("mmx-mini")
    size = sum(p.stat().st_size for p in WEIGHTS.glob("*.safetensors"))
    assert size <= 25 * 10**6
    assert (WEIGHTS / "MODEL_CARD.md").is_file()
    backend = load_backend("mmx-mini", device="cpu")
    assert backend.describe()["random_weights"] is False


def test_short_cpu_eval_reproduces_the_recorded_scores(tmp_path: Path) -> None:
    recorded = RunStore(REFERENCE)
    argv = recorded.meta["command"][1:]  # ["eval", "ruler", ...] as it was run
    out = argv.index("--out")
    argv = [*argv[: out + 1], str(tmp_path / "run"), *argv[out + 2 :]]
    _register_commands()
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    fresh = {(r["task"], r["length"], r["index"]): r for r in RunStore(tmp_path / "run").samples()}
    expected = {(r["task"], r["length"], r["index"]): r for r in recorded.samples()}
    assert fresh.keys() == expected.keys()
    for key, want in expected.items():
        got = fresh[key]
        assert got["prompt_hash"] == want["prompt_hash"], key
        assert got["prediction"] == want["prediction"], key
        assert got["score"] == pytest.approx(want["score"]), key
    summary = json.loads(json.dumps(recorded.meta["model"]))
    assert summary["random_weights"] is False
