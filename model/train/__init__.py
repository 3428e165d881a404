"""`mmx train`: packed training documents from the evaluation tasks, and the loop that trains on them."""

from .data import DataMix, DocumentStream, parse_mix
from .loss import packed_loss
from .packing import Document, PackedBatch, Packer, pack_rows
from .schedule import Stage, WarmupCosine, parse_stages
from .trainer import TrainConfig, Trainer, open_run

__all__ = [
    "DataMix",
    "Document",
    "DocumentStream",
    "PackedBatch",
    "Packer",
    "Stage",
    "TrainConfig",
    "Trainer",
    "WarmupCosine",
    "open_run",
    "pack_rows",
    "packed_loss",
    "parse_mix",
    "parse_stages",
]
