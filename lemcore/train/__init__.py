"""LoRA fine-tuning on mlx-lm's trainer, with live events, stop, true resume, and fuse.

config.py (TrainConfig, presets, mlx-lm YAML), data.py (checks before any model work), dataset.py (contributed
answers -> train/valid/test.jsonl with a data card), engine.py (train_lora),
session.py (per-step callback and batch iterator), resume.py (checkpoints and guards), memory.py (memory guard),
run.py (run folders and metrics), events.py, influx.py (reporting to the lab), fuse.py (adapter -> model).
Over several machines: launch.py (train_on_hosts: mlx.launch, following rank 0), hosts.py (host lists),
preflight.py (is every machine ready), worker.py (one rank), distributed.py (ranks and their collectives),
wire.py (records from rank 0 to the launcher).
"""

from lemcore.train.config import TrainConfig
from lemcore.train.dataset import DatasetConfig, DatasetResult, build_dataset
from lemcore.train.engine import TrainResult, train_lora
from lemcore.train.fuse import FuseConfig, FuseResult, fuse_adapter

__all__ = [
    "DatasetConfig",
    "DatasetResult",
    "FuseConfig",
    "FuseResult",
    "TrainConfig",
    "TrainResult",
    "build_dataset",
    "fuse_adapter",
    "train_lora",
]
