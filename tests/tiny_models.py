"""Tiny offline models for tests: a real mlx-lm directory (config, weights, tokenizer, chat template) in < 1 s.

No hub, no downloads: the tokenizer is a byte-level BPE trained here on the text below, the weights are random
from mlx-lm's own model classes. Outputs are gibberish but deterministic for a given seed: compare token ids,
never decoded text. mlx and mlx-lm are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import pytest

ARCHS = ("llama", "gemma3_text")

# Our own text (a few KB, digits included) so the BPE learns ordinary English words and numbers.
TRAINING_TEXT = """\
The volunteers met every Saturday morning in the old library on Mill Street. Nobody paid them, and nobody
asked them to come. They came because the work needed doing and because doing it together was better than
doing it alone. Some of them sorted donated books, some repaired chairs, and some simply made tea for the
others. At 9 o'clock the doors opened; by 12 the tables were full.

Ethics is not a list of rules that someone hands you. It is the habit of asking what you owe to other people,
and then doing it even when it is inconvenient. A good answer is honest about what it does not know. A good
answer does not pretend to be certain when it is only guessing. When you are unsure, say so, and explain why.
When someone asks for help with something harmful, you may refuse, but you should refuse kindly and offer a
better path if there is one.

Arithmetic is a small kind of honesty. If you add 17 and 25 you get 42, whether or not you like the answer.
If you multiply 6 by 7 you also get 42. Half of 100 is 50, a third of 90 is 30, and 3 times 333 is 999.
The year has 365 days, or 366 in a leap year such as 2024. A dozen eggs is 12 eggs; two dozen is 24.
Count the chairs: 8 at the first table, 10 at the second, 14 at the third, which makes 32 chairs in all.

The user asked a question, and the assistant answered it. The system said to be careful, polite and brief.
The assistant thought about the question, checked the numbers, and wrote a short reply. Then the user asked
another question, and the assistant answered that one too. A conversation is a sequence of turns: the user
speaks, the model replies, and each turn ends before the next begins.

Training a model means showing it many examples and nudging its weights after each batch. The loss should go
down. If the loss goes up, the learning rate may be too high. Validation tells you whether the model learned
something general or only memorised the examples. Keep a few examples aside, and never train on them.

Volunteers who care about fairness try to treat every person the same way. They listen before they speak.
They keep their promises, they admit their mistakes, and they share credit with the people who helped them.
Trust grows slowly and breaks quickly; that is why small honest acts matter so much. A kind word costs
nothing, and a careful answer can save someone hours of trouble.

