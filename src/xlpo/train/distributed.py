"""One training over many processes: the Accelerator, DeepSpeed's settings, whole weights, shared folders.

DDP, DeepSpeed ZeRO-2/3 and FSDP2 all run through Accelerate; the few places where they differ
(settings DeepSpeed wants before `prepare`, weights sharded across processes, a frozen reference
model computed like the trained one, what must be one shared directory on many nodes) live here,
so the training loop reads the same for all of them. DeepSpeed is an optional dependency (the dev
extra): it is imported only where a run uses it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import (DistributedType, broadcast_object_list, convert_outputs_to_fp32, fsdp2_prepare_model,
                               get_mixed_precision_context_manager)
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy

from xlpo.errors import UserError
from xlpo.models import is_peft, load_model, mixed_precision, resolve_model_path
from xlpo.train import shards

_SHARDED_LAUNCHERS = {"ACCELERATE_USE_DEEPSPEED": "DeepSpeed", "ACCELERATE_USE_FSDP": "FSDP"}


def make_accelerator(model_dtype: str, **trackers) -> Accelerator:
    """The Accelerator of `xlpo train`: the backend from `accelerate launch`, the precision from model.dtype,
    and the experiment trackers (`log_with`, `project_config`) of training.report_to."""
    wanted = mixed_precision(model_dtype)
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher not in ("no", wanted):
        raise UserError(f"the accelerate config asks for mixed_precision={launcher} but model.dtype={model_dtype} "
                        f"means mixed_precision={wanted}: set model.dtype (xlpo's one precision setting) and "
                        "mixed_precision: 'no' in the accelerate config")
    cpu = not torch.cuda.is_available()
    sharded = [name for var, name in _SHARDED_LAUNCHERS.items() if os.environ.get(var, "").lower() == "true"]
    if cpu and sharded:
        raise UserError(f"{sharded[0]} needs CUDA GPUs and none is visible; on CPUs start plain processes "
                        "(torchrun --nproc_per_node N -m xlpo train ...)")
    keep_precision_only(wanted)
    # Accumulation is done by the training loop itself, so Accelerate must not rescale the loss.
    # Without CUDA, cpu=True lets `torchrun --nproc_per_node N` form a gloo process group.
    return Accelerator(gradient_accumulation_steps=1, cpu=cpu, mixed_precision=wanted, **trackers)


def keep_precision_only(wanted: str) -> None:
    """Forget the process's accelerate state when it computes in another precision than `wanted`. One process
    may train several runs (ICR, notebooks, tests); accelerate keeps the first run's precision for the whole
    process and has no public way to change it. Under DeepSpeed the state's own field always says "no" and the
    precision lives in the plugin's DeepSpeed config, so the state's `mixed_precision` property is asked."""
    if AcceleratorState._shared_state.get("_mixed_precision") is None:
        return  # no Accelerator yet
    if AcceleratorState().mixed_precision != wanted:
        AcceleratorState._reset_state()


def check_precision(acc: Accelerator, model_dtype: str) -> None:
    """An Accelerator made by the caller must compute in the precision model.dtype asks for."""
    if acc.mixed_precision != mixed_precision(model_dtype):
        raise UserError(f"model.dtype={model_dtype} needs an Accelerator with mixed_precision="
                        f"{mixed_precision(model_dtype)}; the one given has {acc.mixed_precision}")


def is_deepspeed(acc: Accelerator) -> bool:
    return acc.distributed_type == DistributedType.DEEPSPEED


def configure_deepspeed(acc: Accelerator, batch_size: int, grad_accum: int, max_grad_norm: float | None) -> None:
    """Give DeepSpeed, before `prepare`, the batch, accumulation and clipping the xlpo config sets.

    The config `accelerate config` writes leaves the micro-batch to a dataloader xlpo does not use, and
    has no clipping; a value set there that contradicts the xlpo config is an error, not a silent choice.
    """
    if not is_deepspeed(acc):
        return
    plugin = acc.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    wanted = {"train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": grad_accum,
              "train_batch_size": batch_size * grad_accum * acc.num_processes,
              "gradient_clipping": max_grad_norm or 0.0}
    xlpo_key = {"train_micro_batch_size_per_gpu": "training.batch_size", "gradient_accumulation_steps": "training.grad_accum",
                "train_batch_size": "training.batch_size x grad_accum x processes", "gradient_clipping": "training.max_grad_norm"}
    # `accelerate config` writes gradient_accumulation_steps: 1 whatever xlpo accumulates: 1 means "not set".
    unset = {"train_micro_batch_size_per_gpu": ("auto",), "gradient_accumulation_steps": ("auto", 1),
             "train_batch_size": ("auto",), "gradient_clipping": ("auto",)}
    # The plugin outlives one run (ICR trains several in one process): compare with what the user gave.
    if not hasattr(plugin, "xlpo_given"):
        plugin.xlpo_given = {key: ds.get(key, "auto") for key in wanted}
    for key, value in wanted.items():
        given = plugin.xlpo_given[key]
        if given not in unset[key] and given != value:
            raise UserError(f"DeepSpeed config: {key}={given} contradicts {xlpo_key[key]} ({value}); "
                            f"set it to auto (xlpo fills it in)")
        ds[key] = value


def configure_fsdp(acc: Accelerator, reduce_dtype: str) -> None:
    """FSDP2's mixed-precision policy for this run, set before any model is sharded (training.reduce_dtype).

    Accelerate's policy for bf16 computes in bf16 (each layer's fp32 shards gathered as bf16), sums
    gradients in bf16 and casts every sharded module's output to bf16. xlpo keeps the first, sums in
    the compute dtype or fp32 as asked, and leaves outputs alone: the chunked output head returns fp32
    log-probs, which a bf16 cast would round to about 3 significant digits.
    """
    if not acc.is_fsdp2 or acc.mixed_precision == "no":
        return
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}[acc.mixed_precision]
    acc.state.fsdp_plugin.mixed_precision_policy = MixedPrecisionPolicy(
        param_dtype=compute, reduce_dtype=torch.float32 if reduce_dtype == "float32" else compute)


def starting_fp32_values(acc: Accelerator, model, name_or_path: str):
    """Before `prepare` under DeepSpeed with bf16/fp16 compute: where the fp32 master weights must start from.

    DeepSpeed rounds the module's weights to the compute dtype (while loading under ZeRO-3, in `prepare`
    otherwise) and copies its fp32 masters from the rounded values. Weights from the checkpoint are read
    again from it after `prepare` (only where the file holds more than the compute dtype keeps); weights
    that are not in it (adapters) are kept now, in fp32 on the CPU. Returns name -> fp32 value or None.
    """
    if not is_deepspeed(acc) or acc.mixed_precision == "no":
        return None
    try:
        checkpoint = shards.Checkpoint(resolve_model_path(name_or_path))
    except UserError:
        checkpoint = None
        if not is_peft(model):  # no safetensors: full fine-tuning's masters start rounded (docs/training.md)
            return None
    compute = {"bf16": "BF16", "fp16": "F16"}[acc.mixed_precision]
    kept = {name: param.detach().float().cpu().clone() for name, param in model.named_parameters()
            if param.requires_grad and not hasattr(param, "ds_id")
            and (checkpoint is None or shards.checkpoint_key(name) not in checkpoint)}

    def value(name: str) -> torch.Tensor | None:
        key = shards.checkpoint_key(name)
        if name in kept:
            return kept[name]
        if checkpoint is None or key not in checkpoint or checkpoint.dtype(key) == compute:
            return None
        return checkpoint.read(key).float()

    return value


def load_fp32_masters(acc: Accelerator, model, values) -> None:
    """After DeepSpeed's `prepare`: start its fp32 master weights from `values` (see starting_fp32_values)."""
    if values is None:
        return
    from deepspeed.utils import safe_set_full_fp32_param

    for name, param in acc.unwrap_model(model).named_parameters():
        if param.requires_grad and (value := values(name)) is not None:
            safe_set_full_fp32_param(param, value.to(acc.device))


