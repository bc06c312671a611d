"""Generation backends: continuous batched generation on MLX (engine.py) and any OpenAI-compatible server
(api.py), both behind the `Generator` protocol (protocol.py) that contribute and benchmarks use. On MLX's CPU
backend, cpu/ switches in faster attention and SwiGLU and sampling.py samples inside the model call.
"""

from lemcore.generate.api import APIGenerator
from lemcore.generate.engine import MLXGenerator, TokenChunk
from lemcore.generate.protocol import WAIT, Feed, Generator, GenItem, GenResult, Messages, Sampling

__all__ = [
    "WAIT",
    "APIGenerator",
    "Feed",
    "GenItem",
    "GenResult",
    "Generator",
    "MLXGenerator",
    "Messages",
    "Sampling",
    "TokenChunk",
]
