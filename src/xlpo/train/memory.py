"""How much memory one GPU needs for an xlpo training run, by backend: a model of xlpo's own.

Pure arithmetic over the model's shape and the run's settings, following what xlpo does: bf16
compute over fp32 trained weights and optimizer state, LoRA's frozen base in bf16, the reference
as each backend holds it, gradient checkpointing's stored layer inputs, and the chunked output
head. `benchmarks/memory_table.py` prints the table in docs/training.md from it and checks the parts
that differ between backends against what processes on a CPU really hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 2**30
BACKENDS = ("one", "ddp", "zero2", "zero3", "fsdp2")  # "one": a single process, no launcher
SHARDED = ("zero3", "fsdp2")  # the weights themselves are split over the GPUs
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # "all-linear" on a Llama-style decoder


@dataclass(frozen=True)
class Shape:
    """A Llama-style decoder: what the memory of training it depends on."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def layer_params(self) -> int:
        kv = self.kv_heads * self.head_dim
        return 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate + 2 * self.hidden

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def params(self) -> int:
        heads = 1 if self.tied else 2
        return self.layers * self.layer_params() + heads * self.embedding_params() + self.hidden

    def lora_params(self, r: int) -> int:
        """LoRA of rank r on every linear layer of the decoder (q, k, v, o, gate, up, down)."""
        kv = self.kv_heads * self.head_dim
        sides = {"q": (self.hidden, self.hidden), "k": (self.hidden, kv), "v": (self.hidden, kv),
                 "o": (self.hidden, self.hidden), "gate": (self.hidden, self.intermediate),
                 "up": (self.hidden, self.intermediate), "down": (self.intermediate, self.hidden)}
        return self.layers * r * sum(a + b for a, b in (sides[t] for t in LORA_TARGETS))


def shape_of(config) -> Shape:
    """The Shape of a transformers config of a Llama-style model."""
    return Shape(layers=config.num_hidden_layers, hidden=config.hidden_size, intermediate=config.intermediate_size,
                 vocab=config.vocab_size, heads=config.num_attention_heads,
                 kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                 tied=bool(getattr(config, "tie_word_embeddings", False)))


LLAMA_31_8B = Shape(layers=32, hidden=4096, intermediate=14336, vocab=128256, heads=32, kv_heads=8)


@dataclass(frozen=True)
class Run:
    """What a run trains and how: `reference` is "live", "precomputed" or "none" (reference-free losses)."""

    full_finetuning: bool
    reference: str
    pairs_per_gpu: int = 4  # micro-batch
    tokens_per_sequence: int = 512  # prompt + answer (data.max_length)
    lora_r: int = 16
    compute_bytes: int = 2  # bf16 (4: fp32, as on CPUs)
    optimizer_bytes: int = 8  # AdamW's two fp32 moments per trained weight (paged 8-bit AdamW: 2)
    gradient_checkpointing: bool = True
    chunk_bytes: int = 128 * 2**20  # fp32 logits per output-layer chunk (training.logit_chunk_size)

    @property
    def tokens(self) -> int:
        """Tokens in one micro-batch: chosen and rejected, a row each (a shared prompt needs fewer)."""
        return 2 * self.pairs_per_gpu * self.tokens_per_sequence


def trained_state(shape: Shape, run: Run, backend: str, gpus: int) -> dict[str, float]:
    """Bytes per GPU of the weights, the optimizer state (with DeepSpeed's fp32 master weights) and the
    gradients, as each backend keeps them under xlpo's precision policy."""
    p, c = shape.params(), run.compute_bytes
    t = p if run.full_finetuning else shape.lora_params(run.lora_r)  # trained weights
    frozen = 0 if run.full_finetuning else p  # LoRA's base, in the compute dtype
    n = gpus if backend != "one" else 1
    if backend in ("one", "ddp"):
        weights = 4 * t + c * frozen
        gradients = 4 * t * (2 if backend == "ddp" else 1)  # DDP's buckets hold a second copy
    elif backend == "zero2":  # the module's weights in the compute dtype, whole
        weights = c * (t + frozen)
        gradients = c * t / n + 4 * t / n  # a share in the compute dtype, and in fp32 for the step
    elif backend == "zero3":
        weights = c * (t + frozen) / n
        gradients = c * t / n + 4 * t / n
    else:  # fsdp2: fp32 shards of what trains, the frozen base's shards in the compute dtype
        weights = (4 * t + c * frozen) / n
        gradients = 4 * t / n
    share = t / n if backend in ("zero2", "zero3", "fsdp2") else t  # the trained weights whose state is here
    masters = 4 * share if backend in ("zero2", "zero3") else 0  # DeepSpeed's fp32 copy of its share
    return {"weights": weights, "optimizer": run.optimizer_bytes * share + masters, "gradients": gradients}


