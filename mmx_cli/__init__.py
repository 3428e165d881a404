"""mmx: long-context evaluation of language models, built around the MiniMax-01 architecture."""

__version__ = "0.1.0"
