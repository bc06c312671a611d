"""Downloads against a local stand-in for the hub: progress, fit first, cancel, resume, integrity, offline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lemcore.errors import Cancelled, DownloadError, ModelFitError
from lemcore.hardware import GB, Hardware
from lemcore.jobs import CancelToken
from lemcore.models.downloads import (
    DownloadProgress,
    cached_snapshot,
    list_hub_files,
    partial_bytes,
    pull_model,
)
from lemcore.models.fit import FitReport
from tests import hub_server
from tests.hub_server import HubServer

hf_cache = hub_server.hf_cache  # fixture shared through tests/hub_server.py
hub_online = hub_server.hub_online  # fixture shared through tests/hub_server.py

ROOT = Path(__file__).resolve().parents[2]
REPO = "lab/tiny-chat"
BIG = Hardware("macOS 15", "Apple M3", True, False, 64 * GB, 64 * GB)


def fetches(hub: HubServer, name: str) -> list:
    """Content requests for `name`: whole file or open-ended Range; not the fit check's header reads."""
    return [e for e in hub.requests_for(name) if e.range is None or e.range.endswith("-")]


def test_pull_reports_fit_then_byte_progress_and_loads_offline(hub_online: Path, tiny_llama: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[object] = []
    with HubServer.from_folder(REPO, tiny_llama) as hub:
        folder = pull_model(REPO, endpoint=hub.url, hw=BIG, report=events.append)
        first_content = next(i for i, e in enumerate(hub.log)
                             if e.path.startswith("/cdn/") and e.range is None)
        assert all(e.range for e in hub.log[:first_content] if e.path.startswith("/cdn/"))  # headers only
    assert folder == cached_snapshot(REPO) and folder.is_relative_to(hub_online)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tiny_llama.iterdir())
    for p in tiny_llama.iterdir():
        assert (folder / p.name).read_bytes() == p.read_bytes()

    fit_at = next(i for i, e in enumerate(events) if isinstance(e, FitReport))
    progress = [e for e in events if isinstance(e, DownloadProgress) and e.stage == "downloading"]
    assert events.index(progress[0]) > fit_at  # the verdict comes before the first byte
    assert events[fit_at].verdict == "green"
    total = sum(p.stat().st_size for p in tiny_llama.iterdir())
    assert {e.total for e in progress} == {total}
    assert [e.done for e in progress] == sorted(e.done for e in progress) and progress[-1].done == total
    assert events[-1] == DownloadProgress(REPO, "done", "", total, total)

    # The cache is huggingface_hub's own: mlx-lm finds the model by its hub id, offline.
    from lemcore.models.loading import load_model

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    model, tokenizer = load_model(REPO, hw=BIG)
    assert tokenizer.encode("volunteers") and model is not None


def test_never_fetched_twice_and_reuses_what_mlx_lm_fetched(hub_online: Path, tiny_llama: Path) -> None:
    from huggingface_hub import snapshot_download

    with HubServer.from_folder(REPO, tiny_llama) as hub:
        pull_model(REPO, endpoint=hub.url, hw=BIG)
        before = len(hub.log)
        pull_model(REPO, endpoint=hub.url, hw=BIG)
        assert len(hub.log) == before  # found in the cache: not even a listing
        # A model fetched by mlx-lm's tools (plain snapshot_download) is found the same way.
        hub.add_repo("lab/other", {p.name: p.read_bytes() for p in tiny_llama.iterdir()})
        snapshot_download("lab/other", endpoint=hub.url)
        before = len(hub.log)
        pull_model("lab/other", endpoint=hub.url, hw=BIG)
        assert len(hub.log) == before