On Sunday the library counted the week: 148 books sorted, 23 chairs repaired, 57 cups of tea, 0 complaints.
Next week they hope to sort 200 books. The numbers 1 2 3 4 5 6 7 8 9 10 are easy; the work behind them is not.
"""

# Per-architecture chat format. Special tokens come first in the vocabulary, in this order (Gemma's real ids
# for <pad>, <eos>, <bos> are 0, 1, 2 too).
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Gemma has no system role: like the real template, the system text is prepended to the first user turn.
_GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] + '\\n\\n' %}{% set messages = messages[1:] %}"
    "{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (system if loop.first else '') + message['content'] }}"
    "{{ '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
_CHAT_FORMATS = {
    "llama": {
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "tokens": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None},
        "template": _CHATML_TEMPLATE,
    },
    "gemma3_text": {
        "special": ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        "tokens": {"eos_token": "<end_of_turn>", "pad_token": "<pad>", "bos_token": "<bos>"},
        "template": _GEMMA_TEMPLATE,
    },
}


@functools.cache
def tokenizer_json(arch: str, vocab_size: int) -> str:
    """Train (once per process per arch and size) and return the serialized tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    fmt = _CHAT_FORMATS[arch]
    tok = Tokenizer(models.BPE())
    # Digits one by one (as SmolLM2 does), then GPT-2 byte-level: every string is encodable, no <unk>.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()  # mlx-lm picks its BPE streaming detokenizer from this
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=fmt["special"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The trainer breaks count ties by token ids, which are fixed by the sorted alphabet: same text, same
    # vocabulary in every process (checked across hash seeds by the tests).
    tok.train_from_iterator(TRAINING_TEXT.splitlines(), trainer=trainer)
    bos = fmt["tokens"]["bos_token"]
    if bos:
        # Plain encode() adds <bos> like the real Gemma tokenizer; apply_chat_template does not (the template
        # writes it), so there is exactly one.
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return tok.to_str()


def _model_config(arch: str, hidden_size: int, num_layers: int, vocab_size: int, eos_ids: list[int],
                  context: int = 8192) -> dict:
    heads, kv_heads = 4, 2  # grouped-query attention, as in the real small models
    head_dim = hidden_size // heads
    common = {
        "model_type": arch,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "intermediate_size": hidden_size * 2,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab_size,
        # SmolLM2's context: a sandwich (~3.7K tokens with this tokenizer) plus its answer must fit, or the
        # generator refuses the prompt.
        "max_position_embeddings": context,
        "eos_token_id": eos_ids,
    }
    if arch == "llama":
        # Untied: with tied random embeddings a llama just repeats the prompt's last token for every seed.
        return {
            **common,
            "architectures": ["LlamaForCausalLM"],
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
        }
    return {
        **common,
        "architectures": ["Gemma3ForCausalLM"],
        "tie_word_embeddings": True,
        "query_pre_attn_scalar": head_dim,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        # Small window so tests that generate a few dozen tokens exercise the rotating cache; the pattern must
        # not exceed the layer count or mlx-lm indexes a cache that does not exist.
        "sliding_window": 32,
        "sliding_window_pattern": min(2, num_layers),
    }


def make_tiny_model(
    dest: Path,
    arch: str = "llama",
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
    context: int = 8192,
) -> Path:
    """Write a loadable mlx-lm model directory at `dest` (created if missing) and return it.

    Same arguments and seed give identical files (weights and tokenizer), in any process.
    """
    if arch not in _CHAT_FORMATS:
        raise ValueError(f"Unknown tiny-model arch {arch!r}; choose one of {ARCHS}.")
    if hidden_size % 4:
        raise ValueError("hidden_size must be a multiple of 4 (4 attention heads).")
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fmt = _CHAT_FORMATS[arch]

    tok_json = tokenizer_json(arch, vocab_size)
    vocab = json.loads(tok_json)["model"]["vocab"]
    if len(vocab) > vocab_size:
        raise AssertionError(f"tokenizer has {len(vocab)} tokens, more than vocab_size {vocab_size}")
    eos_ids = [vocab[fmt["tokens"]["eos_token"]]]
    if arch == "gemma3_text":
        eos_ids.insert(0, vocab["<eos>"])  # real Gemma 3 stops on both <eos> and <end_of_turn>

    config = _model_config(arch, hidden_size, num_layers, vocab_size, eos_ids, context)
    module = importlib.import_module(f"mlx_lm.models.{arch}")
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    # Damp the output rows of the special tokens: pure random weights made some seeds answer <|im_end|> after
    # one token, which leaves generation tests nothing to look at. Greedy decoding now practically never picks
    # them; a test that needs a stop token forces it with a logits processor or relies on max_tokens.
    head = "model.embed_tokens.weight" if config["tie_word_embeddings"] else "lm_head.weight"
    n_special = len(fmt["special"])
    weights[head] = mx.concatenate([weights[head][:n_special] * 0.1, weights[head][n_special:]])
    if config["tie_word_embeddings"]:
        weights.pop("lm_head.weight", None)  # mlx-lm's gemma3 sanitize ties the head when it is absent
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})

    (dest / "config.json").write_text(json.dumps(config, indent=2))
    (dest / "tokenizer.json").write_text(tok_json)
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context,
        "chat_template": fmt["template"],
        **{k: v for k, v in fmt["tokens"].items() if v is not None},
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    return dest


# Fixtures: tests/conftest.py re-exports these (`from tests.tiny_models import tiny_llama, tiny_gemma, ...`).


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama (ChatML template) built once per session. Treat it as read-only."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny gemma3_text (Gemma turn template) built once per session. Treat it as read-only."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-gemma"), "gemma3_text")


@pytest.fixture
def tiny_model_factory(tmp_path: Path):
    """For tests that need their own (writable or differently sized) model: `factory(arch="llama", **kw)`."""
    counter = itertools.count()

    def build(arch: str = "llama", **kwargs) -> Path:
        return make_tiny_model(tmp_path / f"tiny-{arch}-{next(counter)}", arch, **kwargs)

    return build
