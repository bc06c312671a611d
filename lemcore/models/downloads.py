"""Model downloads into the standard Hugging Face cache, with byte progress, cancel, resume and verification.

Files land where `huggingface_hub` puts them (`<HF cache>/models--owner--name/blobs/<etag>`), so models that
mlx-lm's own tools fetched are reused and nothing is fetched twice. huggingface_hub 2.x downloads each file to
a process-unique temporary name and deletes it on failure, so it cannot resume after a restart
(docs/platform-notes.md, "Hugging Face hub"). Here each file streams into `<etag>.incomplete` and continues
with an HTTP Range request after a cancel, a crash or a lost connection; the finished bytes are checked
against the hub's hash (sha256 for LFS files, git's blob sha1 otherwise) before they become the blob. huggingface_hub then links the snapshot (`snapshot_download` finds every blob
present and fetches nothing).

The fit check runs on the hub's metadata (file sizes, safetensors headers, config.json) BEFORE any weight byte
is fetched. Offline or unreachable hub: a DownloadError within seconds that offers the built-in model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, TypeVar

from lemcore.errors import DownloadError
from lemcore.events import Event
from lemcore.hardware import Hardware, detect_hardware
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.fit import (
    DEFAULT_CONTEXT,
    ModelNeeds,
    assess_fit,
    compute_dtype_bytes,
    kv_shape_from_config,
    metal_working_set,
    require_fit,
    tensor_bytes,
)

# The files mlx-lm fetches (mlx_lm.utils.DEFAULT_ALLOW_PATTERNS): the cached snapshot is then complete for it.
ALLOW_PATTERNS = ("*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "tiktoken.model",
                  "*.txt", "*.jsonl", "*.jinja")
HUB_TIMEOUT = 5.0  # seconds to connect or get an answer: "offline" must be said within seconds
READ_TIMEOUT = 30.0  # a stream silent this long is stalled: reconnect and resume
MAX_RETRIES = 5
CHUNK = 1 << 16  # also the cancel granularity
_T = TypeVar("_T")
_EMIT_EVERY = 0.1  # seconds between progress events
_OFFER_EMBEDDED = "or use the built-in model (SmolLM2 135M), which needs no download."


@dataclass(frozen=True)
class DownloadProgress(Event):
    """Byte progress of one model download.

    `done`/`total` cover every file; `resumed` bytes were on disk already from an earlier run."""

    repo: str
    stage: str  # listing, downloading, linking, done
    filename: str
    done: int
    total: int
    file_done: int = 0
    file_total: int = 0
    resumed: int = 0


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    etag: str  # the cache's blob name: the LFS sha256, else the git blob id
    lfs: bool


@dataclass(frozen=True)
class HubListing:
    repo: str
    commit: str
    files: tuple[HubFile, ...]

    @property
    def download_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _hub_error(err: Exception, repo: str, endpoint: str | None) -> DownloadError:
    """One clear sentence for each way the hub can fail."""
    import httpx2  # lazy: the hub's HTTP stack loads only for downloads
    from huggingface_hub import constants, errors  # lazy: the hub client loads only for downloads

    where = endpoint or constants.ENDPOINT
    if isinstance(err, errors.OfflineModeIsEnabled):
        return DownloadError(f"Downloads are switched off (HF_HUB_OFFLINE is set), so {repo} cannot be "
                             f"fetched. Unset HF_HUB_OFFLINE and try again, {_OFFER_EMBEDDED}")
    if isinstance(err, errors.GatedRepoError):
        return DownloadError(f"{repo} is gated: accept its licence on the hub's web page, log in with "
                             "`hf auth login`, then try again.")
    if isinstance(err, errors.RepositoryNotFoundError):
        return DownloadError(f"The hub has no model named {repo} (or it is private). Check the name.")
    if isinstance(err, errors.RevisionNotFoundError):
        return DownloadError(f"{repo} has no such revision on the hub. Check the revision name.")
    if isinstance(err, errors.HfHubHTTPError):
        status = err.response.status_code if err.response is not None else "an error"
        return DownloadError(f"The model hub at {where} answered {status} for {repo}. Try again later, "
                             + _OFFER_EMBEDDED)
    if isinstance(err, (httpx2.RequestError, OSError)):
        reason = type(err).__name__
        return DownloadError(f"Cannot reach the model hub at {where} ({reason}). Check the internet "
                             f"connection and try again, {_OFFER_EMBEDDED}")
    return DownloadError(f"Download of {repo} failed: {err}")


def _hub_call(repo: str, endpoint: str | None, fn: Callable[[], _T]) -> _T:
    import httpx2  # lazy: the hub's HTTP stack loads only for downloads
    from huggingface_hub import errors  # lazy: the hub client loads only for downloads

    try:
        return fn()
    except (httpx2.RequestError, errors.HfHubHTTPError, errors.OfflineModeIsEnabled, OSError) as err:
        raise _hub_error(err, repo, endpoint) from None


def list_hub_files(repo: str, *, revision: str = "main", endpoint: str | None = None,
                   timeout: float = HUB_TIMEOUT, patterns: tuple[str, ...] = ALLOW_PATTERNS) -> HubListing:
    """The commit and the files (sizes and hashes) that a download of `repo` would fetch. One request."""
    from huggingface_hub import HfApi  # lazy: the hub client loads only for downloads

    info = _hub_call(repo, endpoint, lambda: HfApi(endpoint=endpoint).model_info(
        repo, revision=revision, files_metadata=True, timeout=timeout))
    files = tuple(
        HubFile(s.rfilename, s.lfs.size, s.lfs.sha256, True) if s.lfs
        else HubFile(s.rfilename, int(s.size or 0), str(s.blob_id), False)
        for s in info.siblings or []
        if any(fnmatch(s.rfilename, p) for p in patterns)
    )
    if not info.sha:
        raise DownloadError(f"The hub at {endpoint} gave no commit for {repo}: is it a Hugging Face hub?")
    return HubListing(repo, info.sha, files)


def _get(repo: str, endpoint: str | None, filename: str, commit: str, byte_range: str | None = None) -> bytes:
    from huggingface_hub import hf_hub_url  # lazy: the hub client loads only for downloads
    from huggingface_hub.utils import (  # lazy: the hub client loads only for downloads
        build_hf_headers,
        get_session,
        hf_raise_for_status,
    )

    headers = build_hf_headers()
    if byte_range:
        headers["Range"] = f"bytes={byte_range}"
    url = hf_hub_url(repo, filename, revision=commit, endpoint=endpoint)

    def fetch() -> bytes:
        response = get_session().get(url, headers=headers, timeout=HUB_TIMEOUT)
        hf_raise_for_status(response)
        return response.content

    return _hub_call(repo, endpoint, fetch)


def hub_needs(repo: str, *, revision: str = "main", endpoint: str | None = None,
              listing: HubListing | None = None) -> ModelNeeds:
    """Memory figures of a hub model without downloading it: config.json plus the safetensors headers
    (two small Range requests per weights file)."""
    listing = listing or list_hub_files(repo, revision=revision, endpoint=endpoint)
    try:
        config = json.loads(_get(repo, endpoint, "config.json", listing.commit))
        weight = 0
        by_dtype: dict[str, int] = {}
        for f in listing.files:
            if fnmatch(f.path, "model*.safetensors"):
                length = int.from_bytes(_get(repo, endpoint, f.path, listing.commit, "0-7"), "little")
                if not 0 < length < 100_000_000:
                    raise ValueError(f"{f.path} header length {length}")
                header = json.loads(_get(repo, endpoint, f.path, listing.commit, f"8-{7 + length}"))
                kept, dtypes = tensor_bytes(header)
                weight += kept
                for dtype, size in dtypes.items():
                    by_dtype[dtype] = by_dtype.get(dtype, 0) + size
    except (ValueError, TypeError) as err:
        raise DownloadError(f"{repo} on the hub has an unreadable config.json or weights header ({err}).") \
            from None
    if not weight:
        raise DownloadError(f"{repo} has no model*.safetensors weights on the hub: not an MLX or HF model.")
    kv = kv_shape_from_config(config, compute_dtype_bytes(by_dtype))
    return ModelNeeds(repo, weight, kv, "the hub's safetensors headers")


def hub_sizes(repo: str, *, endpoint: str | None = None, timeout: float = HUB_TIMEOUT) -> tuple[int, int]:
    """(weight bytes in memory, download bytes) of a hub model, from its metadata."""
    listing = list_hub_files(repo, endpoint=endpoint, timeout=timeout)
    return hub_needs(repo, endpoint=endpoint, listing=listing).weight_bytes, listing.download_bytes


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    from huggingface_hub import constants  # lazy: the hub client loads only for downloads

    return Path(cache_dir or constants.HF_HUB_CACHE)


def _storage(repo: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    return _cache_dir(cache_dir) / ("models--" + repo.replace("/", "--"))


def cached_snapshot(repo: str, *, revision: str = "main",
                    cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The cached snapshot folder of `repo` if it holds a config and its weights, else None. No network."""
    storage = _storage(repo, cache_dir)
    try:
        commit = (storage / "refs" / revision).read_text().strip()
    except OSError:
        return None
    folder = storage / "snapshots" / commit
    if not (folder / "config.json").is_file() or not any(folder.glob("model*.safetensors")):
        return None
    try:  # a sharded model is complete only with every shard its index names
        index = json.loads((folder / "model.safetensors.index.json").read_text(encoding="utf-8"))
        shards = set(index.get("weight_map", {}).values())
    except (OSError, ValueError, AttributeError):
        shards = set()
    return folder if all((folder / s).is_file() for s in shards) else None


