"""The work behind each command: eval sweeps, the lm-eval suite, benchmarks, training and serving, plus the run
provenance they all record. Workflows combine the parts (tasks, models, results); commands only call them."""
