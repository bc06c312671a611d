"""`lem train` and `lem fuse`: the training and fuse engines from the command line.

`lem train` takes every TrainConfig field as a flag (named as in mlx-lm: --batch-size, --iters ...), a
`-c config.yaml` in mlx-lm's shape, and/or a --preset; flags win over the file, the file over the preset.
Without a model anywhere it trains the built-in SmolLM2 (catalog id smollm2-135m), which needs no download.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from types import FrameType

from lemcore.errors import ConfigError
from lemcore.events import Event
from lemcore.influx import InfluxClient, InfluxTarget
from lemcore.jobs import CancelToken
from lemcore.models.catalog import EMBEDDED_ID, ENTRIES, find_entry
from lemcore.models.embedded import ensure_embedded_model
from lemcore.secrets import KeyringTokenStore, TokenStore, find_token_or_env
from lemcore.settings import load_settings
from lemcore.train.config import PRESETS, TrainConfig, load_yaml, preset
from lemcore.train.data import check_data
from lemcore.train.engine import resume_config, train_lora
from lemcore.train.events import (
    CheckpointSaved,
    EvalDone,
    HostChecked,
    TrainFinished,
    TrainStarted,
    TrainStep,
)
from lemcore.train.fuse import ADAPTER_CHOICES, FuseConfig, FuseStage, fuse_adapter
from lemcore.train.hosts import BACKENDS, HostList, load_hostfile, parse_hosts
from lemcore.train.influx import InfluxTrainReporter
from lemcore.train.launch import train_on_hosts

_SKIP = {"resume_from"}  # has its own --resume flag


def model_help() -> str:
    """--model's help: what a model may be, with the catalog ids spelled out."""
    ids = ", ".join(f"{e.id} (built in)" if e.embedded else e.id for e in ENTRIES)
    return (f"the model to train: a catalog id ({ids}; `lem models list` shows them), a hub id (owner/name) of "
            f"a downloaded model, or a local model folder. Default: the built-in {EMBEDDED_ID}, no download.")


def _fmt_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class ProgressPrinter:
    """Progress lines on stdout: one per report window (losses averaged over it), validations, saves."""

    def __init__(self, every: int) -> None:
        self.every = max(every, 1)
        self._losses: list[float] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, TrainStarted):
            what = "Resuming" if event.resumed else "Training"
            print(f"{what} {event.model} in {event.run_dir}: iterations {event.start_iteration + 1}-"
                  f"{event.total_iters}, {event.train_examples} train / {event.valid_examples} valid examples, "
                  f"{event.trainable_parameters / 1e6:.3f}M trainable parameters, peak memory about "
                  f"{event.estimated_peak_gb:.1f} GB of {event.usable_memory_gb:.1f} GB usable.", flush=True)
            for warning in event.warnings:
                print(f"Warning: {warning}", flush=True)
        elif isinstance(event, TrainStep):
            self._losses.append(event.train_loss)
            if event.iteration % self.every == 0 or event.iteration == event.total_iters:
                loss = sum(self._losses) / len(self._losses)
                self._losses = []
                print(f"Iter {event.iteration}/{event.total_iters}: train loss {loss:.3f}, "
                      f"lr {event.learning_rate:.2e}, {event.iterations_per_second:.2f} it/s, "
                      f"{event.tokens_per_second:.0f} tok/s, {event.trained_tokens} tokens, "
                      f"peak {event.peak_memory_gb:.2f} GB, ETA {_fmt_seconds(event.eta_seconds)}", flush=True)
        elif isinstance(event, EvalDone):
            best = " (best)" if event.improved else f" (best {event.best_val_loss:.3f} at {event.best_iteration})"
            print(f"Iter {event.iteration}: val loss {event.val_loss:.3f}{best}, {event.val_seconds:.1f}s",
                  flush=True)
        elif isinstance(event, CheckpointSaved) and event.reason != "best":
            print(f"Saved {event.reason} checkpoint: {event.path}", flush=True)
        elif isinstance(event, TrainFinished):
            print(event.message, flush=True)
        elif isinstance(event, FuseStage):
            print(f"{event.stage} ...", flush=True)
        elif isinstance(event, HostChecked):
            state = f"ready ({event.summary})" if event.ok else "not ready"
            print(f"Machine {event.host} (rank {event.rank}): {state}", flush=True)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    for f in fields(TrainConfig):
        if f.name in _SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = (model_help() if f.name == "model" else f.metadata["help"]).replace("%", "%%")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            p.add_argument(flag, type=kind, default=None, choices=f.metadata.get("choices"), help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if f.name not in _SKIP and getattr(args, f.name, None) is not None}
    if args.resume:
        return resume_config(args.resume, **given)
    config = preset(args.preset) if args.preset else TrainConfig()
    if args.config:
        loaded = load_yaml(args.config)
        base = TrainConfig()
        # Keys the file sets (differs from the defaults) override the preset.
        config = config.with_changes(**{f.name: getattr(loaded, f.name) for f in fields(TrainConfig)
                                        if getattr(loaded, f.name) != getattr(base, f.name)})
    config = config.with_changes(**given)
    return config if config.model.strip() else config.with_changes(model=EMBEDDED_ID)


