"""Text generation behind one interface: batched Hugging Face generation, or vLLM when installed.

Used by ICR sampling and by the benchmarks. Prompts are strings (wrapped as one user turn) or
message lists; with `chat=True` the tokenizer's chat template is applied with a generation prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Union

import torch

from xlpo.errors import UserError

Prompt = Union[str, list[dict[str, str]]]


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1  # samples per prompt
    seed: int = 42
    batch_size: int = 8  # prompts per generate() call (HF backend)
    chat: bool = True  # apply the tokenizer's chat template

    def to_dict(self) -> dict:
        return asdict(self)


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


class HFGenerator:
    """Batched `model.generate` with left padding; sampling is seeded once per batch."""

    backend = "hf"

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def generate(self, prompts: list[Prompt], settings: GenerationSettings = GenerationSettings(),
                 progress=None) -> list[list[str]]:
        """`settings.n` completions for each prompt, in order; stripped of special tokens and whitespace."""
        return [[c.text for c in group] for group in self.generate_detailed(prompts, settings, progress)]

    @torch.no_grad()
    def generate_detailed(self, prompts: list[Prompt], settings: GenerationSettings = GenerationSettings(),
                          progress=None) -> list[list[Completion]]:
        """Like `generate`, with token counts and why each completion stopped."""
        tok = self.tokenizer
        texts = [render_prompt(tok, p, settings.chat) for p in prompts]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        side = tok.padding_side
        tok.padding_side = "left"  # decoder-only models continue from the right edge
        outputs: list[list[Completion]] = []
        stop_ids = stop_token_ids(self.model, tok)
        try:
            for start in range(0, len(texts), settings.batch_size):
                batch = texts[start:start + settings.batch_size]
                enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                torch.manual_seed(settings.seed + start)
                sample = settings.temperature > 0
                kwargs = dict(max_new_tokens=settings.max_new_tokens, do_sample=sample,
                              num_return_sequences=settings.n, pad_token_id=tok.pad_token_id)
                if sample:
                    kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
                else:
                    kwargs.update(temperature=None, top_p=None, top_k=None)
                generated = self.model.generate(**enc, **kwargs)
                new_tokens = generated[:, enc["input_ids"].shape[1]:]
                decoded = [t.strip() for t in tok.batch_decode(new_tokens, skip_special_tokens=True)]
                prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
                for i in range(len(batch)):
                    group = []
                    for j in range(i * settings.n, (i + 1) * settings.n):
                        ids = new_tokens[j].tolist()
                        stopped = next((k for k, t in enumerate(ids) if t in stop_ids), None)
                        length = len(ids) if stopped is None else stopped + 1
                        group.append(Completion(decoded[j], int(prompt_lengths[i]), length,
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
    """The same interface over vLLM (optional dependency), with the adapter as a LoRA request."""

    backend = "vllm"

    def __init__(self, model_path: str, tokenizer, adapter: str | None = None, dtype: str = "auto"):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("generation.backend=vllm but vLLM is not installed (pip install vllm)") from None
        self.tokenizer = tokenizer
        self.llm = LLM(model=model_path, dtype=dtype, enable_lora=adapter is not None, seed=0)
        self.adapter = adapter

    def generate(self, prompts: list[Prompt], settings: GenerationSettings = GenerationSettings(),
                 progress=None) -> list[list[str]]:
        return [[c.text for c in group] for group in self.generate_detailed(prompts, settings, progress)]

    def generate_detailed(self, prompts: list[Prompt], settings: GenerationSettings = GenerationSettings(),
                          progress=None) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        params = SamplingParams(n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                                max_tokens=settings.max_new_tokens, seed=settings.seed)
        texts = [render_prompt(self.tokenizer, p, settings.chat) for p in prompts]
        lora = LoRARequest("adapter", 1, self.adapter) if self.adapter else None
        results = self.llm.generate(texts, params, lora_request=lora)
        if progress is not None:
            progress(len(texts))
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
                   backend: Literal["auto", "hf", "vllm"] = "auto", trust_remote_code: bool = False):
    """A generator for `model_name` (+ optional LoRA adapter). auto = vLLM on CUDA when installed, else HF."""
    from xlpo.models import load_adapter, load_model, load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(model_name, trust_remote_code)
    if choose_backend(backend) == "vllm":
        return VLLMGenerator(resolve_model_path(model_name), tokenizer, adapter, dtype)
    model = load_model(model_name, dtype, trust_remote_code)
    if adapter:
        model = load_adapter(model, adapter)
    if torch.cuda.is_available():
        model.to("cuda")
    return HFGenerator(model, tokenizer)
