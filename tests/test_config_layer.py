"""The config layer shared by training, ICR and experiment configs (xlpo.config): typed overrides,
YAML 1.2 files, did-you-mean against the right schema, help text, shipped configs by name."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from xlpo.config import (
    SHIPPED_DIR,
    YamlLoader,
    annotation_at,
    config_file,
    options_help,
    parse_override,
    parse_value,
    read_yaml,
    shipped_config,
    shipped_configs,
)
from xlpo.errors import UserError
from xlpo.experiments.capo_mtpe_config import ExperimentConfig, load_experiment
from xlpo.icr.config import ICRConfig, load_icr_config
from xlpo.train.config import TrainConfig, load_config

SHIPPED = {"capo-cpu-smollm2", "capo-paper-gpu", "capo-mtpe-cpu", "capo-mtpe-paper-gpu", "icr-cpu-smollm2",
           "icr-paper-gpu", "icr-paper-8gpu"}


def error_of(load, *overrides: str, path=None) -> str:
    with pytest.raises(UserError) as info:
        load(path, list(overrides))
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- override values


@pytest.mark.parametrize("override,key,value", [
    # Options that take text get the text as written (YAML 1.1 read these as True, False, 10, a date...).
    ("data.train=yes", ("data", "train"), "yes"),
    ("data.train=no", ("data", "train"), "no"),
    ("data.train=on", ("data", "train"), "on"),
    ("data.train=0o12", ("data", "train"), "0o12"),
    ("data.split=2024", ("data", "split"), "2024"),
    ("data.split=007", ("data", "split"), "007"),
    ("model.name_or_path=1.0", ("model", "name_or_path"), "1.0"),
    ("training.output_dir=2024-01-01", ("training", "output_dir"), "2024-01-01"),
    ("data.columns.lang=no", ("data", "columns", "lang"), "no"),
    ("lora.target_modules=q_proj", ("lora", "target_modules"), "q_proj"),
    ("data.train= spaced.jsonl ", ("data", "train"), "spaced.jsonl"),
    # Quotes make text of anything; null (or ~) is null where the option can be unset.
    ("data.train='null'", ("data", "train"), "null"),
    ('data.split="true"', ("data", "split"), "true"),
    ("model.adapter=null", ("model", "adapter"), None),
    ("model.adapter=~", ("model", "adapter"), None),
    # Numbers and flags: decimal only; flags take true/false (and what pydantic reads as one).
    ("training.epochs=012", ("training", "epochs"), 12),
    ("training.learning_rate=1e-4", ("training", "learning_rate"), 1e-4),
    ("training.seed=-3", ("training", "seed"), -3),
    ("lora.enabled=false", ("lora", "enabled"), False),
    ("lora.enabled=yes", ("lora", "enabled"), True),
    # Flow collections are YAML 1.2 inside too.
    ("lora.target_modules=[q_proj, on, no]", ("lora", "target_modules"), ["q_proj", "on", "no"]),
    ("data.columns={lang: no}", ("data", "columns"), {"lang": "no"}),
    # Open types (a loss's parameters): numbers and true/false, else text.
    ("loss.alpha=3", ("loss", "alpha"), 3.0),
    ("loss.rrm=inverse", ("loss", "rrm"), "inverse"),
])
def test_override_value_is_read_against_the_option_type(override, key, value):
    node = load_config(None, ["loss.name=capo", override]).model_dump()
    for k in key:
        node = node[k]
    assert node == value and type(node) is type(value)


@pytest.mark.parametrize("override", ["training.epochs=0o12", "training.epochs=0x10", "training.epochs=yes",
                                      "model.name_or_path=null", "training.learning_rate=fast"])
def test_override_that_does_not_fit_its_option_is_an_error(override):
    key = override.split("=")[0]
    assert error_of(load_config, override).startswith(f"config: {key}: ")


def test_parse_value_without_a_type_reads_yaml_12_scalars():
    assert parse_value("true") is True and parse_value("False") is False and parse_value("null") is None
    assert parse_value("12") == 12 and parse_value("-1.5e3") == -1500.0 and math.isinf(parse_value(".inf"))
    for text in ("yes", "no", "on", "off", "y", "0o12", "0x1f", "1_000", "2024-01-01", "x y", "a: b", "#c"):
        assert parse_value(text) == text


def test_parse_value_with_a_text_type_keeps_the_text():
    assert parse_value("12", str) == "12" and parse_value("true", str | None) == "true"
    assert parse_value("null", str | None) is None and parse_value("[a, 1]", str | list[str]) == ["a", 1]


def test_overrides_in_nested_train_sections_follow_the_training_schema():
    # `train` of an experiment and of ICR is a training config: its text options stay text too.
    assert annotation_at(ExperimentConfig, ["train", "data", "train"]) == (str | None)
    assert annotation_at(ICRConfig, ["init", "train", "model", "name_or_path"]) is str
    cfg = load_experiment(None, ["train.data.split=2024", "train.training.learning_rate=1e-4"])
    assert cfg.train["data"]["split"] == "2024" and cfg.train["training"]["learning_rate"] == 1e-4
    icr = load_icr_config(None, ["init.pairs=mtpe", "train.data.split=no", "prompts.languages=[en, no]",
                                 "prompts.language_names={no: Norwegian}"])
    assert icr.train["data"]["split"] == "no" and icr.prompts.languages == ["en", "no"]


def test_override_path_syntax():
    assert parse_override(" a.b =1") == (["a", "b"], 1)
    with pytest.raises(UserError, match="expected key=value"):
        parse_override("training.epochs")
    with pytest.raises(UserError, match="empty key part"):
        parse_override("training..epochs=2")


# --------------------------------------------------------------------------- YAML files


def test_yaml_files_are_read_as_yaml_12(tmp_path):
    text = "a: yes\nb: [en, no, on, off]\nc: 0o12\nd: 012\ne: 2024-01-01\nf: 1e-4\ng: True\nh: ~\ni:\nj: !!str 5\n"
    data = yaml.load(text, Loader=YamlLoader)
    assert data == {"a": "yes", "b": ["en", "no", "on", "off"], "c": "0o12", "d": 12, "e": "2024-01-01",
                    "f": 1e-4, "g": True, "h": None, "i": None, "j": "5"}
    assert yaml.load("base: &b {x: 1}\nm:\n  <<: *b\n  y: 2\n", Loader=YamlLoader)["m"] == {"x": 1, "y": 2}


def test_norwegian_stays_a_language_in_a_config_file(tmp_path):
    path = tmp_path / "icr.yaml"
    path.write_text("init: {pairs: mtpe}\nprompts:\n  languages: [en, no]\n  language_names: {no: Norwegian}\n")
    assert load_icr_config(path).prompts.languages == ["en", "no"]


def test_invalid_yaml_names_file_and_line_for_every_kind(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    for load in (load_config, load_icr_config, load_experiment):
        assert error_of(load, path=path).startswith(f"{path}:")
        assert "invalid YAML" in error_of(load, path=path)


# --------------------------------------------------------------------------- did-you-mean against the right schema


@pytest.mark.parametrize("load,override,key,suggestion", [
    (load_experiment, "data.per_splt=1", "data.per_splt", "per_split"),
    (load_experiment, "eval.batch_sise=2", "eval.batch_sise", "batch_size"),
    (load_experiment, "alpha_swep=[1]", "alpha_swep", "alpha_sweep"),
    (load_experiment, "analysis.baseine=x", "analysis.baseine", "baseline"),
    (load_experiment, "methods=[{name: a, los: {name: dpo}}]", "methods.0.los", "loss"),
    # A `train` section is a training config of its own, named as such (for each method of an experiment).
    (load_experiment, "train.training.lerning_rate=1", "train (method dpo): training.lerning_rate", "learning_rate"),
    (load_icr_config, "sampling.temprature=1", "sampling.temprature", "temperature"),
    (load_icr_config, "iteratons=1", "iteratons", "iterations"),
    (load_icr_config, "reward.selct=crosslingual", "reward.selct", "select"),
    (load_icr_config, "train.lora.dropuot=0.1", "train: lora.dropuot", "dropout"),
    (load_icr_config, "init.train.training.max_step=2", "init.train: training.max_step", "max_steps"),
    (load_config, "reference.precomptue=false", "reference.precomptue", "precompute"),
])
def test_unknown_key_suggests_from_its_own_schema(load, override, key, suggestion):
    overrides = ["init.pairs=mtpe", override] if load is load_icr_config else [override]
    msg = error_of(load, *overrides)
    assert f"{key}: unknown key (did you mean '{suggestion}'?)" in msg, msg


def test_experiment_unknown_key_without_close_match_lists_its_own_keys():
    msg = error_of(load_experiment, "eval.zzzz=1")
    assert "eval.zzzz: unknown key (known: split, batch_size)" in msg


# --------------------------------------------------------------------------- help text of every kind


@pytest.mark.parametrize("schema", [TrainConfig, ICRConfig, ExperimentConfig])
def test_options_help_lists_every_option_of_every_kind(schema):
    text = "\n" + options_help(schema)
    for name, field in schema.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        keys = [f"{name}.{k}" for k in sub] if sub and name != "train" else [name]
        for key in keys:
            assert f"\n{key} = " in text, key
    assert "Method(" not in text  # defaults print as plain data


# --------------------------------------------------------------------------- shipped configs


def test_shipped_configs_are_package_data_with_a_first_comment():
    configs = shipped_configs()
    assert SHIPPED <= set(configs)
    for name in SHIPPED:
        assert configs[name].is_relative_to(SHIPPED_DIR) and configs[name].read_text().startswith("# "), name


@pytest.mark.parametrize("name,load", [
    ("capo-cpu-smollm2", load_config), ("capo-paper-gpu", load_config),
    ("capo-mtpe-cpu", load_experiment), ("capo-mtpe-paper-gpu", load_experiment),
    ("icr-cpu-smollm2", load_icr_config), ("icr-paper-gpu", load_icr_config), ("icr-paper-8gpu", load_icr_config),
])
def test_every_shipped_config_loads_by_name(name, load):
    assert load(name, []) == load(shipped_config(name), []) == load(f"{name}.yaml", [])


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("capo-cpu-smollm2").write_text("loss: {name: dpo}\n")
    assert config_file("capo-cpu-smollm2") == Path("capo-cpu-smollm2")
    assert load_config("capo-cpu-smollm2").loss.name == "dpo"
    assert load_config("capo-cpu-smollm2.yaml").loss.name == "capo"


def test_unknown_name_lists_the_shipped_names(tmp_path):
    msg = error_of(load_config, path="capo-paper-cpu")
    assert msg.startswith("capo-paper-cpu: no such config file, nor a shipped config (shipped: ")
    assert all(name in msg for name in SHIPPED)
    with pytest.raises(UserError, match="no such shipped config; shipped: capo-cpu-smollm2"):
        shipped_config("nope")
    # A path that is clearly a path is not looked up by name.
    assert error_of(load_icr_config, path=tmp_path / "x.yaml") == f"{tmp_path / 'x.yaml'}: config file not found"
    assert error_of(load_experiment, path="./x.yaml") == "x.yaml: config file not found"


def test_read_yaml_of_a_shipped_name_names_the_real_file():
    assert read_yaml("capo-paper-gpu")["loss"]["name"] == "capo"
