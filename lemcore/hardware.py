"""What this machine is: OS, chip (Apple Silicon / Rosetta / Intel), memory, MLX backend, BLAS."""

from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

GB = 1024**3


@dataclass(frozen=True)
class Hardware:
    os_name: str
    chip: str
    apple_silicon: bool  # true also under Rosetta: the hardware can run Metal even if this process cannot
    rosetta: bool
    total_ram: int
    available_ram: int

    @property
    def total_gb(self) -> float:
        return self.total_ram / GB

    @property
    def available_gb(self) -> float:
        return self.available_ram / GB


def _sysctl(name: str) -> str:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for row in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if row.startswith("model name"):
                return row.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _linux_os_name() -> str:
    pretty = ""
    try:
        for row in Path("/etc/os-release").read_text().splitlines():
            if row.startswith("PRETTY_NAME="):
                pretty = row.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    kernel = platform.release()
    return f"Linux {kernel}" + (f" ({pretty})" if pretty else "")


def native_apple_silicon() -> bool:
    """This process runs natively on Apple Silicon (macOS, arm64), so Metal is there for it. Cheap: no MLX,
    no sysctl (`detect_hardware` says more, Rosetta included)."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


def detect_hardware(*, total_ram: int | None = None, available_ram: int | None = None) -> Hardware:
    """Read the machine. RAM figures can be injected (tests, "what would a 16 GB Mac get").

    A fake `Hardware(...)` can also be built directly for tests of the recommendation table.
    """

    vm = psutil.virtual_memory()
    machine = platform.machine()
    if sys.platform == "darwin":
        os_name = f"macOS {platform.mac_ver()[0]}"
        rosetta = _sysctl("sysctl.proc_translated") == "1"
        apple = machine == "arm64" or rosetta
        brand = _sysctl("machdep.cpu.brand_string") or machine
        chip = f"{brand} (Apple Silicon)" if apple else f"{brand} (Intel)"
        if rosetta:
            chip = f"{brand} (Apple Silicon, running under Rosetta: Metal unavailable to this process)"
    else:
        os_name = _linux_os_name() if sys.platform.startswith("linux") else platform.platform()
        rosetta, apple = False, False
        chip = f"{machine} ({_cpu_model() or 'unknown CPU'})"
    return Hardware(
        os_name=os_name,
        chip=chip,
        apple_silicon=apple,
        rosetta=rosetta,
        total_ram=total_ram if total_ram is not None else vm.total,
        available_ram=available_ram if available_ram is not None else vm.available,
    )


def mlx_backend() -> str:
    """'Metal', 'CUDA', 'CPU', or 'not installed'. Imports mlx (call it only when needed)."""
    try:
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    except ImportError:
        return "not installed"
    if mx.metal.is_available():
        return "Metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "CUDA"
    return "CPU"


def blas_library() -> str:
    """Which BLAS this process loaded (Linux): OpenBLAS makes float32 matmuls ~30x faster on the CPU."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return "system (Accelerate)" if sys.platform == "darwin" else "unknown"
    text = maps.read_text(errors="replace")
    if "libopenblas" in text:
        return "OpenBLAS"
    return "bundled reference BLAS"
