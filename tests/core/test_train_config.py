"""TrainConfig: validation messages, presets, YAML in mlx-lm's `-c` shape, the equivalent command line."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from lemcore.errors import ConfigError
from lemcore.train.config import (
    PRESETS,
    TrainConfig,
    from_mlx_dict,
    lek_recipe,
    load_yaml,
    preset,
    quick_test,
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "hello"}\n')
    return folder


def good(data_dir: Path, **changes) -> TrainConfig:  # type: ignore[no-untyped-def]
    base = {"model": "mlx-community/gemma-3-1b-it-qat-4bit", "data": str(data_dir)}
    return TrainConfig(**{**base, **changes})


def test_defaults_are_mlx_lm_defaults_and_valid(data_dir: Path) -> None:
    from mlx_lm.lora import CONFIG_DEFAULTS

    config = good(data_dir)
    config.validate()
    mlx = config.to_mlx_dict()
    for key in ("fine_tune_type", "optimizer", "seed", "num_layers", "batch_size", "iters", "val_batches",
                "learning_rate", "steps_per_report", "steps_per_eval", "save_every", "max_seq_length",
                "grad_checkpoint", "grad_accumulation_steps", "lora_parameters", "mask_prompt"):
        assert mlx[key] == CONFIG_DEFAULTS[key], key


def test_every_field_has_form_metadata() -> None:
    from lemcore.train.config import FORM_GROUPS

    for f in fields(TrainConfig):
        assert f.metadata["label"] and f.metadata["help"].endswith((".", ")")), f.name
    grouped = [name for names in FORM_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(f.name for f in fields(TrainConfig))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"batch_size": 0}, "batch_size", "Batch size must be at least 1."),
        ({"iters": 0}, "iters", "Steps must be at least 1."),
        ({"learning_rate": 0.0}, "learning_rate", "Learning rate must be greater than 0"),
        ({"num_layers": 0}, "num_layers", "-1 for all layers"),
        ({"lora_rank": 0}, "lora_rank", "LoRA rank must be at least 1"),
        ({"lora_dropout": 1.5}, "lora_dropout", "between 0 and 1"),
        ({"val_batches": 0}, "val_batches", "-1 for the whole validation set"),
        ({"fine_tune_type": "full"}, "fine_tune_type", "lora, dora"),
        ({"optimizer": "rmsprop"}, "optimizer", "adam, adamw"),
        ({"warmup_steps": 1000, "iters": 10}, "warmup_steps", "fewer than the steps"),
        ({"grad_accumulation_steps": 4, "save_every": 10}, "save_every", "multiple of the gradient accumulation"),
        ({"batch_size": "two"}, "batch_size", "Batch size must be a number."),
        ({"model": " "}, "model", "Choose a model"),
        ({"model": "/no/such/model"}, "model", "does not exist"),
    ],
)
def test_each_bad_field_has_a_plain_message(data_dir: Path, change: dict, field: str, message: str) -> None:
    config = good(data_dir, **change)
    assert message in config.problems()[field]
    with pytest.raises(ConfigError, match=message.split("(")[0][:30]):
        config.validate()


def test_missing_data_folder_and_train_file(tmp_path: Path) -> None:
    config = TrainConfig(model="a/b", data=str(tmp_path / "nope"))
    assert "does not exist" in config.problems()["data"]
    (tmp_path / "empty").mkdir()
    assert "no train.jsonl" in config.with_changes(data=str(tmp_path / "empty")).problems()["data"]


def test_lek_recipe_follows_the_labs_numbers_by_size() -> None:
    small = lek_recipe(1.0)
    assert (small.iters, small.batch_size, small.learning_rate, small.grad_checkpoint) == (200, 2, 1e-5, False)
    assert small.mask_prompt and small.save_every == 50 and small.num_layers == 16
    assert lek_recipe(4.0).grad_checkpoint is False
    assert lek_recipe(12.0).grad_checkpoint is True and lek_recipe(12.0).batch_size == 2
    big = lek_recipe(27.0)
    assert (big.batch_size, big.learning_rate, big.grad_checkpoint) == (1, 5e-6, True)
    assert set(PRESETS) == {"LEK recipe", "Quick test"}
    assert preset("Quick test", model="m").iters == quick_test().iters
    with pytest.raises(ConfigError, match="Unknown preset"):
        preset("Fast")


def test_model_size_for_the_recipe(tiny_llama: Path) -> None:
    from lemcore.train.config import model_size_b

    assert model_size_b("mlx-community/gemma-3-27b-it-qat-4bit") == 27
    assert model_size_b("mlx-community/Meta-Llama-3.1-8B-Instruct-4bit") == 8
    assert model_size_b("SmolLM2-1.7B-Instruct") == 1.7
    assert model_size_b(str(tiny_llama)) == pytest.approx(0.0001, abs=0.0001)  # counted from config.json
    assert model_size_b("no-size-here") is None


def test_yaml_round_trip_and_mlx_lm_reads_it(data_dir: Path, tmp_path: Path) -> None:
    import yaml
    from mlx_lm.lora import yaml_loader
    from mlx_lm.tuner.utils import build_schedule

    config = good(data_dir, lora_rank=16, lora_dropout=0.05, lr_schedule="cosine", warmup_steps=10,
                  min_learning_rate=1e-7, early_stopping_patience=3, mask_prompt=True)
    path = config.save_yaml(tmp_path / "run.yaml")
    assert load_yaml(path) == config
    raw = yaml.load(path.read_text(), yaml_loader)  # exactly as `mlx_lm lora -c` reads it
    assert raw["lora_parameters"] == {"rank": 16, "scale": 20.0, "dropout": 0.05}
    assert raw["lr_schedule"]["name"] == "cosine_decay" and raw["lr_schedule"]["warmup"] == 10
    schedule = build_schedule(raw["lr_schedule"])
    assert float(schedule(10)) == pytest.approx(1e-5)
    assert raw["lem"]["early_stopping_patience"] == 3


def test_lab_style_yaml_with_cli_keys_loads(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("model: mlx-community/gemma-3-4b-it-qat-4bit\ntrain: true\ndata: ./training\n"
                    "learning_rate: 1e-5\nbatch_size: 2\nlora_parameters: {rank: 8, scale: 20.0, dropout: 0.0}\n"
                    "resume_adapter_file: null\ntest: false\n")
    config = load_yaml(path)
    assert config.learning_rate == 1e-5 and isinstance(config.learning_rate, float) and config.batch_size == 2


def test_bad_yaml_messages(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: x\nbatchsize: 2\n")
    with pytest.raises(ConfigError, match="unknown setting.*batchsize"):
        load_yaml(path)
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="restores weights only"):
        from_mlx_dict({"resume_adapter_file": "a.safetensors"})
    with pytest.raises(ConfigError, match="does not exist|Cannot read"):
        load_yaml(tmp_path / "missing.yaml")


def test_command_line_parses_back_with_mlx_lm(data_dir: Path) -> None:
    from mlx_lm.lora import build_parser

    config = good(data_dir, iters=200, batch_size=2, mask_prompt=True, num_layers=-1, grad_checkpoint=True,
                  adapter_path="/tmp/run")
    argv = config.to_command()
    assert argv[:2] == ["mlx_lm", "lora"] and "-c" not in argv
    ns = build_parser().parse_args(argv[2:])
    assert (ns.iters, ns.batch_size, ns.learning_rate, ns.num_layers) == (200, 2, 1e-5, -1)
    assert ns.mask_prompt and ns.grad_checkpoint and ns.train and ns.adapter_path == "/tmp/run"
    # rank/scale/dropout have no flags in mlx-lm: the command then needs the YAML
    assert config.with_changes(lora_rank=4).to_command("cfg.yaml")[-2:] == ["-c", "cfg.yaml"]
    assert "--mask-prompt" in config.command_line()
    json.dumps(config.to_mlx_dict())  # plain types only


def test_the_command_names_models_as_plain_mlx_lm_resolves_them(data_dir: Path, tiny_llama: Path) -> None:
    from lemcore.models.catalog import catalog
    from lemcore.models.embedded import embedded_model_dir

    def model_arg(model: str) -> str:
        argv = good(data_dir, model=model).to_command()
        return argv[argv.index("--model") + 1]

    hub_entry = next(e for e in catalog() if not e.embedded)
    assert model_arg(hub_entry.id) == hub_entry.repo  # not downloaded here: the hub repo mlx-lm can fetch
    assert model_arg("smollm2-135m") == str(embedded_model_dir())  # the built-in model: its converted folder
    assert model_arg(str(tiny_llama)) == str(tiny_llama)
    assert model_arg("someone/some-model") == "someone/some-model"
