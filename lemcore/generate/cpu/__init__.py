"""Kernels for MLX's CPU backend (x86 Linux), switched into a model only while our generator runs it
(paths.py): attention with NumPy's vectorised softmax (attention.py) and SwiGLU via power(2, x)
(activations.py). See docs/platform-notes.md for the measurements behind them.

MLX, mlx-lm and NumPy are imported inside the kernels: these modules load with the generation engine, and
`import lemcore` must not load MLX.
"""

from lemcore.generate.cpu.paths import cpu_fast_paths

__all__ = [
    "cpu_fast_paths",
]
