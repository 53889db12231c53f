"""One process of tests/test_distributed_sharding.py: what each process holds and computes under ZeRO-3 and FSDP2.

`accelerate launch --config_file CONFIG ... sharding_worker.py SPEC` (2 processes), or `python sharding_worker.py
SPEC` for the one-process figures. SPEC (JSON) names the tasks, the models and the output folder; each task
writes `TASK-RANK.json` there:
- memory: the setup of a full fine-tuning DPO run with a live reference (Trainer.setup: the policy, its frozen
  copy, prepare), sampling the bytes of parameter storage this process holds (every Parameter ever made, its
  DeepSpeed partition or FSDP2 shard included; meta tensors hold none) every 2 ms and whenever a parameter is
  made; peaks for the policy, the reference (the parameters made while the reference is built or prepared)
  and both together.
- head: the scored tokens' log-probs of a prepared model (chunked head through the engine) and the gradients
  an SGD step applies, against full logits in one process without any engine; and the widest logits-like
  tensor (last dimension = vocabulary) any operation allocates while computing them.
- masters: DeepSpeed bf16 full fine-tuning from an fp32 checkpoint: the fp32 master weights after prepare
  against the checkpoint's values.
- lora_bf16 (one process, its own 1-process gloo group): LoRA on a bf16 base under FSDP2 with the policy
  Accelerate builds for bf16, the reference pass (adapters off) as the first forward, then a training
  backward: the dtype of each adapter gradient, or the error FSDP2 raised.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from distributed_worker import make_cpu_accelerator

from xlpo.fileio import write_json
from xlpo.logprobs import ScoredRows, naive_sequence_logprobs, sequence_logprobs
from xlpo.models import load_model, mixed_precision
from xlpo.train import distributed as dist
from xlpo.train import reference as reference_module
from xlpo.train.config import load_config
from xlpo.train.trainer import Trainer


class ParameterBytes:
    """Bytes of parameter storage alive in this process, by label, at their peak (a thread samples them).

    Every Parameter made is kept in a registry (not by weak reference: FSDP2's `to_empty` refuses to swap a
    tensor that has one) until a sample finds that nothing else holds it any more.
    """

    OWN_REFERENCES = 3  # the registry's tuple, the loop variable and getrefcount's argument

    def __init__(self):
        self.params: dict[int, tuple[torch.nn.Parameter, str]] = {}
        self.label = "policy"
        self.peak: Counter = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def __enter__(self):
        self._new = torch.nn.Parameter.__new__

        def new(cls, data=None, requires_grad=True):
            param = self._new(cls, data, requires_grad)
            with self._lock:
                self.params[id(param)] = (param, self.label)
            self.sample()
            return param

        torch.nn.Parameter.__new__ = staticmethod(new)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        torch.nn.Parameter.__new__ = self._new
        self.sample()
        self.params.clear()

    def _run(self):
        while not self._stop.wait(0.002):
            self.sample()

    def sample(self) -> None:
        storages, dead = {}, []
        with self._lock:
            entries = list(self.params.items())
        for key, (param, label) in entries:
            if sys.getrefcount(param) <= self.OWN_REFERENCES:
                dead.append(key)
                continue
            local = param._local_tensor if hasattr(param, "device_mesh") else param
            for tensor in (local, getattr(param, "ds_tensor", None)):
                if tensor is None or tensor.is_meta:
                    continue
                storage = tensor.untyped_storage()
                storages[(str(storage.device), storage.data_ptr())] = (label, storage.nbytes())
        del entries
        with self._lock:
            for key in dead:
                self.params.pop(key, None)
        totals = Counter()
        for label, size in storages.values():
            totals[label] += size
        totals["all"] = sum(size for _, size in storages.values())
        with self._lock:
            for label, size in totals.items():
                self.peak[label] = max(self.peak[label], size)


def _labelled(tracker: ParameterBytes, label: str, function):
    def call(*args, **kwargs):
        previous, tracker.label = tracker.label, label
        try:
            return function(*args, **kwargs)
        finally:
            tracker.label = previous
    return call


def _overrides(spec: dict, name: str, *extra: str) -> list[str]:
    out = Path(spec["out"])
    return [f"model.name_or_path={spec['model']}", f"data.train={spec['data']}", "training.progress=false",
            f"training.output_dir={out / name}", f"reference.cache_dir={out / 'ref'}", "training.report_to=none",
            "training.batch_size=2", *extra]


def memory(spec: dict) -> dict:
    """Peak parameter bytes of this process while a full fine-tuning run with a live reference is set up."""
    config = load_config(None, _overrides(spec, "memory", "loss.name=dpo", "lora.enabled=false",
                                          "reference.precompute=false"))
    accelerator = make_cpu_accelerator(mixed_precision(config.model.dtype))
    tracker = ParameterBytes()
    build, prepare = reference_module.build_reference, reference_module.Reference.prepare
    import xlpo.train.trainer as trainer_module

    trainer_module.build_reference = _labelled(tracker, "reference", build)
    reference_module.Reference.prepare = _labelled(tracker, "reference", prepare)
    try:
        with tracker:
            Trainer(config, accelerator).setup()
    finally:
        trainer_module.build_reference, reference_module.Reference.prepare = build, prepare
    plugin = accelerator.state.deepspeed_plugin if dist.is_deepspeed(accelerator) else None
    return {**tracker.peak, "zero3_init_flag": plugin.zero3_init_flag if plugin else None}


class _Widest(TorchDispatchMode):
    """The most elements of any tensor an operation allocates whose last dimension is the vocabulary."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.most = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            for tensor in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(tensor, torch.Tensor) and tensor.dim() and tensor.shape[-1] == self.vocab:
                    self.most = max(self.most, tensor.numel())
        return out


