"""The reliability benchmark: kill/resume trials, damaged and hostile inputs, and a server under load, each counted
(`python -m benchmarks.reliability --help`)."""
