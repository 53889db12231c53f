"""Text generation behind one interface: batched Hugging Face generation, or vLLM when installed.

Used by ICR sampling and by the benchmarks. Prompts are strings (wrapped as one user turn) or
message lists; with `chat=True` the tokenizer's chat template is applied with a generation prompt.
Both backends get the same prompt token ids and the same sampling distribution (no top-k unless
asked for), so switching backend changes speed, not what is sampled from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Union

import torch

from xlpo.data.tokenize import leading_bos, prompt_ids
from xlpo.errors import UserError
from xlpo.models import check_adapter, load_adapter, load_model, load_tokenizer, resolve_model_path

Prompt = Union[str, list[dict[str, str]]]

REPLACEMENT = "\ufffd"  # what decoding shows for an incomplete UTF-8 sequence

# vLLM accepts only these values of max_lora_rank (vllm/config/lora.py, MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    # 0 = no top-k cutoff, as the ICR paper samples (vLLM's default); HF's generate would apply 50.
    top_k: int = 0
    n: int = 1  # samples per prompt
    seed: int = 42
    batch_size: int = 8  # prompts per generate() call (HF backend)
    chat: bool = True  # apply the tokenizer's chat template

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VLLMSettings:
    """Engine settings for vLLM (ignored by the HF backend)."""

    max_model_len: int | None = None  # longest prompt + response planned for; None = the model's context
    gpu_memory_utilization: float = 0.9  # share of GPU memory for weights + KV cache (vLLM's default)
    tensor_parallel_size: int = 1  # GPUs one engine spans (the visible ones)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (an end-of-sequence token) or "length" (max_new_tokens reached)


def render_prompt(tokenizer, prompt: Prompt, chat: bool = True) -> str:
    """The exact text the model continues from."""
    if not chat:
        if not isinstance(prompt, str):
            raise UserError("generation without a chat template needs plain-string prompts")
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class PromptEncoder:
    """Prompt token ids as training encodes prompts: the text's own tokens plus exactly one BOS
    where the tokenizer uses one (a chat template that writes BOS keeps its own; none is added twice)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.bos = leading_bos(tokenizer)

    def __call__(self, prompts: list[Prompt], chat: bool) -> list[list[int]]:
        return [prompt_ids(self.tokenizer, render_prompt(self.tokenizer, p, chat), self.bos) for p in prompts]


def hf_generate_kwargs(settings: GenerationSettings, pad_token_id: int | None) -> dict:
    """Keyword arguments of `model.generate` for `settings`; every sampling knob set explicitly,
    so the model's generation_config and transformers' defaults (top_k=50) never add to them."""
    kwargs = dict(max_new_tokens=settings.max_new_tokens, num_return_sequences=settings.n,
                  pad_token_id=pad_token_id, do_sample=settings.temperature > 0)
    if kwargs["do_sample"]:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def vllm_sampling_kwargs(settings: GenerationSettings) -> dict:
    """Keyword arguments of vLLM's SamplingParams; top_k -1 means none in every vLLM version
    (0 is refused by vLLM <= 0.8, which the ICR paper's 0.6.1 belongs to)."""
    return dict(n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                top_k=settings.top_k if settings.top_k > 0 else -1, max_tokens=settings.max_new_tokens,
                seed=settings.seed)


