"""The training config (YAML + dotted overrides, one-line errors naming the dotted key) and `xlpo train`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xlpo.config import parse_override
from xlpo.errors import UserError
from xlpo.model_spec import ModelSpec
from xlpo.train.config import TrainConfig, derive_train_config, load_config, merge_train_sections, options_help

XLPO = Path(sys.executable).parent / "xlpo"


def error_of(*overrides: str, path=None) -> str:
    with pytest.raises(UserError) as info:
        load_config(path, list(overrides))
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- partial sections


def test_partial_sections_merge_by_the_one_rule():
    defaults = {"loss": {"name": "dpo_nll", "beta": 0.1, "nll_weight": 1.0},
                "lora": {"r": 16, "target_modules": ["q_proj", "v_proj"]}, "training": {"epochs": 1, "seed": 42}}
    merged = merge_train_sections(defaults, {"training": {"seed": 7}, "lora": {"target_modules": ["o_proj"]}},
                                  {"loss": {"beta": 0.2}})
    assert merged == {"loss": {"name": "dpo_nll", "beta": 0.2, "nll_weight": 1.0},
                      "lora": {"r": 16, "target_modules": ["o_proj"]}, "training": {"epochs": 1, "seed": 7}}
    # Another loss replaces the loss whole: nll_weight is not a DPO parameter.
    assert merge_train_sections(defaults, {"loss": {"name": "dpo"}})["loss"] == {"name": "dpo"}
    assert defaults["training"] == {"epochs": 1, "seed": 42}  # the inputs are left as they were


def test_derive_train_config_validates_the_merge_and_sets_a_typed_reference():
    cfg = derive_train_config({"loss": {"name": "dpo"}}, {"training": {"seed": 3}},
                              reference=ModelSpec("base-model", "some/adapter"))
    assert cfg.loss.name == "dpo" and cfg.loss.params()["beta"] == 0.1 and cfg.training.seed == 3
    assert cfg.reference_spec() == ModelSpec("base-model", "some/adapter")
    assert derive_train_config({}).reference_spec() == ModelSpec("embedded")  # default: the starting base weights
    with pytest.raises(UserError, match=r"^config: run: training.seed"):
        derive_train_config({"training": {"seed": "x"}}, prefix="run: ")


# --------------------------------------------------------------------------- valid configs


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, TrainConfig)
    assert cfg.model_dump(exclude={"loss"}) == TrainConfig().model_dump(exclude={"loss"})
    # the resolved config writes the loss's defaults out, so config.yaml says exactly what ran
    assert cfg.model_dump()["loss"] == {"name": "capo", "beta": 0.1, "alpha": 2.0, "rrm": "paper", "rrm_eps": 1e-3}
    assert cfg.loss.name == "capo" and cfg.data.chat_format == "tokenizer" and cfg.data.truncation == "skip"
    assert cfg.data.max_prompt_length < cfg.data.max_length
    assert cfg.training.learning_rate == 5e-5 and cfg.training.grad_accum == 1
    assert cfg.loss.params() == {"beta": 0.1, "alpha": 2.0, "rrm": "paper", "rrm_eps": 1e-3}


def test_yaml_file_and_overrides(tmp_path):
    path = write(tmp_path, """
model:
  name_or_path: some/model
data:
  train: prefs.jsonl
  columns: {rejected: reject}
  max_length: 512
  max_prompt_length: 256
loss:
  name: dpo
  beta: 0.2
training:
  batch_size: 2
  learning_rate: 1.0e-4