def backward_kwargs(acc: Accelerator) -> dict:
    """The loop's loss is already divided by the global batch; DeepSpeed must not divide it by its accumulation."""
    return {"scale_wrt_gas": False} if is_deepspeed(acc) else {}


def precision_summary(acc: Accelerator, trainable: list[torch.nn.Parameter]) -> dict:
    """What train_summary.json says about precision: the compute dtype and that of the trained weights."""
    compute = "fp32" if acc.mixed_precision == "no" else acc.mixed_precision
    # DeepSpeed keeps fp32 master weights behind the module's bf16/fp16 copies.
    weights = torch.float32 if is_deepspeed(acc) or not trainable else trainable[0].dtype
    return {"compute": compute, "trained_weights": str(weights).removeprefix("torch.")}


def shards_weights(acc: Accelerator) -> bool:
    """Whether each process holds only a shard of the weights once they are prepared (ZeRO-3, FSDP2)."""
    return acc.is_fsdp2 or (is_deepspeed(acc) and acc.state.deepspeed_plugin.zero_stage == 3)


def load_weights(acc: Accelerator, name_or_path: str, dtype: str, trust_remote_code: bool = False,
                 attn_implementation: str | None = None):
    """A model to train or to use as a reference, never whole in one process where the backend shards weights.

    ZeRO-3: DeepSpeed's zero.Init partitions the weights as transformers loads them (Accelerate hands
    transformers its DeepSpeed config for every ZeRO-3 run, whatever zero3_init_flag says). FSDP2: a
    skeleton on the meta device, sharded and filled from the checkpoint by `shard_loaded`. Otherwise
    the whole model, on this process's device.
    """
    if acc.is_fsdp2:
        return shards.skeleton(name_or_path, dtype, trust_remote_code, attn_implementation)
    model = load_model(name_or_path, dtype, trust_remote_code, attn_implementation)
    if not is_partitioned(model):
        model.to(acc.device)
    return model


