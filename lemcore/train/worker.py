"""One rank of a multi-machine run: what `mlx.launch` starts on every machine (`python -m lemcore.train.worker`).

Every rank runs `train_lora` on the same config; rank 0 writes its events, then its result or error, as
records on standard output (wire.py) for the launcher (launch.py). A cancel reaches rank 0 as a stop file on
its machine, which is this machine's. Before exiting, every rank waits for the others, so rank 0 has written
its last checkpoint before any rank ends: mlx.launch stops every rank as soon as one exits with an error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from lemcore.blas import reexec_with_openblas
from lemcore.errors import LemError
from lemcore.events import Event
from lemcore.jobs import CancelToken
from lemcore.train.config import TrainConfig
from lemcore.train.distributed import World, barrier, current_world
from lemcore.train.engine import train_lora
from lemcore.train.wire import event_line, record_line, to_plain

EXIT_LOST = 3  # the distributed backend lost a peer
EXIT_CRASH = 4


def _watch_stop_file(path: str, cancel: CancelToken) -> None:
    """Cancel when the launcher creates `path` (checked five times a second; no MLX here)."""
    while not cancel.wait(0.2):
        if os.path.exists(path):
            cancel.cancel()
            return


def _peer_gone(err: RuntimeError) -> bool:
    """MLX's backends raise RuntimeError("[ring] connection to a peer was lost") and the like."""
    text = str(err).lower()
    return any(word in text for word in ("[ring]", "[mpi]", "[jaccl]", "peer", "connection", "socket"))


def _say(world: World, record: dict[str, Any]) -> None:
    """Rank 0's records go to stdout for the launcher; another rank's to stderr (kept apart from rank 0's)."""
    stream = sys.stdout if world.main else sys.stderr
    stream.write(record_line({**record, "rank": world.rank}))
    stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        reexec_with_openblas()
    parser = argparse.ArgumentParser(prog="python -m lemcore.train.worker")
    parser.add_argument("--config", required=True, help="the TrainConfig as JSON")
    parser.add_argument("--stop-file", default="", help="rank 0 stops at the next step once this file exists")
    args = parser.parse_args(argv)
    world = current_world()
    config = TrainConfig(**json.loads(args.config))
    cancel = CancelToken()
    if world.main and args.stop_file:
        threading.Thread(target=_watch_stop_file, args=(args.stop_file, cancel), name="lem-stop-file",
                         daemon=True).start()

    def report(event: Event) -> None:
        sys.stdout.write(event_line(event))
        sys.stdout.flush()

    try:
        try:
            result = train_lora(config, report=report if world.main else lambda event: None, cancel=cancel)
            if world.main:
                _say(world, {"result": to_plain(result)})
        except LemError as err:
            _say(world, {"error": [type(err).__name__, str(err)]})
        if world.distributed:
            barrier(world)
    except RuntimeError as err:
        if not _peer_gone(err):
            _say(world, {"crash": f"{type(err).__name__}: {str(err)[:300]}"})
            raise
        _say(world, {"lost": str(err)[:300]})
        return EXIT_LOST
    except Exception as err:  # noqa: BLE001 - a bug: the launcher shows it; the traceback goes to stderr
        _say(world, {"crash": f"{type(err).__name__}: {str(err)[:300]}"})
        raise
    finally:
        cancel.cancel()  # ends the stop-file thread
    return 0


if __name__ == "__main__":
    sys.exit(main())
