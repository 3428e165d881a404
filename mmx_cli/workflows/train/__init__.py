"""`mmx train`: packed training documents from the evaluation tasks, and the loop that trains on them."""

from mmx.workflows.train.data import DataMix, DocumentStream, parse_mix
from mmx.workflows.train.loss import packed_loss
from mmx.workflows.train.packing import Document, PackedBatch, Packer, pack_rows
from mmx.workflows.train.schedule import Stage, WarmupCosine, parse_stages
from mmx.workflows.train.trainer import TrainConfig, Trainer, check_architecture, open_run

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
    "check_architecture",
    "open_run",
    "pack_rows",
    "packed_loss",
    "parse_mix",
    "parse_stages",
]
