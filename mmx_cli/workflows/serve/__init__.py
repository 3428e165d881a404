"""`mmx serve`: an OpenAI-compatible HTTP server over any backend."""
