"""Generation backends: continuous batched generation on MLX (engine.py) and any OpenAI-compatible server
(api.py), both behind the `Generator` protocol (protocol.py) that contribute and benchmarks use. On MLX's CPU
backend, cpu/ switches in faster attention and SwiGLU and sampling.py samples inside the model call.
"""

from lemcore.generate.api import APIGenerator
from lemcore.generate.engine import GenItem, GenResult, MLXGenerator, Sampling, TokenChunk

__all__ = [
    "APIGenerator",
    "GenItem",
    "GenResult",
    "MLXGenerator",
    "Sampling",
    "TokenChunk",
]
