"""`mmx-lm-eval`: lm-evaluation-harness's own command line, with every mmx model available as `--model mmx`.

lm-eval 0.4 finds models only in its own registry and offers plugins no entry point, so `lm_eval --model mmx` cannot
work after a plain install. This is the one-line drop-in: the same arguments, `mmx-lm-eval` for `lm_eval`, e.g.

    mmx-lm-eval --model mmx --model_args model=hf:/models/llama,device=cuda --tasks hellaswag

It registers `mmx` (after lm-eval's built-in models, which stay available) and hands the arguments to lm-eval's CLI.
"""

from __future__ import annotations

import sys

from mmx.errors import MmxError


def main(argv: list[str] | None = None) -> None:
    """Run lm-eval's CLI on `argv` (default: this process's arguments) with `mmx` registered."""
    try:
        from lm_eval.__main__ import cli_evaluate

        import mmx.workflows.lm_eval.adapter  # noqa: F401 (registers `mmx`)
    except ImportError:
        print("error: lm-eval is not installed — pip install 'mmx[lm-eval]'", file=sys.stderr)
        sys.exit(2)
    sys.argv = ["lm-eval", *(sys.argv[1:] if argv is None else argv)]
    try:
        cli_evaluate()
    except MmxError as err:  # a model spec or option lm-eval handed to mmx
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
