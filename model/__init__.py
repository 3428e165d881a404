"""MiniMax-Text-01 in PyTorch: config, modules, checkpoints, tokenizers, backends, training."""