def reference_bytes(shape: Shape, run: Run, backend: str, gpus: int) -> float:
    """A reference model of its own exists only for full fine-tuning with a live reference: a frozen fp32
    copy (one process, DDP), DeepSpeed's bf16 engine (whole under ZeRO-2), or shards (ZeRO-3, FSDP2)."""
    if not run.full_finetuning or run.reference != "live":
        return 0.0
    p, c = shape.params(), run.compute_bytes
    return {"one": 4 * p, "ddp": 4 * p, "zero2": c * p, "zero3": c * p / gpus, "fsdp2": 4 * p / gpus}[backend]


def gathered_bytes(shape: Shape, run: Run, backend: str) -> float:
    """Weights made whole for the computation under ZeRO-3 and FSDP2: the layer in use and the next one
    (prefetched), and the output layer's weight, kept from the forward pass to its backward."""
    if backend not in SHARDED:
        return 0.0
    return run.compute_bytes * (2 * shape.layer_params() + shape.embedding_params())


def activation_bytes(shape: Shape, run: Run) -> float:
    """What the backward pass needs from the forward one. With gradient checkpointing: every layer's input,
    plus one layer's own activations while it is recomputed. A layer keeps (memory-efficient attention, no
    scores): its two norms' outputs, q, k, v, the attention output, the MLP's gate, up and their product."""
    c, t = run.compute_bytes, run.tokens
    kv = shape.kv_heads * shape.head_dim
    per_layer = c * t * (5 * shape.hidden + 2 * kv + 3 * shape.intermediate)
    if run.gradient_checkpointing:
        return c * t * shape.hidden * shape.layers + per_layer
    return per_layer * shape.layers


def logits_bytes(shape: Shape, run: Run) -> float:
    """The chunked output head: one chunk's fp32 logits, their compute-dtype product and its gradient."""
    rows = max(64, min(4096, run.chunk_bytes // (4 * shape.vocab)))
    return rows * shape.vocab * (4 + 2 * run.compute_bytes)


ZERO3_REDUCE_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size (elements), which the shipped configs keep


def engine_buffers(run: Run, backend: str) -> float:
    """Buffers an engine allocates whatever the model's size: ZeRO-3's gradient reduction bucket, one of
    `reduce_bucket_size` elements in the gradients' dtype, allocated when the optimizer is set up (~0.9 GiB in bf16)."""
    return ZERO3_REDUCE_BUCKET * run.compute_bytes if backend == "zero3" else 0.0


def per_gpu(shape: Shape, run: Run, backend: str, gpus: int) -> dict[str, float]:
    """Bytes per GPU by part; "total" adds 1.5 GiB for the CUDA context and communication buffers."""
    parts = {**trained_state(shape, run, backend, gpus), "reference": reference_bytes(shape, run, backend, gpus),
             "buffers": engine_buffers(run, backend), "gathered": gathered_bytes(shape, run, backend),
             "activations": activation_bytes(shape, run), "logits": logits_bytes(shape, run)}
    parts["total"] = sum(parts.values()) + 1.5 * GIB
    return parts


def fitting(shape: Shape, run: Run, gpus: int, gib: float) -> list[str]:
    """The backends whose per-GPU total fits a GPU of `gib` GiB (one process where there is one GPU)."""
    backends = ("one",) if gpus == 1 else BACKENDS[1:]
    return [b for b in backends if per_gpu(shape, run, b, gpus)["total"] <= gib * GIB]


def rows(shape: Shape = LLAMA_31_8B, **settings) -> list[tuple[str, Run]]:
    """The table's rows: LoRA and full fine-tuning, each with DPO (live, precomputed reference) and CAPO."""
    objectives = {"DPO, live reference": "live", "DPO, precomputed reference": "precomputed", "CAPO": "none"}
    return [(f"{method}, {objective}", Run(full_finetuning=full, reference=reference, **settings))
            for method, full in (("LoRA r16", False), ("full", True)) for objective, reference in objectives.items()]


def ceil_gib(size: float) -> int:
    return math.ceil(size / GIB)
