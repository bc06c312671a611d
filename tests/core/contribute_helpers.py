"""Small prompt sets and worker commands for the contribution tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_prompts(path: Path, n: int, *, bad_lines: dict[int, str] | None = None) -> Path:
    bad_lines = bad_lines or {}
    rows = []
    for i in range(n):
        if i in bad_lines:
            rows.append(bad_lines[i])
        else:
            rows.append(json.dumps({"seed_id": f"S{i:03d}", "domain": ["Health", "Privacy"][i % 2],
                                    "voice": "original", "prompt": f"Question {i}: should I share this?"}))
    path.write_text("\n".join(rows) + "\n")
    return path


def write_small_kernel(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    axioms = {"framework": "test", "version": "1", "axioms": [
        {"id": 1, "name": "consent", "statement": "Ask first.", "function": "permission", "resolution": "I asked."},
        {"id": 2, "name": "dignity", "statement": "Respect people.", "function": "regard", "resolution": "I did."},
    ]}
    (folder / "axioms.json").write_text(json.dumps(axioms))
    (folder / "kernel.txt").write_text("Reason from the axioms; do not cite them.")
    return folder / "axioms.json", folder / "kernel.txt"


def worker_cmd(model: Path, prompts: Path, output: Path, worker: str, kernel: tuple[Path, Path], *,
               influx_url: str = "", extra: list[str] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "lemcore.cli.main", "gold", "--model", str(model), "--prompts", str(prompts),
           "--output", str(output), "--worker", worker, "--axioms", str(kernel[0]), "--kernel", str(kernel[1]),
           "--temperature", "0", "--quiet"]
    cmd += ["--influx", influx_url] if influx_url else ["--solo"]
    return cmd + (extra or [])


def worker_env(tmp: Path, token: str = "") -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), LEM_DATA_DIR=str(tmp / "data"),
               LEM_CONFIG_DIR=str(tmp / "config"), LEM_NO_OPENBLAS="1")
    if token:
        env["INFLUX_TOKEN"] = token
    return env


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)


def jsonl_indices(*paths: Path) -> list[int]:
    out: list[int] = []
    for path in paths:
        if path.exists():
            out += [json.loads(line)["idx"] for line in path.read_text().splitlines() if line.strip()]
    return out