def _convert_builtin(config: TrainConfig) -> None:
    """The built-in model's folder exists only once converted: make it, so a printed command opens it."""
    entry = find_entry(config.model)
    if entry is not None and entry.embedded:
        ensure_embedded_model()


def _influx_reporter(config: TrainConfig, store: TokenStore) -> InfluxTrainReporter:
    settings = load_settings()
    if not settings.influx_url:
        raise ConfigError("No InfluxDB server configured: set it in Settings (or INFLUX_URL), or drop --influx.")
    resolved = find_token_or_env(store)
    token = resolved.token
    if resolved.from_file:
        print(resolved.note[0].upper() + resolved.note[1:] + ".", file=sys.stderr)
    if not token:
        raise ConfigError(f"No token for {settings.influx_url}: run `lem login` (or set INFLUX_TOKEN).")
    client = InfluxClient(InfluxTarget(settings.influx_url, settings.influx_db), token)
    return InfluxTrainReporter(client, model=config.model, every=config.steps_per_report)


@contextmanager
def first_ctrl_c_cancels(cancel: CancelToken) -> Iterator[None]:
    """First Ctrl-C: stop at the next step with a resumable checkpoint. Second: interrupt at once.
    (Signal handlers exist only on the main thread; elsewhere Ctrl-C keeps its default.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        print("\nStopping after this step (a checkpoint will be saved); Ctrl-C again to abort.", flush=True)
        cancel.cancel()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.model is None and not args.resume and config.model == EMBEDDED_ID:
        print(f"No --model given: training the built-in model ({EMBEDDED_ID}).", file=sys.stderr)
    if args.save_config:
        config.save_yaml(args.save_config)
        print(f"Config saved to {args.save_config}")
    if args.print_command:
        _convert_builtin(config)
        print(config.command_line(args.save_config))
        return 0
    if args.check:
        config.validate()
        _convert_builtin(config)
        data = check_data(config.data, batch_size=config.batch_size, mask_prompt=config.mask_prompt,
                          max_seq_length=config.max_seq_length, iters=config.iters)
        for stats in data.splits.values():
            print(f"{stats.path.name}: {stats.examples} examples ({data.format})")
        for warning in data.warnings:
            print(f"Warning: {warning}")
        data.raise_for_errors()
        print("Config and data look fine. Equivalent command: " + config.command_line(args.save_config))
        return 0

    printer = ProgressPrinter(config.steps_per_report)
    influx = _influx_reporter(config, KeyringTokenStore()) if args.influx else None

    def report(event: Event) -> None:
        printer(event)
        if influx is not None:
            influx(event)

    hosts = host_list(args)
    cancel = CancelToken()
    try:
        with first_ctrl_c_cancels(cancel):
            if hosts is None:
                result = train_lora(config, report=report, cancel=cancel)
            else:
                result = train_on_hosts(config, hosts, report=report, cancel=cancel, backend=args.backend or "",
                                        port=args.port)
    finally:
        if influx is not None:
            influx.close()
    print(f"Adapter: {result.adapter_file}" + (f" (best: {result.best_adapter_dir})" if result.best_adapter_dir
                                               else ""))
    return 0


def host_list(args: argparse.Namespace) -> HostList | None:
    """The machines from --hosts or --hostfile; None for a run on this machine only."""
    if args.hosts and args.hostfile:
        raise ConfigError("Give either --hosts or --hostfile, not both.")
    if args.hostfile:
        return load_hostfile(args.hostfile)
    return parse_hosts(args.hosts) if args.hosts else None


def add_host_flags(p: argparse.ArgumentParser) -> None:
    """--hosts, --hostfile, --port (shared with `lem doctor`)."""
    p.add_argument("--hosts", metavar="H1,H2", help="train on several machines (SSH names or addresses, this one "
                   "first; 127.0.0.1 is this machine). The batch size is the total, split over the machines")
    p.add_argument("--hostfile", metavar="FILE", help="the machines as an mlx.launch JSON hostfile")
    p.add_argument("--port", type=int, help="first network port of the ring (default: a free one)")


def _cmd_fuse(args: argparse.Namespace) -> int:
    result = fuse_adapter(FuseConfig(adapter_path=args.adapter_path, save_path=args.save_path,
                                     model=args.model or "", dequantize=args.dequantize, adapter=args.adapter),
                          report=ProgressPrinter(1))
    c = result.check
    if result.adapter is not None:
        print(f"Fused {result.adapter.describe()} from {result.adapter.path}.")
    print(f"Fused model saved to {result.save_path}. Check on {c.prompts} prompts: logits within "
          f"{c.relative_diff:.2e} (allowed {c.tolerance:.0e}), top token agrees at {c.top1_agreement:.0%}.")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="fine-tune a model with LoRA (mlx-lm's trainer, resumable)",
                       description="Fine-tune with LoRA/DoRA. Settings: --preset, then -c FILE, then flags. "
                                   f"The model defaults to the built-in {EMBEDDED_ID}; catalog ids "
                                   f"({', '.join(e.id for e in ENTRIES)}) work as --model. Build --data from "
                                   "contributed answers with `lem data build`.")
    p.add_argument("-c", "--config", help="YAML config in mlx-lm's `-c` shape")
    p.add_argument("--preset", choices=PRESETS, help="start from the lab's recipe or a quick test")
    p.add_argument("--resume", metavar="RUN", help="continue a run folder (or checkpoint) exactly where it stopped")
    p.add_argument("--check", action="store_true", help="check config and data, print the command, do not train")
    p.add_argument("--print-command", action="store_true", help="print the equivalent `mlx_lm lora` command")
    p.add_argument("--save-config", metavar="FILE", help="write the resulting config as YAML")
    p.add_argument("--influx", action="store_true", help="report to the lab's InfluxDB (Settings + keychain)")
    add_host_flags(p)
    p.add_argument("--backend", choices=BACKENDS, help="MLX's distributed backend for --hosts (default: ring, "
                   "or the hostfile's)")
    _add_config_flags(p)
    p.set_defaults(func=_cmd_train)

    f = sub.add_parser("fuse", help="fuse an adapter into its base model (checked against base+adapter)")
    f.add_argument("--adapter-path", required=True, help="run folder, its best/ folder or a checkpoint")
    f.add_argument("--adapter", choices=ADAPTER_CHOICES, default="best",
                   help="for a run folder: the best adapter (lowest validation loss, the default) or the final "
                        "one; a run without validation has only the final one, and the output says so")
    f.add_argument("--save-path", required=True, help="new folder for the fused model")
    f.add_argument("--model", help="base model (default: the one the adapter was trained on)")
    f.add_argument("--dequantize", action="store_true", help="save float weights even for a quantized base")
    f.set_defaults(func=_cmd_fuse)