def shard_loaded(acc: Accelerator, model):
    """An FSDP2 skeleton sharded and filled with this process's rows of its weights (collective); any other
    model as it is. Before the optimizer sees the weights: it must see the sharded ones."""
    return shards.shard(acc, model) if shards.is_skeleton(model) else model


def is_partitioned(model) -> bool:
    """Whether this process holds only part of `model`'s weights, or none yet: partitioned by DeepSpeed's
    zero.Init, sharded by FSDP2, or an FSDP2 skeleton still on the meta device."""
    return any(hasattr(p, "ds_id") or p.is_meta or hasattr(p, "device_mesh") for p in model.parameters())


def prepare_frozen(acc: Accelerator, model):
    """A frozen model (a reference) computing as the trained one does after `prepare`. Collective.

    DeepSpeed: an engine without optimizer, in DeepSpeed's precision, sharded under ZeRO-3 (ZeRO-1/2
    shard only what trains, so there it stays whole). FSDP2: sharded as the trained model is, in its
    precision policy. DDP and one process: the autocast `prepare` gives the trained model's forward.
    """
    if is_deepspeed(acc):
        return _deepspeed_inference(acc, model)
    if acc.is_fsdp2:
        return fsdp2_prepare_model(acc, shard_loaded(acc, model))
    if acc.native_amp:
        autocast = get_mixed_precision_context_manager(acc.native_amp, acc.autocast_handler)
        model.forward = convert_outputs_to_fp32(autocast(model.forward))
    return model


def _deepspeed_inference(acc: Accelerator, model):
    import deepspeed

    config = copy.deepcopy(acc.state.deepspeed_plugin.deepspeed_config)  # filled in by the trained model's prepare
    for training_only in ("optimizer", "scheduler"):
        config.pop(training_only, None)
    zero = config.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    if zero.get("stage", 0) != 3:
        zero["stage"] = 0
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


@contextlib.contextmanager
def whole_parameters(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Make DeepSpeed ZeRO-3's partitioned `params` whole on every process for the block (collective)."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned):
        yield


def whole_tensors(model, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, whole tensor) for some of `model`'s tensors, one at a time: gathered where ZeRO-3 partitioned
    them (collective), read from the checkpoint where an FSDP2 skeleton has no values yet."""
    state = model.state_dict(keep_vars=True)
    for name in names:
        with whole_parameters([state[name]]):
            yield name, shards.whole_tensor(model, name, state[name])


def gather_state_dict(acc: Accelerator, model, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The model's whole state dict (only its trained tensors if asked), on CPU in the main process and
    empty elsewhere. Every process must call it: under ZeRO-3 and FSDP2 each holds a shard of the weights."""
    if acc.is_fsdp2:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
        return get_model_state_dict(model, options=options)
    module = acc.unwrap_model(model)
    if not is_deepspeed(acc):
        if not acc.is_main_process:
            return {}
        keep = {n for n, p in module.named_parameters() if p.requires_grad} if trainable_only else None
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if keep is None or k in keep}
    return _deepspeed_state_dict(acc, module, trainable_only)


def _deepspeed_state_dict(acc: Accelerator, module, trainable_only: bool) -> dict[str, torch.Tensor]:
    # Trained tensors come from DeepSpeed's fp32 master copy (the module may hold bf16 copies of them).
    from deepspeed.utils import safe_get_full_fp32_param

    state = {}
    for name, param in module.named_parameters():
        if trainable_only and not param.requires_grad:
            continue
        master = safe_get_full_fp32_param(param) if param.requires_grad else None
        if master is None:
            with whole_parameters([param]):
                master = param.detach()
        if acc.is_main_process:
            state[name] = master.cpu().clone()
    if not trainable_only and acc.is_main_process:  # buffers are never partitioned
        buffers = {name for name, _ in module.named_buffers()}
        state.update({k: v.detach().cpu().clone() for k, v in module.state_dict().items() if k in buffers})
    return state


def check_shared_directory(acc: Accelerator, path: Path, setting: str) -> None:
    """Stop with a clear error unless every process sees the same `path` (a shared filesystem on many nodes).

    The main process writes a file with a fresh name into `path`; each process looks for it. Collective.
    """
    if acc.num_processes == 1:
        return
    name = [f".xlpo-shared-{secrets.token_hex(8)}" if acc.is_main_process else None]
    broadcast_object_list(name)
    marker = Path(path) / name[0]
    if acc.is_main_process:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    acc.wait_for_everyone()
    missing = acc.reduce(torch.tensor(0 if marker.exists() else 1, device=acc.device), reduction="sum")
    acc.wait_for_everyone()
    if acc.is_main_process:
        marker.unlink()
    if int(missing):
        raise UserError(f"{setting} ({path}) must be one directory shared by all {acc.num_processes} processes "
                        f"(a shared filesystem across nodes); {int(missing)} of them do not see what the first writes there")


def all_processes(acc: Accelerator, flag: bool) -> bool:
    """True only if `flag` is true in every process (collective): for choices every process must make alike."""
    if acc.num_processes == 1:
        return flag
    return int(acc.reduce(torch.tensor(int(flag), device=acc.device), reduction="sum")) == acc.num_processes