def test_cancel_halfway_then_resume_after_a_restart(hub_online: Path, tiny_llama: Path) -> None:
    weights = (tiny_llama / "model.safetensors").stat().st_size
    cancel = CancelToken()
    seen: list[DownloadProgress] = []

    def on_event(event: object) -> None:
        if isinstance(event, DownloadProgress) and event.filename == "model.safetensors":
            seen.append(event)
            if event.file_done >= weights // 2:
                cancel.cancel("user pressed Pause")

    # 8 KB per 10 ms: the weights take ~0.7 s and progress comes every 0.1 s, so the cancel lands mid-file.
    with HubServer.from_folder(REPO, tiny_llama, chunk=8192, throttle=0.01) as hub:
        with pytest.raises(Cancelled, match="Pause"):
            pull_model(REPO, endpoint=hub.url, hw=BIG, report=on_event, cancel=cancel)
        kept = partial_bytes(REPO)
        assert weights // 2 <= kept < weights
        assert cached_snapshot(REPO) is None

        # A new process (as after closing the app) continues from the partial file.
        code = ("import sys; from lemcore.models.downloads import pull_model; "
                f"print(pull_model({REPO!r}, endpoint={hub.url!r}, fit_check=False))")
        env = {**os.environ, "HF_HUB_OFFLINE": "0"}
        out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert Path(out.stdout.strip()) == cached_snapshot(REPO)
        got = fetches(hub, "model.safetensors")
    assert [e.range for e in got] == [None, f"bytes={kept}-"]
    assert got[1].sent == weights - kept
    assert sum(e.sent for e in got) < weights + 8192 * 16  # not fetched again from zero
    assert partial_bytes(REPO) == 0
    got_bytes = (cached_snapshot(REPO) / "model.safetensors").read_bytes()
    assert got_bytes == (tiny_llama / "model.safetensors").read_bytes()


def test_a_dropped_connection_is_resumed_within_the_call(hub_online: Path, tiny_llama: Path) -> None:
    events: list[object] = []
    served = (tiny_llama / "model.safetensors").read_bytes()
    with HubServer.from_folder(REPO, tiny_llama, drop_after={"model.safetensors": 100_000}) as hub:
        folder = pull_model(REPO, endpoint=hub.url, hw=BIG, report=events.append)
        got = fetches(hub, "model.safetensors")
    assert len(got) == 2 and got[0].range is None
    resumed_at = int(got[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 100_000 and got[1].sent == len(served) - resumed_at  # continued, not restarted
    assert (folder / "model.safetensors").read_bytes() == served


def test_damaged_bytes_are_refused_and_removed(hub_online: Path, tiny_llama: Path) -> None:
    with HubServer.from_folder(REPO, tiny_llama) as hub:
        served = hub.repos[REPO]["model.safetensors"]
        served.data = served.data[:-4] + b"oops"  # same size, different bytes than the listing's sha256
        with pytest.raises(DownloadError, match="damaged"):
            pull_model(REPO, endpoint=hub.url, hw=BIG)
    assert partial_bytes(REPO) == 0 and cached_snapshot(REPO) is None


def test_red_fit_refuses_before_any_weight_byte(hub_online: Path, tiny_llama: Path) -> None:
    tiny_machine = Hardware("macOS 15", "Apple M1", True, False, 2 * GB, 2 * GB)
    events: list[object] = []
    with HubServer.from_folder(REPO, tiny_llama) as hub:
        with pytest.raises(ModelFitError, match="can give ~0 MB"):
            pull_model(REPO, endpoint=hub.url, hw=tiny_machine, report=events.append)
        assert fetches(hub, "model.safetensors") == []  # only the header was read
        assert [e.verdict for e in events if isinstance(e, FitReport)] == ["red"]
        pull_model(REPO, endpoint=hub.url, hw=tiny_machine, force=True)
    assert cached_snapshot(REPO) is not None


def test_offline_unreachable_and_unknown_fail_fast_with_a_way_out(hf_cache: Path, hub_online: Path,
                                                                  tiny_llama: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"Cannot reach the model hub at http://127\.0\.0\.1.*built-in"):
        pull_model(REPO, endpoint=dead)
    with HubServer.from_folder(REPO, tiny_llama) as hub:
        with pytest.raises(DownloadError, match="no model named lab/missing"):
            list_hub_files("lab/missing", endpoint=hub.url)
        asked = len(hub.log)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
        with pytest.raises(DownloadError, match="HF_HUB_OFFLINE.*built-in model"):
            pull_model(REPO, endpoint=hub.url)
        assert len(hub.log) == asked  # offline mode sends nothing
    assert time.monotonic() - start < 5
