"""The training loop on CPU: packed steps lower the loss, and a resumed run continues exactly as an unbroken one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmx.errors import MmxError
from mmx.model.modeling import MiniMaxForCausalLM
from mmx.results.rundir import TRAIN_FILE
from mmx.workflows.train import TrainConfig, Trainer, open_run, parse_stages
from mmx.workflows.train.data import DataMix
from mmx.workflows.train.trainer import METRICS_FILE

CPU = torch.device("cpu")
MIX = DataMix({"niah_single_1": 1.0, "niah_multikey_2": 1.0}, min_len=400)


def _config(stages: str, **changes: object) -> TrainConfig:
    fields: dict[str, object] = dict(
        stages=parse_stages(stages), data=MIX, preset="tiny", batch_tokens=2048, micro_tokens=2048, lr=1e-2, warmup=1
    )
    fields.update(changes)
    return TrainConfig(**fields)


def _metrics(run_dir: Path, key: str) -> list[float]:
    return [json.loads(line)[key] for line in (run_dir / METRICS_FILE).read_text().splitlines()]


def _losses(run_dir: Path) -> list[float]:
    return _metrics(run_dir, "loss")


def test_packed_steps_lower_the_loss(tmp_path: Path) -> None:
    result = Trainer(_config("1k:6"), tmp_path, CPU).run()
    losses = _losses(tmp_path)
    assert result["steps"] == 6 and not result["stopped_early"]
    assert len(losses) == 6
    assert sum(losses[-2:]) / 2 < 0.8 * sum(losses[:2]) / 2
    model = MiniMaxForCausalLM.from_pretrained(tmp_path / "model", device="cpu")
    assert model.config.num_hidden_layers == 4  # the export is a loadable model directory


def test_resume_continues_exactly_across_a_stage_with_a_new_rope_base(tmp_path: Path) -> None:
    config = _config("1k:2,2k:2:5e5")
    straight = Trainer(config, tmp_path / "straight", CPU)
    straight.run()
    first = Trainer(config, tmp_path / "resumed", CPU)
    assert first.run(stop_at=2)["stopped_early"]
    second = Trainer(config, tmp_path / "resumed", CPU)  # a new process would build exactly this
    assert second.resumed_from == 2
    second.run()
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
    assert second.model.config.rope_theta == 5e5
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_micro_batches_add_up_to_the_same_step(tmp_path: Path) -> None:
    Trainer(_config("1k:1", micro_tokens=2048), tmp_path / "whole", CPU).run()
    Trainer(_config("1k:1", micro_tokens=1024), tmp_path / "split", CPU).run()
    # the same loss and the same accumulated gradient (Adam's first update is sign-like, so weights are no test)
    assert _losses(tmp_path / "split") == pytest.approx(_losses(tmp_path / "whole"), rel=1e-5)
    assert _metrics(tmp_path / "split", "grad_norm") == pytest.approx(
        _metrics(tmp_path / "whole", "grad_norm"), rel=1e-4
    )


def test_steps_trained_again_after_a_kill_are_logged_once(tmp_path: Path) -> None:
    config = _config("1k:4")
    straight = tmp_path / "straight"
    Trainer(config, straight, CPU).run()
    resumed = tmp_path / "resumed"
    Trainer(config, resumed, CPU, checkpoint_every=2).run(stop_at=2)
    with (resumed / METRICS_FILE).open("a") as log:  # a step logged after the checkpoint, then the process died
        log.write(json.dumps({"step": 3, "loss": 99.0}) + "\n")
    Trainer(config, resumed, CPU).run()
    assert _metrics(resumed, "step") == [1, 2, 3, 4]
    assert _losses(resumed) == _losses(straight)


def _meta(config: TrainConfig) -> dict:
    return {"kind": "train", "command": ["mmx", "train"], "params": config.to_dict()}


def test_a_checkpoint_is_resumed_only_by_the_run_that_made_it(tmp_path: Path) -> None:
    config, other = _config("1k:2"), _config("1k:2", lr=5e-3)
    assert open_run(tmp_path, _meta(config)) is False
    Trainer(config, tmp_path, CPU).run(stop_at=1)
    (tmp_path / TRAIN_FILE).unlink()  # lost, then a rerun with other parameters
    with pytest.raises(MmxError, match="holds a checkpoint of another training run but no train.json"):
        open_run(tmp_path, _meta(other))
    assert not (tmp_path / TRAIN_FILE).exists()
    assert open_run(tmp_path, _meta(config)) is True  # the run that made it carries on
    assert json.loads((tmp_path / TRAIN_FILE).read_text())["run_id"]
    with pytest.raises(MmxError, match="was made by a training run with other parameters"):
        Trainer(other, tmp_path, CPU)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no step"])
def test_a_damaged_checkpoint_is_one_error(tmp_path: Path, damage: str) -> None:
    config = _config("1k:2")
    Trainer(config, tmp_path, CPU).run(stop_at=1)
    state_file = tmp_path / "checkpoint" / "trainer.pt"
    if damage == "garbage":
        state_file.write_bytes(b"not a checkpoint")
    elif damage == "truncated":
        state_file.write_bytes(state_file.read_bytes()[:200])
    else:
        state = torch.load(state_file, weights_only=False)
        del state["step"]
        torch.save(state, state_file)
    with pytest.raises(MmxError, match=r"trainer\.pt") as err:
        Trainer(config, tmp_path, CPU)
    assert "\n" not in str(err.value)
