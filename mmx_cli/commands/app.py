"""The `mmx` command: one Typer app; each command module registers its commands on it (or on `eval_app` /
`bench_app`, the two groups several modules share) when `main` imports it."""

from __future__ import annotations

import os
import sys
import warnings
from typing import TextIO

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer vendors click
from typer.core import TyperOption

from mmx.errors import MmxError
from mmx.files import NO_ROOM, write_hint

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


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Python warnings as one plain line, as a user reads them: `warning: …` (no class name, no source line)."""
    print(f"warning: {message}", file=file or sys.stderr)


def _flag_type(self: TyperOption, ctx: typer.Context) -> str | None:
    """Help shows no `<bool>` after a flag: it takes no value."""
    return None if self.is_flag else _option_type(self, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # typer 0.29 labels every option with its type, flags included


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: every user-facing error — usage errors, bad files, a full disk — becomes one line on
    stderr and exit code 2; Ctrl-C exits 130."""
    _register_commands()
    warnings.showwarning = _show_warning
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
        sys.exit(2)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except OSError as err:  # a write deep in a library (torch.save, a progress log) when there is no room left
        if err.errno not in NO_ROOM:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"error: cannot write{where}: {err.strerror} — {write_hint(err, '')}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
