"""The configuration layer of every config kind (training, ICR, experiment): YAML, overrides, errors, help.

A schema is a pydantic model of `Section`s; this module reads YAML (or a shipped config by name),
applies `key=value` overrides typed by the schema, and turns every mistake into one line.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Callable, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from xlpo.errors import UserError

Schema = TypeVar("Schema", bound=BaseModel)

# Package data: the configs sit beside the modules in every install (wheels are unpacked).
SHIPPED_DIR = Path(__file__).parent / "configs"


class Section(BaseModel):
    """A part of a config: an unknown key is an error, and so is a bad value set later."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class Nested:
    """Marks a `dict` field that holds another schema's raw config: `Annotated[dict, Nested(TrainConfig)]`.
    Overrides below it are typed by that schema."""

    schema: type[BaseModel]


# --------------------------------------------------------------------------- YAML 1.2 scalars


def _float(text: str) -> float:
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    return math.nan if lowered == ".nan" else float(text)


# YAML 1.2's core schema with decimal numbers only, in resolution order: (tag, pattern, first
# characters, value). YAML 1.1 (PyYAML's default) also reads yes/no/on/off as booleans, 0o12 and
# 012 as octal and 2024-01-01 as a date; here those stay text (the language code `no` included).
_SCALARS: list[tuple[str, re.Pattern, str, Callable[[str], Any]]] = [
    ("bool", re.compile(r"true|True|TRUE|false|False|FALSE"), "tTfF", lambda s: s.lower() == "true"),
    ("null", re.compile(r"~|null|Null|NULL|"), "~nN", lambda s: None),
    ("int", re.compile(r"[-+]?[0-9]+"), "-+0123456789", int),
    ("float", re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"), "-+.0123456789", _float),
]


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars (see `_SCALARS`) and merge keys (`<<`)."""

    yaml_implicit_resolvers: dict = {}  # this class's own table, not SafeLoader's YAML 1.1 one

    @classmethod
    def use_core_schema(cls) -> None:
        for tag, pattern, first, value in _SCALARS:
            starts = list(first) + ([""] if tag == "null" else [])  # the empty scalar is null
            cls.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", re.compile(rf"^(?:{pattern.pattern})$"), starts)
            cls.add_constructor(f"tag:yaml.org,2002:{tag}",
                                lambda loader, node, value=value: value(loader.construct_scalar(node)))
        cls.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


YamlLoader.use_core_schema()


def scalar(text: str) -> Any:
    """A plain value as YAML 1.2 reads it: true/false, null, a decimal number, else the text itself."""
    for _, pattern, _, value in _SCALARS:
        if pattern.fullmatch(text):
            return value(text)
    return text


# --------------------------------------------------------------------------- files and shipped configs


def shipped_configs() -> dict[str, Path]:
    """Every shipped config by name: its path under xlpo/configs without `.yaml` (e.g. accelerate/zero2)."""
    if not SHIPPED_DIR.is_dir():
        return {}
    # xlpo's own configs first, then those in folders (accelerate/: launcher settings, not xlpo configs).
    paths = sorted(SHIPPED_DIR.rglob("*.yaml"), key=lambda p: (len(p.relative_to(SHIPPED_DIR).parts), p))
    return {p.relative_to(SHIPPED_DIR).with_suffix("").as_posix(): p for p in paths}


def shipped_config(name: str) -> Path:
    """The shipped config `name` (`.yaml` optional); an unknown name is a UserError listing the known ones."""
    configs = shipped_configs()
    path = configs.get(name.removesuffix(".yaml"))
    if path is None:
        raise UserError(f"{name}: no such shipped config; shipped: {', '.join(configs) or 'none'}")
    return path


def config_file(name_or_path: str | Path) -> Path:
    """A config file by path, or else by shipped name: an existing file wins over a shipped name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    if path.is_absolute() or text.startswith((".", "~")):  # clearly a path, not a name
        raise UserError(f"{path}: config file not found")
    configs = shipped_configs()
    if text.removesuffix(".yaml") in configs:
        return configs[text.removesuffix(".yaml")]
    raise UserError(f"{text}: no such config file, nor a shipped config (shipped: {', '.join(configs)})")


def first_comment(path: Path) -> str:
    """The first comment line of a YAML file (what `xlpo configs` shows), or ''."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def read_yaml(name_or_path: str | Path, what: str = "sections") -> dict:
    """A config file's mapping; invalid YAML names file:line. Empty sections (`data:` alone) become {}."""
    path = config_file(name_or_path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=YamlLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of {what}")
    return {k: ({} if v is None else v) for k, v in raw.items()}


# --------------------------------------------------------------------------- walking a schema


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        models = [m for m in map(_model_in, get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    return None


def annotation_at(schema: type[BaseModel], path: list[str] | tuple) -> Any:
    """The type of the value at a dotted path (list positions as ints), or None where the schema is open."""
    annotation: Any = schema
    for key in path:
        model = _model_in(annotation)
        if model is not None:
            field = model.model_fields.get(str(key))
            if field is None:
                return None
            nested = [m.schema for m in field.metadata if isinstance(m, Nested)]
            annotation = nested[0] if nested else field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is list and isinstance(key, int):
            annotation = get_args(annotation)[0]
        else:
            return None
    return annotation


def _kinds(annotation: Any) -> set:
    if get_origin(annotation) in (Union, UnionType):
        return set().union(*(_kinds(a) for a in get_args(annotation)))
    if get_origin(annotation) is Literal:
        return {type(v) for v in get_args(annotation)}
    return {annotation}


# --------------------------------------------------------------------------- overrides


def parse_value(raw: str, annotation: Any = None) -> Any:
    """An override's value, read against the type it sets (docs/training.md, "Configs and overrides").

    `[...]` / `{...}` are YAML flow collections; 'quoted' or "quoted" is text; `null` (or `~`) is
    null; an option that takes text gets the text as written; anywhere else true/false and decimal
    numbers are read as such and everything else stays text.
    """
    text = raw.strip()
    if text[:1] in ("[", "{") or (len(text) > 1 and text[0] == text[-1] and text[0] in "'\""):
        try:
            return yaml.load(text, Loader=YamlLoader)
        except yaml.YAMLError:
            return raw  # not YAML after all: the text, for the schema to judge
    if not text:
        return ""
    if scalar(text) is None or str not in _kinds(annotation):
        return scalar(text)
    return text


def parse_override(item: str, schema: type[BaseModel] | None = None) -> tuple[list[str], Any]:
    """`a.b=value` as (['a', 'b'], value); the value typed by `schema` where it says what `a.b` takes."""
    if "=" not in item:
        raise UserError(f"override '{item}': expected key=value, e.g. loss.alpha=2.0")
    key, _, raw = item.partition("=")
    path = key.strip().split(".")
    if not all(path):
        raise UserError(f"override '{item}': empty key part")
    return path, parse_value(raw, annotation_at(schema, path) if schema is not None else None)


def apply_overrides(raw: dict, overrides: list[str], schema: type[BaseModel] | None = None) -> dict:
    """Set `a.b.c=value` items in a nested dict; later items win."""
    for item in overrides:
        keys, value = parse_override(item, schema)
        node = raw
        for k in keys[:-1]:
            if node.get(k) is None:  # absent, or an empty section in the YAML (`data:` alone is null)
                node[k] = {}
            node = node[k]
            if not isinstance(node, dict):
                raise UserError(f"override '{item}': '{k}' is not a section")
        node[keys[-1]] = value
    return raw


# --------------------------------------------------------------------------- validation and errors


def suggest_key(key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(names)})"


def describe(exc: ValidationError, schema: type[BaseModel], *, unknown: str = "unknown key",
             at: tuple = ()) -> str:
    """One line for all of a validation's errors, each naming its dotted key (under `at`)."""
    parts = []
    for err in exc.errors():
        loc = (*at, *err["loc"])
        dotted = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            model = _model_in(annotation_at(schema, err["loc"][:-1]))
            msg = unknown + suggest_key(str(loc[-1]), list(model.model_fields) if model else [])
        # A check across fields names its own dotted keys ("data.max_prompt_length ..."): no second prefix.
        parts.append(f"{dotted}: {msg}" if dotted and not msg.startswith(dotted + ".") else msg)
    return "; ".join(parts)


def validate(schema: type[Schema], raw: dict, prefix: str = "") -> Schema:
    """`raw` as a `schema`; errors are one UserError `config: <prefix><key>: <problem>; ...`."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"config: {prefix}{describe(exc, schema)}") from None


def load_raw(schema: type[BaseModel], path: str | Path | None, overrides: list[str] | tuple = (),
             what: str = "sections") -> dict:
    """The config file (a path or a shipped name; none: {}) with `overrides` applied, not yet validated."""
    raw = read_yaml(path, what) if path is not None else {}
    return apply_overrides(raw, list(overrides), schema)


# --------------------------------------------------------------------------- help


def options_help(schema: type[BaseModel], prefix: str = "") -> str:
    """Every option as `key = default: description`, one per line, sections flattened to dotted keys."""
    lines = []
    for name, field in schema.model_fields.items():
        section = _model_in(field.annotation)
        if section is not None and not any(isinstance(m, Nested) for m in field.metadata):
            lines.append(options_help(section, f"{prefix}{name}."))
        else:
            default = field.get_default(call_default_factory=True)
            lines.append(f"{prefix}{name} = {_plain(default)!r}: {field.description}")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return [_plain(v) for v in value] if isinstance(value, list) else value


def help_epilog(options: str) -> str:
    """The `--help` epilog of a config-taking command: `options` one per line, as written."""
    # typer/click re-wraps epilog paragraphs; \b keeps each option on its own line.
    return "Options (set in CONFIG.yaml or as key=value overrides):\n\n\b\n" + options
