"""`mmx eval ruler|niah` and `mmx.evaluate`: requests, the sweep over (task, length) cells, and the run end to end."""