def adapter_rank(adapter: str) -> int:
    """The largest LoRA rank in a saved PEFT adapter (r, or a larger one in its rank_pattern)."""
    config = check_adapter(adapter)
    return max([int(config.get("r", 8)), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds `rank` (its default, 16, refuses r=64)."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise UserError(f"LoRA rank {rank} is above the largest vLLM serves ({VLLM_LORA_RANKS[-1]})")


def vllm_engine_kwargs(model_path: str, adapter: str | None = None, dtype: str = "auto",
                       engine: VLLMSettings = VLLMSettings(), trust_remote_code: bool = False) -> dict:
    """Keyword arguments of `vllm.LLM`: the adapter's rank, the memory share and context length."""
    kwargs = dict(model=model_path, dtype=dtype, seed=0, trust_remote_code=trust_remote_code,
                  gpu_memory_utilization=engine.gpu_memory_utilization, enable_lora=adapter is not None)
    if engine.max_model_len is not None:
        kwargs["max_model_len"] = engine.max_model_len
    if engine.tensor_parallel_size > 1:
        kwargs["tensor_parallel_size"] = engine.tensor_parallel_size
    if adapter is not None:
        kwargs.update(max_lora_rank=vllm_max_lora_rank(adapter_rank(adapter)), max_loras=1)
    return kwargs


class IncrementalText:
    """The text of a growing token sequence, released piece by piece only once it is final.

    Decodes a short window of recent tokens (prefix/read offsets), so each step costs O(1); a window
    whose text ends in U+FFFD waits for the token that completes the character. Leading whitespace is
    dropped; trailing whitespace and U+FFFD wait for the text after them and are dropped at the end.
    The released pieces add up to `decode(ids)` stripped that way.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = 0
        self.pending = ""  # a trailing run of whitespace / U+FFFD, released only if text follows it
        self.started = False
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add one token; returns the text that became final (often '')."""
        return self.extend([token_id])

    def extend(self, token_ids: list[int]) -> str:
        """Add tokens; returns the text that became final (often '')."""
        self.ids.extend(token_ids)
        before = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        if len(now) <= len(before) or now.endswith(REPLACEMENT) or not now.startswith(before):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return self._release(now[len(before):])

    def finish(self) -> str:
        """The last final piece; what is still held back at the end is dropped."""
        before = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        piece = self._release(now[len(before):] if now.startswith(before) else "")
        self.pending = ""
        return piece

    def _release(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            self.started = bool(piece)
        body = self.pending + piece
        end = len(body)
        while end and (body[end - 1].isspace() or body[end - 1] == REPLACEMENT):
            end -= 1
        final, self.pending = body[:end], body[end:]
        self.text += final
        return final


def completion_text(tokenizer, ids: list[int]) -> str:
    """The text of a finished completion, as a stream of it ends (one decode): stripped, and never
    ending in half a character (a completion cut at max_new_tokens may stop inside one)."""
    text = IncrementalText(tokenizer)
    text.extend(ids)
    text.finish()
    return text.text


class HFGenerator:
    """Batched `model.generate` with left padding; sampling is seeded once per batch."""

    backend = "hf"

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.encode = PromptEncoder(tokenizer)

    def generate(self, prompts: list[Prompt], settings: GenerationSettings = GenerationSettings(),
                 progress=None) -> list[list[str]]:
        """`settings.n` completions for each prompt, in order; stripped of special tokens and whitespace."""
        return [[c.text for c in group] for group in self.generate_detailed(prompts, settings, progress)]

    @torch.no_grad()
    def generate_detailed(self, prompts: list[Prompt], settings: GenerationSettings = GenerationSettings(),
                          progress=None) -> list[list[Completion]]:
        """Like `generate`, with token counts and why each completion stopped."""
        tok = self.tokenizer
        ids = self.encode(prompts, settings.chat)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        side = tok.padding_side
        tok.padding_side = "left"  # decoder-only models continue from the right edge
        outputs: list[list[Completion]] = []
        stop_ids = stop_token_ids(self.model, tok)
        kwargs = hf_generate_kwargs(settings, tok.pad_token_id)
        try:
            for start in range(0, len(ids), settings.batch_size):
                batch = ids[start:start + settings.batch_size]
                enc = tok.pad({"input_ids": batch}, padding=True, return_tensors="pt").to(device)
                torch.manual_seed(settings.seed + start)
                generated = self.model.generate(**enc, **kwargs)
                new_tokens = generated[:, enc["input_ids"].shape[1]:]
                for i in range(len(batch)):
                    group = []
                    for j in range(i * settings.n, (i + 1) * settings.n):
                        row = new_tokens[j].tolist()
                        stopped = next((k for k, t in enumerate(row) if t in stop_ids), None)
                        length = len(row) if stopped is None else stopped + 1
                        group.append(Completion(completion_text(tok, row[:length]), len(batch[i]), length,
                                                "length" if stopped is None else "stop"))
                    outputs.append(group)
                if progress is not None:
                    progress(len(batch))
        finally:
            tok.padding_side = side
            self.model.train(was_training)
        return outputs


def stop_token_ids(model, tokenizer) -> set[int]:
    """Token ids that end generation: the model's generation EOS ids and the tokenizer's EOS."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class VLLMGenerator:
    """The same interface over vLLM (optional dependency), with the adapter as a LoRA request.

    Prompts go in as token ids, never as text: vLLM would tokenize text with the tokenizer's
    special tokens and put a second BOS before a chat template's own."""

    backend = "vllm"

    def __init__(self, model_path: str, tokenizer, adapter: str | None = None, dtype: str = "auto",
                 engine: VLLMSettings = VLLMSettings(), trust_remote_code: bool = False):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("generation.backend=vllm but vLLM is not installed (pip install vllm)") from None
        self.tokenizer = tokenizer
        self.encode = PromptEncoder(tokenizer)
        self.llm = LLM(**vllm_engine_kwargs(model_path, adapter, dtype, engine, trust_remote_code))
        self.adapter = adapter

    def generate(self, prompts: list[Prompt], settings: GenerationSettings = GenerationSettings(),
                 progress=None) -> list[list[str]]:
        return [[c.text for c in group] for group in self.generate_detailed(prompts, settings, progress)]

    def generate_detailed(self, prompts: list[Prompt], settings: GenerationSettings = GenerationSettings(),
                          progress=None) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        params = SamplingParams(**vllm_sampling_kwargs(settings))
        requests = [{"prompt_token_ids": ids} for ids in self.encode(prompts, settings.chat)]
        lora = LoRARequest("adapter", 1, self.adapter) if self.adapter else None
        results = self.llm.generate(requests, params, lora_request=lora)
        if progress is not None:
            progress(len(requests))
        return [[Completion(o.text.strip(), len(r.prompt_token_ids), len(o.token_ids),
                            "length" if o.finish_reason == "length" else "stop") for o in r.outputs]
                for r in results]


def choose_backend(backend: str) -> str:
    """auto = vLLM when it is installed and a CUDA device is present, else Hugging Face."""
    if backend != "auto":
        return backend
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "hf"
    return "vllm" if torch.cuda.is_available() else "hf"


def make_generator(model_name: str = "embedded", adapter: str | None = None, dtype: str = "auto",
                   backend: Literal["auto", "hf", "vllm"] = "auto", trust_remote_code: bool = False,
                   engine: VLLMSettings = VLLMSettings()):
    """A generator for `model_name` (+ optional LoRA adapter). auto = vLLM on CUDA when installed, else HF."""
    if adapter:
        check_adapter(adapter)  # a broken adapter is one line, before the model loads
    tokenizer = load_tokenizer(model_name, trust_remote_code)
    if choose_backend(backend) == "vllm":
        return VLLMGenerator(resolve_model_path(model_name), tokenizer, adapter, dtype, engine, trust_remote_code)
    model = load_model(model_name, dtype, trust_remote_code)
    if adapter:
        model = load_adapter(model, adapter)
    if torch.cuda.is_available():
        model.to("cuda")
    return HFGenerator(model, tokenizer)
