"""The ICR run configuration (`xlpo icr run`): its schema and the checks across its sections.

The `train` section is an ordinary training config (`xlpo train`) without `model` and `data.train`,
which each iteration fills in; given in part, it completes the defaults by the one merge rule of
`xlpo.train.config.merge_train_sections`. Reading, overrides and one-line errors are xlpo.config's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

import yaml

from xlpo.config import Section, config_file, load_raw, validate as validate_schema
from xlpo.errors import UserError
from xlpo.icr.prompts import language_name
from xlpo.icr.reward import REWARD_KINDS
from xlpo.model_spec import ModelSpec
from xlpo.train.config import TrainConfig, derive_train_config, partial_train_section

RewardKind = Literal["crosslingual", "multilingual", "translate"]


def _default_train() -> dict[str, Any]:
    # The paper's recipe (DPO+NLL, beta 0.1, lr 5e-7, batch 16, one epoch, cosine, 3% warm-up), with LoRA.
    return {"loss": {"name": "dpo_nll", "beta": 0.1},
            "training": {"epochs": 1, "batch_size": 16, "learning_rate": 5e-7, "lr_scheduler": "cosine",
                         "warmup_ratio": 0.03}}


def _default_init_train() -> dict[str, Any]:
    return {"loss": {"name": "dpo", "beta": 0.1}}


IterationTrain = partial_train_section(_default_train)
InitTrain = partial_train_section(_default_init_train)


class PolicySection(Section):
    name_or_path: str = Field("embedded", description="The initial policy's weights (Hub id, local dir or 'embedded'); with policy.adapter, the base the adapter sits on.")
    adapter: str | None = Field(None, description="LoRA adapter of the English-aligned initial policy; the reference is then this base with the adapter disabled.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weight dtype for sampling, scoring and training.")
    trust_remote_code: bool = Field(False, description="Allow model code from the Hub repository.")
    attn_implementation: str | None = Field(None, description="Attention kernel (sdpa, flash_attention_2, eager).")


class ReferenceSection(Section):
    name_or_path: str | None = Field(None, description="The initial model pi_I as a separate checkpoint (e.g. the SFT model of an SFT-DPO policy); default: policy.name_or_path (with policy.adapter disabled).")
    training: Literal["previous", "initial"] = Field("previous", description="Training reference of iteration t: the policy the iteration starts from, pi^{t-1} (Algorithm 1: pi_ref <- pi^{t-1}), or the fixed initial model pi_I.")
    reward: Literal["initial", "previous"] = Field("initial", description="Reward reference of Eq. 9 in iteration t: the fixed initial model pi_I (the paper's choice, Tables 6 and 11), or the model before the scored one, pi^{t-2} (pi_I when t = 1).")


class InitSection(Section):
    pairs: str | None = Field(None, description="Make the English-aligned initial policy first (iteration 0): a preference JSONL to train a LoRA adapter on from policy.name_or_path, or 'mtpe' to build CAPO's MTPE pairs from the staged data.")
    mtpe_per_split: int = Field(10, gt=0, description="With init.pairs=mtpe: pairs per translation direction.")
    train: InitTrain = Field(default_factory=_default_init_train, description="Overrides of the train section for iteration 0 (e.g. loss, training.max_steps).")


class PromptsSection(Section):
    dir: str = Field("../shared/data/icr/ultrafeedback_binarized/subset/random_1000", description="Folder of parallel <lang>.jsonl prompt files (instruction, instruction_id), aligned with en.jsonl.")
    languages: list[str] = Field(default_factory=lambda: ["en", "es", "ru", "de", "fr"], description="Languages to sample and train on (English may be left out; en.jsonl is always read).")
    limit: int | None = Field(None, gt=0, description="Use only the first N prompts of every language.")
    language_names: dict[str, str] = Field(default_factory=dict, description="Full English names of languages missing from the built-in table, e.g. {yo: Yoruba}.")


class SamplingSection(Section):
    n: int = Field(10, ge=2, description="Responses sampled per prompt and language.")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    top_k: int = Field(0, ge=0, description="Sample only from the k most likely tokens; 0 = no cutoff, as the paper samples (Hugging Face generation would otherwise apply its default of 50).")
    max_new_tokens: int = Field(512, gt=0, description="Most tokens per response (the authors used 2400).")
    seed: int = Field(42, description="Sampling seed; each chunk of prompts derives its own from it.")
    batch_size: int = Field(8, gt=0, description="Prompts per generate() call (HF backend); each yields n sequences.")
    backend: Literal["auto", "hf", "vllm"] = Field("auto", description="auto = vLLM on CUDA when installed, else batched Hugging Face generation.")
    chunk_size: int = Field(64, gt=0, description="Prompts per saved part: a killed run redoes at most one part per language.")
    max_model_len: int | None = Field(None, gt=0, description="vLLM: longest prompt + response the engine plans for (default: the model's whole context; Llama-3.1's 128k does not fit a 24 GB card, so set e.g. 4096).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM: share of the GPU's memory the engine may take for weights and KV cache.")
    processes: int = Field(1, gt=0, description="Worker processes that sample, translate and score, each over its share of the chunks (one engine per worker, on GPUs of its own: tensor_parallel_size each); 1 = in the driver. The result does not depend on it (each chunk has its own seed).")
    tensor_parallel_size: int = Field(1, gt=0, description="vLLM: GPUs per engine (tensor parallelism); each worker process sees this many GPUs.")


class RewardSection(Section):
    select: RewardKind = Field("crosslingual", description="Reward that builds the training pairs: crosslingual (R_c), multilingual (R_m) or translate (R_t).")
    also: list[RewardKind] = Field(default_factory=list, description="Further rewards to compute for comparison (their pairs and statistics are kept, not trained on).")
    beta: float = Field(0.1, gt=0, description="Scale of the implicit reward beta*(log pi - log pi_ref); does not change the pairs.")
    length_penalty: bool = Field(True, description="Fit alpha per language (false: alpha = 0).")
    alpha_start: float = Field(0.0, ge=0, description="First alpha of the grid.")
    alpha_stop: float = Field(1.0, gt=0, description="End of the alpha grid (excluded).")
    alpha_step: float = Field(0.001, gt=0, description="Grid step (0, 0.001, ..., 0.999 as in the authors' code).")
    batch_size: int = Field(16, gt=0, description="Responses per scoring forward pass (the prompt is forwarded once per group).")
    translate_max_new_tokens: int | None = Field(None, gt=0, description="Most tokens of a translation for R_t (default sampling.max_new_tokens).")
    logit_chunk_size: int | None = Field(None, gt=0, description="Response tokens per output-layer chunk.")

    def kinds(self) -> list[str]:
        return [self.select] + [k for k in REWARD_KINDS if k in self.also and k != self.select]


class StatsSection(Section):
    language_id: bool = Field(True, description="Identify each response's language (py3langid) to report the wrong-language share.")
    judge_pairs: int = Field(100, gt=0, description="Pairs per language written for a judge (the paper judged 100).")
    judge_labels: str | None = Field(None, description="JSONL of judge verdicts {id, preferred: chosen|rejected|tie}; '{iteration}' is replaced by t. Default: <run_dir>/iter-<t>/judge/labels.jsonl when present.")
    seed: int = Field(0, description="Seed for choosing the judged pairs and their answer order.")


class TrainLaunchSection(Section):
    config: str | None = Field(None, description="Train each iteration in processes of its own: `accelerate launch --config_file CONFIG -m xlpo train`, CONFIG a shipped launcher (accelerate/ddp, accelerate/deepspeed-zero2, accelerate/deepspeed-zero3, accelerate/fsdp2) or an accelerate config file; default: in the driver's process.")
    num_processes: int = Field(1, gt=0, description="Processes (GPUs) of the launched training. train.training.batch_size is per process: the global batch is batch_size x grad_accum x num_processes.")
    main_process_port: int | None = Field(None, gt=0, lt=65536, description="Port of the launched processes' rendezvous on 127.0.0.1 (default: a free one).")


class ICRConfig(Section):
    run_dir: str = Field("runs/icr", description="Run directory: every artifact goes under run_dir/iter-<t>/; finished stages found there are reused.")
    iterations: int = Field(2, gt=0, description="Iterations T.")
    policy: PolicySection = Field(default_factory=PolicySection)
    reference: ReferenceSection = Field(default_factory=ReferenceSection)
    init: InitSection = Field(default_factory=InitSection)
    prompts: PromptsSection = Field(default_factory=PromptsSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    reward: RewardSection = Field(default_factory=RewardSection)
    train: IterationTrain = Field(default_factory=_default_train, description="Training config of every iteration (loss, lora, data formatting, training); model and data.train are set per iteration.")
    stats: StatsSection = Field(default_factory=StatsSection)
    train_launch: TrainLaunchSection = Field(default_factory=TrainLaunchSection, description="How each iteration's training runs: in this process (default) or under `accelerate launch`.")

    @model_validator(mode="after")
    def _checks(self):
        if self.init.pairs and self.policy.adapter:
            raise ValueError("init.pairs and policy.adapter are both set: the initial policy is either given or trained")
        if self.train_launch.num_processes > 1 and self.train_launch.config is None:
            raise ValueError("train_launch.num_processes > 1 needs train_launch.config (the accelerate launcher)")
        if self.reward.alpha_start >= self.reward.alpha_stop:
            raise ValueError("reward.alpha_start must be below reward.alpha_stop")
        return self

    # -- derived ------------------------------------------------------------------------------
    def reference_path(self) -> str:
        return self.reference.name_or_path or self.policy.name_or_path

    def chat_format(self) -> str:
        return self.train.get("data", {}).get("chat_format", "tokenizer")


_FIXED_TRAIN_KEYS = {("model",): "set the model under policy", ("data", "train"): "each iteration trains on its own pairs",
                     ("training", "output_dir"): "each iteration writes under run_dir/iter-<t>/train",
                     ("reference", "name_or_path"): "choose the training reference with reference.training",
                     ("reference", "adapter"): "choose the training reference with reference.training"}


def iteration_train_config(config: ICRConfig, *, policy: ModelSpec, data: str | Path, output_dir: str | Path,
                           reference: ModelSpec | None = None, iteration_zero: bool = False) -> TrainConfig:
    """The TrainConfig of one iteration: the `train` section (iteration 0: with `init.train` over it) plus
    this iteration's policy, data, output and training reference (None: the trainer's default, the
    starting base weights)."""
    p = config.policy
    run = {"model": {"name_or_path": policy.base, "adapter": policy.adapter, "dtype": p.dtype,
                     "trust_remote_code": p.trust_remote_code, "attn_implementation": p.attn_implementation},
           "data": {"train": str(data)}, "training": {"output_dir": str(output_dir)}}
    sections = [config.train, config.init.train, run] if iteration_zero else [config.train, run]
    return derive_train_config(*sections, prefix="init.train: " if iteration_zero else "train: ", reference=reference)


def launcher_file(setting: str) -> Path:
    """The accelerate config train_launch.config names (a file, or a shipped launcher such as accelerate/ddp),
    checked to be one: a mapping with a distributed_type."""
    try:
        path = config_file(setting)
    except UserError as exc:
        raise UserError(f"config: train_launch.config: {exc}") from None
    try:
        launcher = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise UserError(f"config: train_launch.config: {path} is not valid YAML") from None
    if not isinstance(launcher, dict) or "distributed_type" not in launcher:
        raise UserError(f"config: train_launch.config: {path} is not an accelerate config (no distributed_type); "
                        "name a shipped one (accelerate/ddp, accelerate/deepspeed-zero3, ...) or `accelerate config`'s file")
    return path


def validate(config: ICRConfig) -> ICRConfig:
    """Checks that need more than one field: fail now, not after an hour of sampling."""
    for keys, why in _FIXED_TRAIN_KEYS.items():
        node: Any = config.train
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node is not None:
            raise UserError(f"config: train.{'.'.join(keys)}: not settable here ({why})")
    for lang in config.prompts.languages:
        language_name(lang, config.prompts.language_names)
    if config.chat_format() == "none":
        raise UserError("config: train.data.chat_format: ICR samples chat responses; use 'tokenizer' or 'zephyr'")
    if config.train_launch.config is not None:
        launcher_file(config.train_launch.config)
    start = ModelSpec(config.policy.name_or_path)
    iteration_train_config(config, policy=start, data="pairs.jsonl", output_dir="train")
    if config.init.pairs:
        iteration_train_config(config, policy=start, data="pairs.jsonl", output_dir="train", iteration_zero=True)
    if not config.init.pairs and not config.policy.adapter and config.reference_path() == config.policy.name_or_path:
        raise UserError(
            "config: policy: the initial policy equals the reference (no policy.adapter, no reference.name_or_path), "
            "so the implicit reward log pi - log pi_ref is 0 for every response; give the English-aligned policy "
            "as policy.adapter, its starting point as reference.name_or_path, or train one with init.pairs")
    return config


def load_icr_config(path: str | Path | None, overrides: list[str] = ()) -> ICRConfig:
    """Read YAML (a path or a shipped config's name; none: defaults), apply overrides, validate."""
    raw = load_raw(ICRConfig, path, overrides, "sections (run_dir, policy, reference, prompts, sampling, reward, train, ...)")
    return validate(validate_schema(ICRConfig, raw))
