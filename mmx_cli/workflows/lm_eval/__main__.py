"""`python -m mmx.workflows.lm_eval ARGS`: the same as `mmx-lm-eval ARGS`."""

from mmx.workflows.lm_eval.cli import main

main()
