"""MLXWorker: one MLX thread, futures for results, and a process that exits 0 after MLX work off the main thread."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path

import pytest

from lemcore.mlx_thread import MLXWorker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker():
    w = MLXWorker(name="test-mlx")
    yield w
    w.shutdown(cancel_pending=True)


def test_results_and_exceptions_come_back_through_futures(worker):
    assert worker.submit(lambda a, b=0: a + b, 40, b=2).result(timeout=10) == 42

    def boom():
        raise ValueError("bad input")

    future = worker.submit(boom)
    with pytest.raises(ValueError, match="bad input"):
        future.result(timeout=10)
    # The thread survives a failed task.
    assert worker.submit(lambda: "still alive").result(timeout=10) == "still alive"


def test_tasks_run_in_order_on_one_thread(worker):
    seen: list[tuple[int, int]] = []

    def task(i: int) -> None:
        time.sleep(0.005 if i % 2 else 0)  # uneven durations must not reorder anything
        seen.append((i, threading.get_ident()))

    futures = [worker.submit(task, i) for i in range(20)]
    for f in futures:
        f.result(timeout=10)

    assert [i for i, _ in seen] == list(range(20))
    assert {ident for _, ident in seen} == {worker.thread.ident}
    assert worker.thread is not threading.current_thread()
    assert not worker.thread.daemon


def test_mlx_works_across_tasks_on_the_same_thread(worker):
    # Streams must survive between tasks (clearing them per task breaks the next MLX call).
    def matmul() -> float:
        import mlx.core as mx

        a = mx.ones((8, 8))
        return (a @ a).sum().item()

    assert [worker.submit(matmul).result(timeout=60) for _ in range(3)] == [512.0] * 3


def test_shutdown_stops_the_thread_and_refuses_new_work():
    w = MLXWorker()
    assert w.submit(lambda: 1).result(timeout=10) == 1
    w.shutdown()
    assert not w.thread.is_alive()
    with pytest.raises(RuntimeError, match="shut down"):
        w.submit(lambda: 2)
    w.shutdown()  # idempotent


def test_shutdown_can_cancel_queued_tasks():
    w = MLXWorker()
    started, gate = threading.Event(), threading.Event()

    def blocker() -> bool:
        started.set()
        return gate.wait(10)

    running = w.submit(blocker)
    queued = w.submit(lambda: "never")
    assert started.wait(10)
    w.shutdown(wait=False, cancel_pending=True)
    gate.set()
    w.thread.join(timeout=10)

    assert running.result(timeout=1) is True
    with pytest.raises(CancelledError):
        queued.result(timeout=1)


def test_call_runs_inline_from_a_task_instead_of_deadlocking(worker):
    def outer() -> tuple[int, int]:
        return threading.get_ident(), worker.call(threading.get_ident)

    outer_ident, inner_ident = worker.call(outer)
    assert outer_ident == inner_ident == worker.thread.ident


def test_importing_lemcore_does_not_import_mlx():
    script = (
        "import sys, lemcore, lemcore.mlx_thread; print('mlx' in sys.modules or 'mlx.core' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# A whole process: build, load and generate on the worker, then exit. Half the runs never call shutdown()
# and rely on the exit hook. Without clear_streams at thread exit, ~70% of such runs abort with exit 134
# (docs/platform-notes.md, "MLX threads and stream release").
_CHILD = """
import sys, tempfile
from lemcore.mlx_thread import MLXWorker

def job(tmp):
    import mlx_lm
    from tests.tiny_models import make_tiny_model
    model, tokenizer = mlx_lm.load(make_tiny_model(tmp + "/m", "llama"))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    return [r.token for r in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=16)]

with tempfile.TemporaryDirectory() as tmp:
    worker = MLXWorker()
    print("TOKENS", len(worker.submit(job, tmp).result()), flush=True)
    if sys.argv[1] == "shutdown":
        worker.shutdown()
"""


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def _run_child(i: int) -> subprocess.CompletedProcess[str]:
    mode = "shutdown" if i % 2 else "forget"
    return subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_processes_using_the_worker_exit_cleanly_every_time():
    with ThreadPoolExecutor(max_workers=2) as pool:  # the CI machine has 2 cores
        results = list(pool.map(_run_child, range(20)))

    failures = [(r.returncode, r.stderr[-500:]) for r in results if r.returncode != 0]
    assert failures == [], f"{len(failures)} of 20 runs failed"
    assert all("TOKENS 16" in r.stdout for r in results)
