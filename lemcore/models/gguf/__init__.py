"""Our GGUF -> mlx-lm converter: tensors and metadata (convert.py), the tokenizer rebuilt from GGUF
metadata (tokenizer.py).
"""

from lemcore.models.gguf.convert import ConvertProgress, convert_gguf
from lemcore.models.gguf.tokenizer import write_tokenizer

__all__ = [
    "ConvertProgress",
    "convert_gguf",
    "write_tokenizer",
]
