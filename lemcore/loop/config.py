"""What one LEK loop run does: the settings of each stage, read from a plain dict (a YAML file, the app's form).

A loop is the lab's method end to end (ARCHITECTURE.md, "The LEK loop"): gold answers -> a training set ->
LoRA training -> a fused model -> the same benchmarks on the base and the trained model -> their paired
comparison. `loop_config(spec)` checks a spec and fills the defaults; `to_spec(config)` gives the canonical
dict back, which the loop folder keeps, so a resumed loop runs with exactly the settings it started with.

A spec, as `lem loop -c loop.yaml` reads it (every key optional):

    base_model: smollm2-135m        # the model trained and compared; default: the built-in model
    folder: ~/lem-loops/first       # where the loop keeps its state; default: a new one in the data folder
    gold: {count: 40, max_tokens: 512}            # write gold answers first (count 0 or absent: skip)
    data: {split: seed, prompt: plain}            # or {folder: a built data folder}, or {sources: [files]}
    train: {preset: LEK recipe, iters: 200}       # any `lem train` setting, named as in its YAML
    fuse: {adapter: best}                         # best (lowest validation loss) or final
    bench: {suites: [gsm8k, {id: ethics, n: 20}], samples: 3}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lemcore.benchmarks.judge import JudgeConfig
from lemcore.benchmarks.run import SuiteSpec
from lemcore.benchmarks.suites import SUITE_IDS
from lemcore.errors import ConfigError
from lemcore.models.catalog import EMBEDDED_ID
from lemcore.train.config import PRESETS, TrainConfig, coerce_field, preset
from lemcore.train.dataset import PROMPT_POLICIES, SPLIT_METHODS
from lemcore.train.fuse import ADAPTER_CHOICES

# The stages in the order they run; a loop without a gold step starts at "dataset".
STAGES = ("gold", "dataset", "train", "fuse", "bench_base", "bench_trained", "compare")
STAGE_TITLES = {
    "gold": "Write gold answers",
    "dataset": "Build the training set",
    "train": "Train",
    "fuse": "Save the trained model",
    "bench_base": "Benchmark the base model",
    "bench_trained": "Benchmark the trained model",
    "compare": "Compare",
}
STAGE_DOING = {
    "gold": "Writing gold answers",
    "dataset": "Building the training set",
    "train": "Training",
    "fuse": "Saving the trained model",
    "bench_base": "Benchmarking the base model",
    "bench_trained": "Benchmarking the trained model",
    "compare": "Comparing",
}
# Set by the loop itself, not by a spec: the model, the data and the run folder it trains into.
_LOOP_OWNED_TRAIN = {"model", "data", "adapter_path", "resume_from"}


@dataclass(frozen=True)
class GoldStep:
    count: int = 0  # prompts to answer; 0: no gold step (the data step reads existing answers)
    model: str = ""  # the model writing them; "": the base model
    max_tokens: int = 512  # the lab's
    temperature: float = 0.3  # the lab's
    batch_size: int = 8
    prompts: str = ""  # a prompt file in the lab's format; "": the shipped gold prompts


@dataclass(frozen=True)
class DataStep:
    sources: tuple[str, ...] = ()  # answer files or folders; none: the gold step's answers, else this computer's
    folder: str = ""  # a data folder built before (train.jsonl, valid.jsonl): used as it is
    split: str = "seed"
    prompt_policy: str = "plain"  # the lab's: the sandwich is distilled away
    gate: bool = True
    keep_truncated: bool = False


@dataclass(frozen=True)
class BenchStep:
    suites: tuple[SuiteSpec, ...] = (SuiteSpec("gsm8k", n=50),)
    samples: int = 3
    seed: int = 0
    max_tokens: int = 0  # 0: each suite's default
    batch_size: int = 8
    judge: JudgeConfig | None = None


@dataclass(frozen=True)
class LoopConfig:
    base_model: str = EMBEDDED_ID
    folder: str = ""
    gold: GoldStep = field(default_factory=GoldStep)
    data: DataStep = field(default_factory=DataStep)
    preset: str = "LEK recipe"
    train: TrainConfig = field(default_factory=TrainConfig)  # model/data/adapter_path are the loop's
    adapter: str = "best"
    bench: BenchStep = field(default_factory=BenchStep)

    def stages(self) -> tuple[str, ...]:
        return STAGES if self.gold.count > 0 else STAGES[1:]


# -- reading a spec -------------------------------------------------------------------------------------
def _section(spec: dict[str, Any], key: str) -> dict[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"'{key}' must be a mapping of settings (e.g. {key}: {{...}}), not {value!r}.")
    return dict(value)


def _no_unknown(where: str, given: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"Unknown setting{'s' if len(unknown) > 1 else ''} in '{where}': {', '.join(unknown)}. "
                          f"Known: {', '.join(sorted(known))}.")


def _number(where: str, value: Any, kind: type, *, minimum: float | None = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise ConfigError(f"{where} must be {'a whole number' if kind is int else 'a number'}, not {value!r}.")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where} must be at least {minimum:g}, not {value!r}.")
    return kind(value)


def _text(where: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, Path)):
        raise ConfigError(f"{where} must be text (a name or a path), not {value!r}.")
    return str(value).strip()


def _suite(raw: Any) -> SuiteSpec:
    if isinstance(raw, str):
        raw = {"id": raw}
    if not isinstance(raw, dict) or "id" not in raw:
        raise ConfigError(f"A benchmark suite is a name ({', '.join(SUITE_IDS)}) or a mapping with 'id' (and "
                          f"optionally 'path' and 'n'), not {raw!r}.")
    _no_unknown("bench.suites", raw, {"id", "path", "n", "stratify"})
    suite_id = _text("bench.suites.id", raw["id"])
    if suite_id not in SUITE_IDS:
        raise ConfigError(f"Unknown benchmark suite {suite_id!r}. Choose from: {', '.join(SUITE_IDS)}.")
    n = raw.get("n")
    return SuiteSpec(suite_id, _text(f"bench.suites.{suite_id}.path", raw.get("path")),
                     None if n in (None, 0) else _number(f"bench.suites.{suite_id}.n", n, int, minimum=1),
                     bool(raw.get("stratify", True)))


def _judge(raw: Any) -> JudgeConfig | None:
    if raw in (None, "", {}):
        return None
    if not isinstance(raw, dict):
        raise ConfigError("bench.judge must be a mapping: {kind: local, model: ...} or {kind: api, url: ..., "
                          "model: ...}.")
    known = {f.name for f in fields(JudgeConfig)}
    _no_unknown("bench.judge", raw, known)
    if raw.get("kind") not in ("local", "api"):
        raise ConfigError("bench.judge.kind must be local (an MLX model here) or api (an OpenAI-compatible server).")
    return JudgeConfig(**raw)


def loop_config(spec: dict[str, Any] | None) -> LoopConfig:
    """Check a spec and fill in the defaults. Every problem is a ConfigError naming the setting."""
    spec = dict(spec or {})
    _no_unknown("the loop file", spec, {"base_model", "folder", "gold", "data", "train", "fuse", "bench"})

    gold_raw = _section(spec, "gold")
    _no_unknown("gold", gold_raw, {f.name for f in fields(GoldStep)})
    g = GoldStep()
    gold = GoldStep(
        count=_number("gold.count", gold_raw.get("count", g.count), int, minimum=0),
        model=_text("gold.model", gold_raw.get("model")),
        max_tokens=_number("gold.max_tokens", gold_raw.get("max_tokens", g.max_tokens), int, minimum=1),
        temperature=_number("gold.temperature", gold_raw.get("temperature", g.temperature), float, minimum=0),
        batch_size=_number("gold.batch_size", gold_raw.get("batch_size", g.batch_size), int, minimum=1),
        prompts=_text("gold.prompts", gold_raw.get("prompts")))

    data_raw = _section(spec, "data")
    if "prompt" in data_raw:  # the name `lem data build --prompt` uses
        data_raw["prompt_policy"] = data_raw.pop("prompt")
    _no_unknown("data", data_raw, {f.name for f in fields(DataStep)} | {"prompt"})
    sources = data_raw.get("sources") or ()
    if isinstance(sources, str):
        sources = (sources,)
    data = DataStep(
        sources=tuple(_text("data.sources", s) for s in sources), folder=_text("data.folder", data_raw.get("folder")),
        split=_text("data.split", data_raw.get("split", "seed")),
        prompt_policy=_text("data.prompt", data_raw.get("prompt_policy", "plain")),
        gate=bool(data_raw.get("gate", True)), keep_truncated=bool(data_raw.get("keep_truncated", False)))
    if data.split not in SPLIT_METHODS:
        raise ConfigError(f"data.split {data.split!r}: use {' or '.join(SPLIT_METHODS)}.")
    if data.prompt_policy not in PROMPT_POLICIES:
        raise ConfigError(f"data.prompt {data.prompt_policy!r}: use {' or '.join(PROMPT_POLICIES)}.")
    if data.folder and (data.sources or gold.count):
        raise ConfigError("data.folder uses a training set built before: leave out data.sources and the gold step, "
                          "or drop data.folder to build one.")

    train_raw = _section(spec, "train")
    preset_name = _text("train.preset", train_raw.pop("preset", "LEK recipe"))
    if preset_name not in PRESETS:
        raise ConfigError(f"train.preset {preset_name!r}: use one of {', '.join(PRESETS)}.")
    owned = sorted(set(train_raw) & _LOOP_OWNED_TRAIN)
    if owned:
        raise ConfigError(f"train.{owned[0]} is set by the loop itself (base_model, the data step and the loop "
                          "folder decide it): leave it out.")
    kinds = {f.name: f.type for f in fields(TrainConfig)}
    _no_unknown("train", train_raw, set(kinds) - _LOOP_OWNED_TRAIN)
    train = preset(preset_name, **{k: coerce_field(v, kinds[k], k, "train") for k, v in train_raw.items()})
    problems = {k: v for k, v in train.problems(check_paths=False).items() if k not in ("model", "data")}
    if problems:
        key, message = next(iter(problems.items()))
        raise ConfigError(f"train.{key}: {message}")

    fuse_raw = _section(spec, "fuse")
    _no_unknown("fuse", fuse_raw, {"adapter"})
    adapter = _text("fuse.adapter", fuse_raw.get("adapter", "best"))
    if adapter not in ADAPTER_CHOICES:
        raise ConfigError(f"fuse.adapter {adapter!r}: use best (lowest validation loss) or final.")

    bench_raw = _section(spec, "bench")
    _no_unknown("bench", bench_raw, {f.name for f in fields(BenchStep)})
    b = BenchStep()
    suites_raw = bench_raw.get("suites")
    suites = b.suites if suites_raw is None else tuple(_suite(s) for s in
                                                       ([suites_raw] if isinstance(suites_raw, str) else suites_raw))
    if not suites:
        raise ConfigError("bench.suites is empty: name at least one benchmark (e.g. gsm8k).")
    if len({s.id for s in suites}) != len(suites):
        raise ConfigError("bench.suites names a suite twice: each suite once.")
    bench = BenchStep(
        suites=suites, samples=_number("bench.samples", bench_raw.get("samples", b.samples), int, minimum=1),
        seed=_number("bench.seed", bench_raw.get("seed", b.seed), int),
        max_tokens=_number("bench.max_tokens", bench_raw.get("max_tokens", b.max_tokens), int, minimum=0),
        batch_size=_number("bench.batch_size", bench_raw.get("batch_size", b.batch_size), int, minimum=1),
        judge=_judge(bench_raw.get("judge")))

    base = _text("base_model", spec.get("base_model")) or EMBEDDED_ID
    return LoopConfig(base_model=base, folder=_text("folder", spec.get("folder")), gold=gold, data=data,
                      preset=preset_name, train=train, adapter=adapter, bench=bench)


def to_spec(config: LoopConfig) -> dict[str, Any]:
    """The canonical spec: `loop_config(to_spec(c)) == c`. Train settings are kept only where they differ from
    the preset, so the file stays readable."""
    start = preset(config.preset)
    train: dict[str, Any] = {"preset": config.preset}
    train.update({f.name: getattr(config.train, f.name) for f in fields(TrainConfig)
                  if f.name not in _LOOP_OWNED_TRAIN and getattr(config.train, f.name) != getattr(start, f.name)})
    d = config.data
    return {
        "base_model": config.base_model,
        "folder": config.folder,
        "gold": {f.name: getattr(config.gold, f.name) for f in fields(GoldStep)},
        "data": {"sources": list(d.sources), "folder": d.folder, "split": d.split, "prompt": d.prompt_policy,
                 "gate": d.gate, "keep_truncated": d.keep_truncated},
        "train": train,
        "fuse": {"adapter": config.adapter},
        "bench": {"suites": [{"id": s.id, "path": s.path, "n": s.n or 0, "stratify": s.stratify}
                             for s in config.bench.suites],
                  "samples": config.bench.samples, "seed": config.bench.seed, "max_tokens": config.bench.max_tokens,
                  "batch_size": config.bench.batch_size,
                  "judge": {f.name: getattr(config.bench.judge, f.name) for f in fields(JudgeConfig)}
                  if config.bench.judge else None},
    }


def load_loop_yaml(path: Path | str) -> LoopConfig:
    import yaml  # lazy: only `lem loop -c` reads YAML (pyyaml comes with mlx-lm)

    p = Path(path).expanduser()
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Loop file {p} does not exist. `lem loop --example` prints one to start from.") from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"Cannot read the loop file {p}: {err}".rstrip(".") + ".") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"Loop file {p} must hold settings (key: value lines), e.g. `base_model: smollm2-135m`.")
    return loop_config(raw)


EXAMPLE = """\
# A LEK loop: gold answers -> training set -> LoRA training -> fused model -> benchmarks of the base and
# the trained model -> their paired comparison. Every key is optional. Run: lem loop -c loop.yaml
base_model: smollm2-135m          # catalog id, hub id or model folder (default: the built-in model)
# folder: ~/lem-loops/first       # where the loop keeps its state (default: a new folder in the data folder)
gold:
  count: 40                       # prompts to answer with the axiom sandwich (0: use answers you already have)
  max_tokens: 512
data:
  split: seed                     # seed (no prompt family in two splits) or domain (the lab's split)
  prompt: plain                   # plain (the lab's: the sandwich is distilled away) or system
  # sources: [~/answers/gold.jsonl]   # train on these answer files instead of the gold step's
train:
  preset: LEK recipe              # the lab's settings; any `lem train` setting can follow
  iters: 200
fuse:
  adapter: best                   # best (lowest validation loss) or final
bench:
  suites: [gsm8k, {id: ethics, n: 20}]
  samples: 3
"""
