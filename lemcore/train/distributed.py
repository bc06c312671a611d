"""Data-parallel training over several processes (MLX's `mx.distributed`, started by `mlx.launch`): which rank
this process is, and the few collective steps the engine adds to mlx-lm's gradient averaging.

A process that `mlx.launch` did not start is rank 0 of a world of size 1: the engine then calls none of the
collectives below, so training on one machine is unchanged. With several ranks:
- every rank builds the same seeded batch order and trains on its slice of each global batch (rows
  `rank::size`, mlx-lm's own split);
- the loss of a slice is weighted by `size / tokens in the whole global batch`, so that mlx-lm's gradient
  average and its reported loss equal the single-process ones (a plain mean of per-rank means would weight a
  short slice as much as a long one);
- rank 0 alone writes the run folder and reports; the others learn of a stop (cancel, low memory on any rank)
  through one small exchange per step, so all ranks stop at the same step;
- a failure before training begins on any rank is gathered, and every rank raises it, named by host.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from lemcore.errors import (
    Cancelled,
    ConfigError,
    DataError,
    LemError,
    ModelFitError,
    ModelLoadError,
    StorageError,
)
from lemcore.train.memory import flat_tree
from lemcore.train.resume import TrainingDiverged

HOSTS_ENV = "LEM_TRAIN_HOSTS"  # the launcher's host names, comma-separated, in rank order (for messages)
STOP_NONE, STOP_CANCEL, STOP_MEMORY = 0, 1, 2


class HostLost(LemError):
    """A machine of a multi-machine run stopped or could not be reached; the run ended at its last checkpoint."""


class HostSetupError(ConfigError):
    """A machine is not ready for a multi-machine run (unreachable, other versions, missing files, ports)."""


# Errors a rank may raise before training begins, rebuilt by name on the other ranks and in the launcher.
ERROR_TYPES: dict[str, type[LemError]] = {cls.__name__: cls for cls in (
    LemError, Cancelled, ConfigError, DataError, ModelLoadError, ModelFitError, StorageError, TrainingDiverged,
    HostLost, HostSetupError)}


def error_named(name: str, message: str) -> LemError:
    """The LemError subclass called `name` (LemError itself when unknown), holding `message`."""
    return ERROR_TYPES.get(name, LemError)(message)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    hosts: tuple[str, ...] = ()  # a name per rank, for messages
    group: Any = None  # mx.distributed.Group; None for a single process

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def where(self, rank: int) -> str:
        """'mac2 (rank 1)': how messages name a rank."""
        name = self.hosts[rank] if rank < len(self.hosts) and self.hosts[rank] else "a machine"
        return f"{name} (rank {rank})"

    def shard(self, rows: list[int]) -> list[int]:
        """This rank's rows of a global batch (mlx-lm's split: every size-th row, starting at the rank)."""
        return rows[self.rank::self.size]


SINGLE = World()


def current_world() -> World:
    """This process's place in the run: rank 0 of 1 unless launched by `mlx.launch` (then MLX's ring, MPI or
    RDMA group, whichever the launcher set up)."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    group = mx.distributed.init()
    if group.size() == 1:
        return SINGLE
    names = tuple(os.environ.get(HOSTS_ENV, "").split(",")) if os.environ.get(HOSTS_ENV) else ()
    return World(rank=group.rank(), size=group.size(), hosts=names, group=group)


# -- collectives (called only when world.distributed) ------------------------------------------------------

