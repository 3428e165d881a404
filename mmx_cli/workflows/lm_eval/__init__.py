"""lm-evaluation-harness on any mmx backend: the `LM` adapter registered as `mmx`, and the suite run behind
`mmx eval lm-eval`."""