""")
    cfg = load_config(path, ["training.learning_rate=1e-5", "loss.beta=0.3", "lora.enabled=false",
                             "data.columns.lang=language", "lora.target_modules=[q_proj, v_proj]",
                             "model.attn_implementation=sdpa", "training.max_grad_norm=null"])
    assert cfg.model.name_or_path == "some/model"
    assert cfg.data.train == "prefs.jsonl" and cfg.data.max_length == 512 and cfg.data.max_prompt_length == 256
    assert cfg.data.columns == {"rejected": "reject", "lang": "language"}
    assert cfg.training.batch_size == 2  # from the file
    assert cfg.training.learning_rate == pytest.approx(1e-5) and isinstance(cfg.training.learning_rate, float)
    assert cfg.lora.enabled is False
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.model.attn_implementation == "sdpa"
    assert cfg.training.max_grad_norm is None
    assert cfg.loss.name == "dpo" and cfg.loss.params() == {"beta": 0.3, "label_smoothing": 0.0}


def test_later_override_wins():
    assert load_config(None, ["training.epochs=2", "training.epochs=3"]).training.epochs == 3


def test_value_containing_equals_sign():
    assert load_config(None, ["data.train=dir/a=b.jsonl"]).data.train == "dir/a=b.jsonl"


def test_empty_yaml_file_and_empty_section(tmp_path):
    assert load_config(write(tmp_path, "# nothing yet\n")) == load_config()
    # every key of a section commented out leaves `data:` = null; it is an empty section, and overrides work
    path = write(tmp_path, "data:\n#  train: x.jsonl\ntraining:\n  epochs: 2\n", "partial.yaml")
    cfg = load_config(path, ["data.train=y.jsonl"])
    assert cfg.data.train == "y.jsonl" and cfg.training.epochs == 2


def test_loss_params_fill_defaults_and_coerce():
    cfg = load_config(None, ["loss.alpha=3", "loss.rrm=inverse"])
    assert cfg.loss.params() == {"beta": 0.1, "alpha": 3.0, "rrm": "inverse", "rrm_eps": 1e-3}
    assert load_config(None, ["loss.name=kto", "training.batch_size=2"]).loss.name == "kto"


@pytest.mark.parametrize("item,path,value", [
    ("a.b=1", ["a", "b"], 1),
    ("a=x y", ["a"], "x y"),
    ("a=", ["a"], ""),
    ("a=[1, 2", ["a"], "[1, 2"),  # not valid YAML: kept as the raw string
    (" a.b =true", ["a", "b"], True),
])
def test_parse_override(item, path, value):
    assert parse_override(item) == (path, value)


# --------------------------------------------------------------------------- unknown keys


def test_unknown_nested_key_names_dotted_key_and_suggests():
    msg = error_of("training.lerning_rate=1e-4")
    assert "training.lerning_rate" in msg and "unknown key" in msg and "'learning_rate'" in msg


def test_unknown_top_level_key_suggests_section():
    msg = error_of("trainig.epochs=2")
    assert "trainig" in msg and "'training'" in msg


def test_unknown_key_without_close_match_lists_known_keys():
    msg = error_of("data.zzzzzz=1")
    assert "data.zzzzzz" in msg and "max_prompt_length" in msg and "chat_format" in msg


def test_unknown_key_in_yaml_file(tmp_path):
    path = write(tmp_path, "lora:\n  rank: 8\n")
    msg = error_of(path=path)
    assert "lora.rank" in msg and "unknown key" in msg


def test_unknown_loss_param_names_loss_key_and_suggests():
    msg = error_of("loss.name=capo", "loss.alpah=2")
    assert "loss.alpah" in msg and "'alpha'" in msg and "capo" in msg


def test_param_of_another_loss_is_unknown():
    msg = error_of("loss.name=dpo", "loss.alpha=2")
    assert "loss.alpha" in msg and "dpo" in msg and "beta" in msg


def test_unknown_loss_name_lists_known_losses():
    msg = error_of("loss.name=cpo")
    assert "loss.name" in msg and "'cpo'" in msg
    for name in ("capo", "dpo", "ipo", "kto", "simpo", "dpo_nll"):
        assert name in msg


# --------------------------------------------------------------------------- wrong types and impossible values


@pytest.mark.parametrize("override,key", [
    ("training.batch_size=abc", "training.batch_size"),
    ("training.batch_size=1.5", "training.batch_size"),
    ("training.learning_rate=fast", "training.learning_rate"),
    ("data.chat_format=chatml", "data.chat_format"),
    ("lora.enabled=maybe", "lora.enabled"),
    ("training=3", "training"),
    ("data.columns=reject", "data.columns"),
])
def test_wrong_type_names_key(override, key):
    msg = error_of(override)
    assert msg.startswith(f"config: {key}: ")


@pytest.mark.parametrize("override,key", [
    ("training.learning_rate=-1", "training.learning_rate"),
    ("training.learning_rate=0", "training.learning_rate"),
    ("training.batch_size=0", "training.batch_size"),
    ("training.grad_accum=-2", "training.grad_accum"),
    ("training.warmup_ratio=1.5", "training.warmup_ratio"),
    ("lora.dropout=1", "lora.dropout"),
    ("lora.r=0", "lora.r"),
    ("data.max_length=1", "data.max_length"),
    ("data.limit=0", "data.limit"),
])
def test_impossible_values_name_key(override, key):
    msg = error_of(override)
    assert msg.startswith(f"config: {key}: ")
    assert "greater than" in msg or "less than" in msg


@pytest.mark.parametrize("overrides", [
    ["data.max_prompt_length=1024"],
    ["data.max_prompt_length=2000"],
    ["data.max_length=256", "data.max_prompt_length=256"],
])
def test_prompt_length_must_be_below_max_length(overrides):
    msg = error_of(*overrides)
    assert "data.max_prompt_length" in msg and "data.max_length" in msg


@pytest.mark.parametrize("overrides,key", [
    (["loss.beta=-1"], "loss.beta"),
    (["loss.beta=0"], "loss.beta"),
    (["loss.name=capo", "loss.alpha=-0.5"], "loss.alpha"),
    (["loss.name=capo", "loss.rrm=sideways"], "loss.rrm"),
    (["loss.name=dpo", "loss.label_smoothing=0.9"], "loss.label_smoothing"),
    (["loss.name=simpo", "loss.gamma=x"], "loss.gamma"),
])
def test_bad_loss_values_name_loss_key(overrides, key):
    msg = error_of(*overrides)
    assert msg.startswith(f"config: {key}: ")


def test_kto_needs_batch_size_two():
    msg = error_of("loss.name=kto", "training.batch_size=1")
    assert "kto" in msg and "training.batch_size" in msg


def test_several_errors_on_one_line():
    msg = error_of("training.batch_size=0", "lora.r=0")
    assert "training.batch_size" in msg and "lora.r" in msg


def test_bad_override_syntax():
    assert "key=value" in error_of("training.epochs")
    assert "empty key part" in error_of("training..epochs=2")
    assert "not a section" in error_of("training.epochs=2", "training.epochs.x=1")


# --------------------------------------------------------------------------- the YAML file itself


def test_invalid_yaml_reports_file_and_line(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 2\n  seed: [1, 2\nloss:\n  name: dpo\n")
    msg = error_of(path=path)
    assert "invalid YAML" in msg
    line = int(msg.split(f"{path}:")[1].split(":")[0])
    assert line in (3, 4)


def test_invalid_yaml_mapping_line(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 2\n  seed: 1: 2\n")
    assert error_of(path=path).startswith(f"{path}:3: invalid YAML")


def test_yaml_that_is_not_a_mapping(tmp_path):
    assert "expected a mapping" in error_of(path=write(tmp_path, "- a\n- b\n"))


def test_missing_config_file(tmp_path):
    assert error_of(path=tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: config file not found"


# --------------------------------------------------------------------------- help text


def test_options_help_lists_every_option():
    from xlpo.losses import LOSSES

    text = options_help()
    for section, field in TrainConfig.model_fields.items():
        for name in field.annotation.model_fields:
            assert f"\n{section}.{name} = " in "\n" + text, f"{section}.{name}"
    for spec in LOSSES.values():
        for name in spec.params.model_fields:
            assert f"loss.{name} = " in text
    assert "\n" + "loss.rrm = 'paper'" in "\n" + text


def test_loss_parameters_known_without_torch_are_the_registered_ones():
    # Config validation and `xlpo train --help` read xlpo.loss_params, which does not import torch.
    from xlpo.loss_params import LOSS_PARAMS
    from xlpo.losses import LOSSES

    assert LOSS_PARAMS == {name: spec.params for name, spec in LOSSES.items()}


# --------------------------------------------------------------------------- the CLI


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([str(XLPO), "train", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def cli_help(tmp_path_factory) -> str:
    proc = run_cli("--help", cwd=tmp_path_factory.mktemp("help"))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_cli_user_error_is_one_line_exit_2(tmp_path):
    proc = run_cli("training.lerning_rate=1e-4", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "xlpo: error: config: training.lerning_rate: unknown key (did you mean 'learning_rate'?)\n"
    assert "Traceback" not in proc.stderr + proc.stdout and proc.stdout == ""


def test_cli_invalid_yaml_exit_2_names_file_line(tmp_path):
    write(tmp_path, "training:\n  epochs: 2\n  seed: 1: 2\n", "bad.yaml")
    proc = run_cli("bad.yaml", "loss.name=dpo", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xlpo: error: bad.yaml:3: invalid YAML")
    assert "Traceback" not in proc.stderr


def test_cli_help_lists_every_option(cli_help):
    from xlpo.losses import LOSSES

    for section, field in TrainConfig.model_fields.items():
        for name in field.annotation.model_fields:
            assert f"{section}.{name} = " in cli_help, f"{section}.{name}"
    for loss_name, spec in LOSSES.items():
        for name in spec.params.model_fields:
            assert f"loss.{name} = " in cli_help
    for key in ("loss.alpha", "loss.rrm", "loss.rrm_eps", "training.grad_accum", "data.truncation"):
        assert key in cli_help
    assert "--dry-run" in cli_help and "--resume" in cli_help


def test_cli_help_says_which_loss_a_parameter_belongs_to(cli_help):
    # `loss.beta` exists for several losses with different defaults: the help must say which is which.
    lines = [line for line in cli_help.splitlines() if "loss.beta = " in line]
    assert any("capo" in line and "0.1" in line for line in lines)
    assert any("simpo" in line and "2.0" in line for line in lines)
    assert any("loss.alpha = 2.0" in line and "capo" in line for line in cli_help.splitlines())


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    from xlpo.cli import _register, app

    _register()
    return CliRunner(), app


def test_dry_run_prints_resolved_yaml(tmp_path, runner):
    cli, app = runner
    write(tmp_path, "loss:\n  name: dpo\ntraining:\n  epochs: 3\n", "c.yaml")
    result = cli.invoke(app, ["train", str(tmp_path / "c.yaml"), "loss.beta=0.25", "training.batch_size=2",
                              "--dry-run"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    expected = load_config(tmp_path / "c.yaml", ["loss.beta=0.25", "training.batch_size=2"])
    assert printed == expected.model_dump(mode="json")
    assert printed["loss"] == {"name": "dpo", "beta": 0.25, "label_smoothing": 0.0}
    assert printed["training"]["epochs"] == 3 and printed["training"]["batch_size"] == 2
    assert printed["data"]["max_length"] == 1024  # defaults are printed too
    # the printed YAML is itself a valid config that gives the same result
    again = write(tmp_path, result.stdout, "again.yaml")
    assert load_config(again) == expected


def test_dry_run_with_overrides_only(runner):
    cli, app = runner
    result = cli.invoke(app, ["train", "loss.name=simpo", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["loss"]["name"] == "simpo"


def test_cli_runner_raises_user_error_for_bad_value(runner):
    cli, app = runner
    result = cli.invoke(app, ["train", "loss.beta=-1", "--dry-run"])
    assert isinstance(result.exception, UserError)
    assert str(result.exception).startswith("config: loss.beta: ")