def all_gather_json(world: World, value: Any) -> list[Any]:
    """Every rank's `value` (JSON-able), in rank order, on every rank."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    import numpy as np

    raw = json.dumps(value).encode()
    lengths = mx.distributed.all_gather(mx.array([len(raw)], dtype=mx.int32), group=world.group, stream=mx.cpu)
    sizes = [int(n) for n in np.asarray(lengths)]
    padded = np.zeros(max(sizes), np.uint8)
    padded[:len(raw)] = np.frombuffer(raw, np.uint8)
    gathered = mx.distributed.all_gather(mx.array(padded), group=world.group, stream=mx.cpu)
    flat = np.asarray(gathered).reshape(world.size, max(sizes))
    return [json.loads(bytes(flat[r, :sizes[r]])) for r in range(world.size)]


def broadcast_bytes(world: World, blobs: dict[str, bytes] | None) -> dict[str, bytes]:
    """Rank 0's named byte strings on every rank (the others pass None): checkpoint files, which may exist only
    on rank 0's disk."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    import numpy as np

    header = all_gather_json(world, [[k, len(v)] for k, v in blobs.items()] if world.main and blobs else [])[0]
    total = sum(n for _, n in header)
    if total == 0:
        return {k: b"" for k, _ in header}
    buffer = np.zeros(total, np.uint8)
    if world.main and blobs:
        buffer[:] = np.frombuffer(b"".join(blobs[k] for k, _ in header), np.uint8)
    # Rank 0 contributes the bytes and every other rank zeros: the sum is rank 0's bytes, exactly.
    summed = np.asarray(mx.distributed.all_sum(mx.array(buffer), group=world.group, stream=mx.cpu))
    out, at = {}, 0
    for name, n in header:
        out[name] = summed[at:at + n].tobytes()
        at += n
    return out


def broadcast_parameters(world: World, model: Any) -> None:
    """Make every rank's trainable parameters rank 0's (they start equal from the same seed; this makes sure)."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    params = flat_tree(model.trainable_parameters())
    synced = [(k, mx.distributed.all_sum(v if world.main else mx.zeros_like(v), group=world.group,
                                         stream=mx.cpu)) for k, v in params]
    model.load_weights(synced, strict=False)
    mx.eval(model.parameters())


def barrier(world: World) -> None:
    """Wait until every rank gets here (raises when a rank is gone)."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    mx.eval(mx.distributed.all_sum(mx.array([1], dtype=mx.int32), group=world.group, stream=mx.cpu))


def agree(world: World, problem: LemError | None, facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Gather each rank's `problem` (or None) and `facts`; when any rank has a problem, every rank raises one:
    the rank's own, else the first rank's, named by host. Returns every rank's facts."""
    if not world.distributed:
        if problem is not None:
            raise problem
        return [facts]
    mine = {"facts": facts, "error": None if problem is None else [type(problem).__name__, str(problem)]}
    everyone = all_gather_json(world, mine)
    if problem is not None:
        raise problem
    for rank, got in enumerate(everyone):
        if got["error"]:
            name, message = got["error"]
            raise error_named(name, f"On {world.where(rank)}: {message}")
    return [got["facts"] for got in everyone]


def exchange_status(world: World, stop: int, free_bytes: int, peak_gb: float) -> list[tuple[int, float, float]]:
    """Each rank's (stop code, free memory in GB, MLX peak memory in GB), on every rank: one small all-gather
    per step, which is how a cancel on rank 0 or low memory on any rank reaches all of them at the same step."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    mine = mx.array([float(stop), free_bytes / 2**30, peak_gb], dtype=mx.float32)
    import numpy as np

    rows = np.asarray(mx.distributed.all_gather(mine, group=world.group, stream=mx.cpu)).reshape(world.size, 3)
    return [(int(code), float(free), float(peak)) for code, free, peak in rows]


# -- the loss of one rank's slice ---------------------------------------------------------------------------

def loss_tokens(spans: list[tuple[int, int]], width: int) -> int:
    """Tokens the loss covers in a batch padded to `width`: mlx-lm's mask keeps target positions
    s = 1 .. width-1 with offset <= s <= length, for each row's (offset, length)."""
    return sum(max(0, min(length, width - 1) - max(offset, 1) + 1) for offset, length in spans)


def shard_loss(model: Any, batch: Any, lengths: Any, weight: Any) -> tuple[Any, Any]:
    """mlx-lm's cross-entropy over the unmasked tokens of this rank's slice, summed and multiplied by
    `weight` = ranks / tokens of the global batch. mlx-lm averages the gradient over ranks and reports the
    all-summed loss divided by the ranks, so both come out as the global batch's mean over its tokens."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    import mlx.nn as nn  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)
    steps = mx.arange(1, targets.shape[1] + 1)
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
    ce = nn.losses.cross_entropy(logits, targets) * mask
    return ce.astype(mx.float32).sum() * weight, mask.sum()
