"""KernelConfig: validation, the MMX_KERNEL_CONFIG override, and how launches shrink per kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mmx.kernels.plan import CONFIG_ENV, KernelConfig, config_from_json


def test_json_sets_fields_over_the_defaults() -> None:
    config = config_from_json('{"chunk": 64, "fwd_form": "masked", "local_stages": null}')
    assert config == KernelConfig(chunk=64, fwd_form="masked")
    assert config.changes() == {"chunk": 64, "fwd_form": "masked"}
    assert config_from_json("") == config_from_json(" {} ") == KernelConfig()
    assert config_from_json(json.dumps(config.changes())) == config  # what the sweep emits round-trips


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("chunk=64", "not valid JSON"),
        ("[64]", "must be a JSON object"),
        ('{"chunks": 64}', "unknown fields chunks"),
        ('{"chunk": 48}', "chunk must be a power of two"),
        ('{"local_chunk": 8}', "at least 16"),
        ('{"fwd_warps": 3}', "fwd_warps must be a power of two"),
        ('{"fwd_stages": 0}', "fwd_stages must be a positive integer"),
        ('{"value_split": true}', "value_split must be a positive integer"),
        ('{"bwd_chunk": null}', "bwd_chunk must be a positive integer"),
        ('{"fwd_form": "fused"}', "fwd_form must be one of factored, masked"),
    ],
)
def test_bad_json_names_the_variable_and_the_field(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=CONFIG_ENV) as err:
        config_from_json(text)
    assert message in str(err.value)


def test_environment_sets_the_default_config_at_import() -> None:
    """The override a tuning run hands to `mmx bench kernels`: read once, when the kernels are first imported."""
    code = "from mmx.kernels.plan import DEFAULT_CONFIG; print(DEFAULT_CONFIG.changes())"
    env = {**os.environ, CONFIG_ENV: '{"chunk": 64, "value_split": 2}'}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "{'chunk': 64, 'value_split': 2}"


def test_local_state_default_is_scoped_to_what_the_sweep_measured() -> None:
    """64 rows and 3 stages for bf16 at head dim 128 (the H200 sweep's winner); elsewhere the forward's rows and
    stages as before; fields set explicitly always win."""
    bf16, fp16 = torch.bfloat16, torch.float16
    config = KernelConfig()
    assert (config.local_rows(128, bf16), config.local_pipeline(128, bf16)) == (64, 3)
    assert (config.fwd_chunk(128, bf16), config.fwd_stages) == (128, 2)  # the outputs kernel keeps its own
    assert (config.local_rows(128, fp16), config.local_pipeline(128, fp16)) == (64, 2)
    assert (config.local_rows(64, bf16), config.local_pipeline(64, bf16)) == (64, 2)
    assert KernelConfig(fwd_stages=1).local_pipeline(64, torch.float32) == 1
    explicit = KernelConfig(local_chunk=128, local_stages=2)
    assert (explicit.local_rows(128, bf16), explicit.local_pipeline(128, bf16)) == (128, 2)


def test_shrink_works_on_the_phase_that_failed() -> None:
    """Out of shared memory: one stage first, then half the rows, on the fields of the kernel that ran out."""
    bf16 = torch.bfloat16
    config = KernelConfig()
    assert config.shrink(128, bf16, "fwd_out") == config.with_(fwd_stages=1, chunk=128)
    assert config.shrink(128, bf16, "fwd_local") == config.with_(local_stages=1, local_chunk=64)
    assert config.with_(local_stages=1).shrink(128, bf16, "fwd_local") == config.with_(local_stages=1, local_chunk=32)
    assert KernelConfig(local_chunk=128).shrink(128, bf16, "fwd_local") == KernelConfig(local_chunk=128, local_stages=1)
    assert config.shrink(128, bf16, "bwd_dq") == config.with_(bwd_stages=1, bwd_chunk=64)
    assert KernelConfig(chunk=16, fwd_stages=1).shrink(128, bf16, "fwd_out") is None


@pytest.mark.slow
def test_factored_outputs_kernel_spills_a_fraction_of_the_masked_one() -> None:
    """Compiled for sm_90 (no GPU needed), bf16, D=128, 128-row blocks, 8 warps, 2 stages: the masked walk spills 74
    registers as on the H200; the factored walk a small fraction of that. Every kernel of the default config fits an
    H100/H200 (255 registers, 227 KiB of shared memory)."""
    code = (
        "from mmx.kernels.plan import KernelConfig as C; from benchmarks.kernels.ptxas import forward_usage as u; "
        "f = u(C(fwd_form='factored', chunk=128))['outputs factored']; m = u(C(fwd_form='masked', chunk=128))"
        "['outputs']; print(f.spill_bytes, m.spill_bytes, *(x for k in u(C()).values() for x in (k.regs, k.shared)))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", CONFIG_ENV)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    factored, masked, *default = map(int, done.stdout.split())
    assert masked >= 200 and factored * 4 <= masked
    assert all(regs <= 255 for regs in default[::2]) and all(shared <= 232448 for shared in default[1::2])
