"""Learning-rate schedule and context-length stages."""

from __future__ import annotations

import pytest

from mmx.errors import MmxError
from mmx.workflows.train.schedule import Stage, WarmupCosine, parse_stages, stage_at


def test_warmup_then_cosine_to_the_floor() -> None:
    lr = WarmupCosine(peak=1.0, total_steps=110, warmup_steps=10, min_ratio=0.1)
    assert lr(0) == pytest.approx(0.1)
    assert lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)  # halfway down the cosine
    assert lr(110) == pytest.approx(0.1)
    assert all(lr(s) >= lr(s + 1) for s in range(10, 120))


def test_stages_parse_with_sizes_and_optional_rope_base() -> None:
    stages = parse_stages("4k:600, 16k:200:5e7")
    assert stages == [Stage(4096, 600), Stage(16384, 200, 5e7)]
    assert [str(s) for s in stages] == ["4k:600", "16k:200:5e+07"]
    assert [stage_at(stages, s) for s in (0, 599, 600, 799, 800)] == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("text", ["", "4k", "4k:0", "4k:ten", "4k:10:-1", "4k:10:1:2", "x:10"])
def test_bad_stages_are_one_clear_error(text: str) -> None:
    with pytest.raises(MmxError):
        parse_stages(text)