def _rows(vocab: int) -> ScoredRows:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (4, 24), generator=generator)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    scored[:, 10:] = True
    return ScoredRows.from_completion_mask(ids, None, scored)


def head(spec: dict) -> dict:
    """Chunked head through ZeRO-3/FSDP2 against full logits: values, gradients (an SGD step of lr 1 applies
    minus the gradient averaged over processes, all of which score the same rows) and the widest logits."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    assert not is_deepspeed_zero3_enabled(), "the head task runs first: its reference model must load whole"
    model = load_model(spec["model"], "float32")
    vocab, chunk = model.config.vocab_size, spec["chunk"]
    rows = _rows(vocab)
    want = naive_sequence_logprobs(model, rows).sum  # one process, no engine, full logits
    want.sum().backward()
    want_grads = {name: p.grad for name, p in model.named_parameters()}
    accelerator = make_cpu_accelerator("no")
    model = dist.shard_loaded(accelerator, dist.load_weights(accelerator, spec["model"], "float32"))
    dist.configure_deepspeed(accelerator, rows.num_sequences, 1, None)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=1.0))
    before = dist.gather_state_dict(accelerator, model, trainable_only=False)
    widest = _Widest(vocab)
    with widest:
        got = sequence_logprobs(model, rows, chunk_size=chunk).sum
    accelerator.backward(got.sum(), **dist.backward_kwargs(accelerator))
    optimizer.step()
    after = dist.gather_state_dict(accelerator, model, trainable_only=False)
    result = {"widest": widest.most, "chunk_elements": chunk * vocab, "full_elements": rows.input_ids.numel() * vocab,
              "sharded": dist.is_partitioned(accelerator.unwrap_model(model))}
    if accelerator.is_main_process:
        result["value_error"] = (got.detach() - want.detach()).abs().max().item()
        result["grad_error"] = max((before[n] - after[n] - g).abs().max().item() for n, g in want_grads.items())
        result["grad_scale"] = max(g.abs().max().item() for g in want_grads.values())
    return result


def masters(spec: dict) -> dict:
    """DeepSpeed bf16 full fine-tuning: how many fp32 master weights start from the checkpoint's fp32 values."""
    from deepspeed.utils import safe_get_full_fp32_param

    config = load_config(None, _overrides(spec, "masters", "loss.name=simpo", "lora.enabled=false",
                                          "model.dtype=bfloat16"))
    trainer = Trainer(config, make_cpu_accelerator("bf16"))
    trainer.setup()
    original = load_file(str(Path(spec["model"]) / "model.safetensors"))
    exact = rounded = total = 0
    for name, param in trainer.acc.unwrap_model(trainer.model).named_parameters():
        master, start = safe_get_full_fp32_param(param).cpu(), original[name]
        exact += int((master == start).sum())
        rounded += int((master == start.bfloat16().float()).sum())
        total += start.numel()
    return {"exact": exact / total, "bf16_rounded": rounded / total}


def lora_bf16(spec: dict) -> dict:
    """Issue 27, item 1, in one process: FSDP2 fixes which parameters it reduces gradients for at its first
    forward; when that is the reference pass, the adapters must not look frozen there."""
    import torch.distributed as torch_dist
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import fully_shard

    from xlpo.models import apply_lora, reference_mode

    if not torch_dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(spec["port"]))
        torch_dist.init_process_group("gloo", rank=0, world_size=1)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    plugin.set_mixed_precision("bf16")  # Accelerate's policy: bf16 parameters, gradient sums and outputs
    torch.manual_seed(0)
    model = apply_lora(load_model(spec["model"], "bfloat16"), r=4, alpha=8, dropout=0.0)
    for layer in model.base_model.model.model.layers:
        fully_shard(layer, mp_policy=plugin.mixed_precision_policy)
    fully_shard(model, mp_policy=plugin.mixed_precision_policy)
    rows = _rows(model.config.vocab_size)
    with torch.no_grad(), reference_mode(model):
        sequence_logprobs(model, rows)
    try:
        sequence_logprobs(model, rows).sum.sum().backward()
    except RuntimeError as exc:
        return {"error": str(exc).splitlines()[0]}
    return {"grad_dtypes": sorted({str(p.grad.dtype) for p in model.parameters() if p.requires_grad}),
            "missing": sum(p.grad is None for p in model.parameters() if p.requires_grad)}


TASKS = {"memory": memory, "head": head, "masters": masters, "lora_bf16": lora_bf16}


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("RANK", 0))
    for task in spec["tasks"]:
        started = time.perf_counter()
        result = TASKS[task](spec)
        result["seconds"] = round(time.perf_counter() - started, 1)
        write_json(Path(spec["out"]) / f"{task}-{rank}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
