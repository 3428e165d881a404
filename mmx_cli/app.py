"""The `mmx` command: one Typer app; each command group lives in its own module and registers itself here."""

from __future__ import annotations

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


@app.callback()
def _root() -> None:
    """Long-context evaluation of language models, built around the MiniMax-01 architecture."""


def _register_commands() -> None:
    """Import each command module; importing one adds its commands or sub-apps to `app`."""
    import mmx.cli_bench_kernels
    import mmx.cli_bench_throughput
    import mmx.cli_eval
    import mmx.cli_info
    import mmx.cli_lm_eval
    import mmx.cli_models
    import mmx.cli_report
    import mmx.cli_serve
    import mmx.cli_tasks
    import mmx.cli_train
    import mmx.groups  # noqa: F401  (one import per command module; add yours on its own line)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: user-facing errors, usage errors included, become one line on stderr and exit code 2."""
    _register_commands()
    try:
        code = app(args=argv, prog_name="mmx", standalone_mode=False)
    except MmxError as err:
        print(f"error: {err}", file=sys.stderr)
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
