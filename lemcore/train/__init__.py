"""LoRA fine-tuning on mlx-lm's trainer, with live events, stop, true resume, and fuse.

config.py (TrainConfig, presets, mlx-lm YAML), data.py (checks before any model work), engine.py (train_lora),
session.py (per-step callback and batch iterator), resume.py (checkpoints and guards), memory.py (memory guard),
run.py (run folders and metrics), events.py, influx.py (reporting to the lab), fuse.py (adapter -> model).
"""

from lemcore.train.config import TrainConfig
from lemcore.train.engine import TrainResult, train_lora
from lemcore.train.fuse import FuseConfig, FuseResult, fuse_adapter

__all__ = [
    "FuseConfig",
    "FuseResult",
    "TrainConfig",
    "TrainResult",
    "fuse_adapter",
    "train_lora",
]