def partial_bytes(repo: str, *, cache_dir: str | os.PathLike[str] | None = None) -> int:
    """Bytes of unfinished downloads of `repo` waiting to be resumed."""
    return sum(p.stat().st_size for p in (_storage(repo, cache_dir) / "blobs").glob("*.incomplete"))


class _Hasher:
    """The hub's hash of a file: sha256 of the content (LFS) or git's sha1 of "blob <size>\\0" + content."""

    def __init__(self, f: HubFile) -> None:
        self.want = f.etag
        self.digest = hashlib.sha256() if f.lfs else hashlib.sha1(f"blob {f.size}\0".encode())

    def ok(self) -> bool:
        return self.digest.hexdigest() == self.want


def _fetch_file(repo: str, endpoint: str | None, commit: str, f: HubFile, partial: Path,
                on_bytes: Callable[[int], None], cancel: CancelToken | None) -> None:
    """Stream one file into `partial`, continuing from its current size; retry a stalled stream."""
    import httpx2  # lazy: the hub's HTTP stack loads only for downloads
    from huggingface_hub import errors as hub_errors  # lazy: the hub client loads only for downloads
    from huggingface_hub import hf_hub_url  # lazy: the hub client loads only for downloads
    from huggingface_hub.utils import (  # lazy: the hub client loads only for downloads
        build_hf_headers,
        get_session,
        hf_raise_for_status,
    )

    url = hf_hub_url(repo, f.path, revision=commit, endpoint=endpoint)
    hasher = _Hasher(f)
    have = partial.stat().st_size if partial.exists() else 0
    if have > f.size:
        partial.unlink()
        have = 0
    with open(partial, "ab") as out, open(partial, "rb") as old:
        while chunk := old.read(1 << 22):  # the bytes from an earlier run count toward the hash too
            hasher.digest.update(chunk)
        retries = 0
        while have < f.size:
            headers = build_hf_headers()
            if have:
                headers["Range"] = f"bytes={have}-"
            timeout = httpx2.Timeout(READ_TIMEOUT, connect=HUB_TIMEOUT)
            try:
                with get_session().stream("GET", url, headers=headers, timeout=timeout) as response:
                    hf_raise_for_status(response)
                    if have and response.status_code == 200:  # the server ignored Range: start over
                        out.truncate(0)
                        hasher = _Hasher(f)
                        on_bytes(-have)
                        have = 0
                    for chunk in response.iter_bytes(CHUNK):
                        if cancel is not None:
                            cancel.check()
                        out.write(chunk)
                        hasher.digest.update(chunk)
                        have += len(chunk)
                        retries = 0
                        on_bytes(len(chunk))
            except httpx2.TransportError as err:
                retries += 1
                if retries > MAX_RETRIES:
                    raise DownloadError(f"The download of {f.path} from {repo} stalled "
                                        f"({type(err).__name__}). Run it again later: it continues where it "
                                        "stopped.") from None
                pause = min(0.5 * 2 ** (retries - 1), 8.0)  # 0.5, 1, 2, 4, 8 s
                if cancel is not None:
                    cancel.wait(pause)
                    cancel.check()
                else:
                    time.sleep(pause)
            except (hub_errors.HfHubHTTPError, hub_errors.OfflineModeIsEnabled) as err:
                raise _hub_error(err, repo, endpoint) from None
    if have != f.size or not hasher.ok():
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{f.path} of {repo} arrived damaged (size or hash differs from the hub's); the "
                            "partial file was removed. Run the download again.")


