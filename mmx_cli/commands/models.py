"""`mmx models`: the model presets (and optionally a checkpoint's config) with their sizes.

Parameter counts come from instantiating each architecture on the meta device, so even the 456B model costs no memory
and the numbers are those of the modules that actually run, not a separate formula.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from mmx.commands.app import app


def _human(n: float) -> str:
    """456089655296 -> 456.1B; 15187456 -> 15.2M."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(int(n))


def describe_config(name: str, config: Any, weights: str) -> dict[str, Any]:
    """One row of `mmx models`: architecture summary, total and active parameters, where weights come from."""
    import torch

    from mmx.model import MiniMaxForCausalLM

    with torch.device("meta"):
        counts = MiniMaxForCausalLM(config).parameter_counts()
    return {
        "name": name,
        "layers": config.num_hidden_layers,
        "lightning_layers": len(config.lightning_layers),
        "softmax_layers": len(config.softmax_layers),
        "hidden_size": config.hidden_size,
        "heads": config.num_attention_heads,
        "head_dim": config.head_dim,
        "kv_heads": config.num_key_value_heads,
        "experts": config.num_local_experts,
        "experts_per_token": config.num_experts_per_tok,
        "vocab_size": config.vocab_size,
        "total_params": counts.total,
        "active_params": counts.active,
        "weights": weights,
    }


@lru_cache(maxsize=1)
def _preset_rows() -> tuple[dict[str, Any], ...]:
    """The presets' rows, counted once per process (the 456B model's modules take seconds to build, even on meta)."""
    from mmx.model.config import PRESETS, WEIGHTS_DIR

    rows = []
    for name, config in PRESETS.items():
        shipped = (WEIGHTS_DIR / name / "config.json").is_file()
        rows.append(describe_config(name, config, "shipped" if shipped else "random"))
    return tuple(rows)


def _rows(checkpoint: Path | None) -> list[dict[str, Any]]:
    from mmx.model.config import MiniMaxConfig

    rows = [dict(row) for row in _preset_rows()]
    if checkpoint is not None:
        rows.append(describe_config(str(checkpoint), MiniMaxConfig.from_pretrained(checkpoint), "checkpoint"))
    return rows


@app.command()
def models(
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Also describe this checkpoint directory (its config.json).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List the model presets with total and active (per-token) parameter counts."""
    rows = _rows(checkpoint)
    if json_output:
        print(json.dumps(rows, indent=2))
        return
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        title="MiniMax-architecture models",
        caption="layers: lightning+softmax · heads: count×dim/KV · active: per token\n"
        "* weights shipped (--model NAME); any preset: --model random:NAME",
    )
    for column in ("model", "layers", "hidden", "heads", "experts", "vocab", "total", "active"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["name"] + ("*" if r["weights"] == "shipped" else ""),
            f"{r['lightning_layers']}+{r['softmax_layers']}",
            str(r["hidden_size"]),
            f"{r['heads']}×{r['head_dim']}/{r['kv_heads']}",
            f"{r['experts']} top{r['experts_per_token']}",
            str(r["vocab_size"]),
            _human(r["total_params"]),
            _human(r["active_params"]),
        )
    Console().print(table)
