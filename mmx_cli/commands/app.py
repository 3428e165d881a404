"""The `mmx` command: one Typer app; each command module registers its commands on it (or on `eval_app` /
`bench_app`, the two groups several modules share) when `main` imports it."""

from __future__ import annotations

import os
import sys

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer vendors click

from mmx.errors import MmxError

app = typer.Typer(
    name="mmx",
    help="Long-context evaluation of language models, built around the MiniMax-01 architecture.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


eval_app = typer.Typer(help="Evaluate a model: RULER, needle in a haystack, lm-eval.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure speed and memory: kernels, prefill/decode throughput.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        from mmx import __version__

        print(f"mmx {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Long-context evaluation of language models, built around the MiniMax-01 architecture."""


def _register_commands() -> None:
    """Import each command module; importing one adds its commands or sub-apps to `app`."""
    import mmx.commands.bench_kernels
    import mmx.commands.bench_throughput
    import mmx.commands.eval
    import mmx.commands.info
    import mmx.commands.lm_eval
    import mmx.commands.models
    import mmx.commands.report
    import mmx.commands.serve
    import mmx.commands.tasks
    import mmx.commands.train  # noqa: F401  (one import per command module; add yours on its own line)


def _rank_label() -> str:
    """`[rank N] ` in a torchrun job's other ranks, whose errors would otherwise read as rank 0's, repeated."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    return f"[rank {rank}] " if world != "1" and rank != "0" else ""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: user-facing errors, usage errors included, become one line on stderr and exit code 2."""
    _register_commands()
    try:
        code = app(args=argv, prog_name="mmx", standalone_mode=False)
    except MmxError as err:
        print(f"error: {_rank_label()}{err}", file=sys.stderr)
        sys.exit(2)
    except NoArgsIsHelpError as err:
        err.show()  # a bare `mmx` or command group: the help page, as a user expects
        sys.exit(0)
    except UsageError as err:
        where = err.ctx.command_path if err.ctx is not None else "mmx"
        print(f"error: {err.format_message()} — see `{where} --help`", file=sys.stderr)
        sys.exit(2)
    except ClickException as err:
        print(f"error: {err.format_message()}", file=sys.stderr)
        sys.exit(err.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