def pull_model(
    repo: str,
    *,
    revision: str = "main",
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    hw: Hardware | None = None,
    batch: int = 1,
    context: int = DEFAULT_CONTEXT,
    force: bool = False,
    fit_check: bool = True,
    patterns: tuple[str, ...] = ALLOW_PATTERNS,
    report: Report = no_report,
    cancel: CancelToken | None = None,
) -> Path:
    """Download `repo` into the HF cache (or find it there) and return its snapshot folder.

    Emits the FitReport, then DownloadProgress events. Raises ModelFitError (red and not `force`),
    DownloadError (hub unreachable, unknown repo, damaged file, no disk space) or Cancelled; a cancelled or
    failed download keeps its partial files and the next call continues from them.
    """
    from huggingface_hub import snapshot_download  # lazy: the hub client loads only for downloads
    from huggingface_hub.utils import tqdm as hf_tqdm  # lazy: the hub client loads only for downloads

    cached = cached_snapshot(repo, revision=revision, cache_dir=cache_dir)
    if cached is not None:
        return cached
    report(DownloadProgress(repo, "listing", "", 0, 0))
    listing = list_hub_files(repo, revision=revision, endpoint=endpoint, patterns=patterns)
    if fit_check:

        fit = assess_fit(hub_needs(repo, endpoint=endpoint, listing=listing), hw or detect_hardware(),
                         batch=batch, context=context, gpu_limit=metal_working_set())
        report(fit)
        require_fit(fit, force=force)

    blobs = _storage(repo, cache_dir) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    todo = [f for f in listing.files if not (blobs / f.etag).exists()]
    total = listing.download_bytes
    done = total - sum(f.size for f in todo)
    resumed = sum((blobs / f"{f.etag}.incomplete").stat().st_size for f in todo
                  if (blobs / f"{f.etag}.incomplete").exists())
    missing = sum(f.size for f in todo) - resumed
    free = shutil.disk_usage(blobs).free
    if missing > free:
        raise DownloadError(f"{repo} needs {missing / 1e9:.1f} GB more disk space, but only "
                            f"{free / 1e9:.1f} GB is free in {blobs.parent.parent}. Free some space and try "
                            "again.")
    done += resumed
    last = 0.0
    for f in todo:
        partial = blobs / f"{f.etag}.incomplete"
        start = partial.stat().st_size if partial.exists() else 0
        state = {"file": start}

        def on_bytes(n: int, f: HubFile = f, state: dict[str, int] = state) -> None:
            nonlocal done, last
            done += n
            state["file"] += n
            now = time.monotonic()
            if now - last >= _EMIT_EVERY:
                last = now
                report(DownloadProgress(repo, "downloading", f.path, done, total, state["file"], f.size,
                                        resumed))

        report(DownloadProgress(repo, "downloading", f.path, done, total, start, f.size, resumed))
        _fetch_file(repo, endpoint, listing.commit, f, partial, on_bytes, cancel)
        os.replace(partial, blobs / f.etag)
        report(DownloadProgress(repo, "downloading", f.path, done, total, f.size, f.size, resumed))

    # Every blob is present: huggingface_hub writes refs, tree cache and snapshot links, fetching nothing.
    class _Silent(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # tqdm is unannotated

    report(DownloadProgress(repo, "linking", "", done, total, resumed=resumed))
    folder = _hub_call(repo, endpoint, lambda: snapshot_download(
        repo, revision=revision, endpoint=endpoint, cache_dir=_cache_dir(cache_dir), allow_patterns=list(patterns),
        tqdm_class=_Silent, etag_timeout=HUB_TIMEOUT))
    report(DownloadProgress(repo, "done", "", done, total, resumed=resumed))
    return Path(folder)
