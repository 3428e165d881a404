"""Command groups shared by several modules: `mmx eval …` and `mmx bench …`."""

from __future__ import annotations

import typer

from mmx.app import app

eval_app = typer.Typer(help="Evaluate a model: RULER, needle in a haystack, lm-eval.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure speed and memory: kernels, prefill/decode throughput.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")
