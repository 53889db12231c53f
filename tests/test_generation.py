"""Generation: prompt rendering, left padding, n samples, determinism, greedy = one-by-one; the sampling
request of both backends (no top-k), and vLLM's engine and prompts, with vLLM mocked (it cannot run here)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from tokenizers import processors
from transformers import AutoModelForCausalLM

from xlpo.data.tokenize import PairTokenizer
from xlpo.errors import UserError
from xlpo.generation import (GenerationSettings, HFGenerator, PromptEncoder, VLLMGenerator, VLLMSettings,
                             make_generator, render_prompt, vllm_max_lora_rank)


def _generator(tiny_model_dir, tokenizer):
    return HFGenerator(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), tokenizer)


def test_render_prompt_uses_chat_template_with_generation_prompt(tokenizer):
    text = render_prompt(tokenizer, "Hallo?")
    assert text.endswith("<|im_start|>user\nHallo?<|im_end|>\n<|im_start|>assistant\n")
    assert render_prompt(tokenizer, "plain", chat=False) == "plain"


def test_greedy_batched_equals_one_at_a_time(tiny_model_dir, tokenizer):
    gen = _generator(tiny_model_dir, tokenizer)
    prompts = ["Hi", "Translate to German: a much longer sentence with many more tokens than the first", "Why?"]
    settings = GenerationSettings(max_new_tokens=6, batch_size=3)
    batched = gen.generate(prompts, settings)
    single = [gen.generate([p], GenerationSettings(max_new_tokens=6, batch_size=1))[0] for p in prompts]
    assert batched == single
    assert all(len(outs) == 1 and isinstance(outs[0], str) for outs in batched)
    assert tokenizer.padding_side == "right"  # restored


def test_sampling_gives_n_outputs_and_is_seeded(tiny_model_dir, tokenizer):
    gen = _generator(tiny_model_dir, tokenizer)
    settings = GenerationSettings(max_new_tokens=8, temperature=1.0, n=4, seed=7)
    first = gen.generate(["Tell me something", "Another prompt"], settings)
    again = gen.generate(["Tell me something", "Another prompt"], settings)
    other = gen.generate(["Tell me something", "Another prompt"], GenerationSettings(max_new_tokens=8, temperature=1.0, n=4, seed=8))
    assert [len(o) for o in first] == [4, 4]
    assert first == again and first != other
    assert len(set(first[0])) > 1  # a random tiny model samples different texts


# -- top-k: the paper samples with none; HF's generate would apply its default of 50 -----------------

def _capturing(gen):
    """Record every model.generate call's kwargs and output."""
    calls, original = [], gen.model.generate

    def generate(**kwargs):
        out = original(**kwargs)
        calls.append((kwargs, out))
        return out

    gen.model.generate = generate
    return calls


def test_hf_request_sets_every_sampling_knob(tiny_model_dir, tokenizer):
    gen = _generator(tiny_model_dir, tokenizer)
    calls = _capturing(gen)
    gen.generate(["Hi"], GenerationSettings(max_new_tokens=2, temperature=0.9, top_p=0.95, n=2))
    gen.generate(["Hi"], GenerationSettings(max_new_tokens=2, temperature=0.9, top_k=40))
    gen.generate(["Hi"], GenerationSettings(max_new_tokens=2))
    sampled, top40, greedy = (kwargs for kwargs, _ in calls)
    assert (sampled["do_sample"], sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (True, 0.9, 0.95, 0)
    assert sampled["num_return_sequences"] == 2 and top40["top_k"] == 40
    assert greedy["do_sample"] is False and greedy["top_k"] is None


def test_hf_sampling_is_not_cut_to_the_top_50_tokens(tiny_model_dir, tokenizer):
    """A random tiny model's next-token distribution is nearly flat over 49,152 tokens: without top-k,
    almost no sampled token is among the 50 most likely; with transformers' default top_k=50, all are."""
    gen = _generator(tiny_model_dir, tokenizer)
    calls = _capturing(gen)
    gen.generate(["Tell me a story"], GenerationSettings(max_new_tokens=12, temperature=1.0, n=4, seed=3))
    (kwargs, out), = calls
    prompt_len = kwargs["input_ids"].shape[1]
    with torch.no_grad():
        logits = gen.model(input_ids=out).logits[:, prompt_len - 1:-1]
    sampled = out[:, prompt_len:]
    ranks = (logits > logits.gather(2, sampled[:, :, None])).sum(-1)  # 0 = the most likely token
    assert (ranks >= 50).float().mean() > 0.5


def test_icr_sampling_defaults_to_no_top_k_and_carries_the_vllm_engine_settings():
    from xlpo.icr.config import load_icr_config
    from xlpo.icr.sample import engine_settings, generation_settings

    config = load_icr_config(None, ["policy.adapter=some/adapter", "sampling.max_model_len=4096",
                                    "sampling.gpu_memory_utilization=0.5", "sampling.tensor_parallel_size=2"])
    settings = generation_settings(config.sampling)
    assert (settings.top_k, settings.temperature, settings.top_p, settings.n, settings.chat) == (0, 0.9, 1.0, 10, False)
    assert engine_settings(config.sampling) == VLLMSettings(max_model_len=4096, gpu_memory_utilization=0.5,
                                                                tensor_parallel_size=2)
    assert generation_settings(load_icr_config(None, ["policy.adapter=a", "sampling.top_k=20"]).sampling).top_k == 20


# -- vLLM, mocked: it cannot run here ------------------------------------------------------------------

class _FakeVLLM:
    """Stands in for the `vllm` package: records what xlpo asks of it and answers in its shapes."""

    def __init__(self):
        self.engines, self.requests, self.params, self.loras = [], [], [], []
        fake = self

        class LLM:
            def __init__(self, **kwargs):
                fake.engines.append(kwargs)

            def generate(self, prompts, params, lora_request=None):
                fake.requests.append(prompts)
                fake.loras.append(lora_request)
                n = params.kwargs["n"]
                return [SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=[
                    SimpleNamespace(text=f" answer {i} ", token_ids=[1, 2, 3], finish_reason="length" if i else "stop")
                    for i in range(n)]) for p in prompts]

        class SamplingParams:
            def __init__(self, **kwargs):
                self.kwargs = kwargs
                fake.params.append(kwargs)

        class LoRARequest:
            def __init__(self, name, int_id, path):
                self.args = (name, int_id, path)

        self.module = ModuleType("vllm")
        self.module.LLM, self.module.SamplingParams = LLM, SamplingParams
        self.lora = ModuleType("vllm.lora")
        self.lora_request = ModuleType("vllm.lora.request")
        self.lora_request.LoRARequest = LoRARequest

    def install(self, monkeypatch):
        for name, module in (("vllm", self.module), ("vllm.lora", self.lora), ("vllm.lora.request", self.lora_request)):
            monkeypatch.setitem(sys.modules, name, module)
        return self


def _adapter_dir(path: Path, r: int, rank_pattern: dict | None = None) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "rank_pattern": rank_pattern or {}}))
    (path / "adapter_model.safetensors").write_bytes(b"\x02" + bytes(7) + b"{}")  # a safetensors header, no tensors
    return str(path)


def _bos_tokenizer(tokenizer):
    """The real tokenizer made to add BOS like Llama-3's, with a chat template that writes BOS itself."""
    tok = copy.deepcopy(tokenizer)
    tok.bos_token = "<|endoftext|>"
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B", special_tokens=[("<|endoftext|>", bos)])
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                         "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert tok("a").input_ids[0] == bos  # the tokenizer itself adds BOS, as Llama-3's does
    return tok


def test_vllm_engine_gets_adapter_rank_memory_share_and_context(monkeypatch, tmp_path, tokenizer):
    fake = _FakeVLLM().install(monkeypatch)
    engine = VLLMSettings(max_model_len=4096, gpu_memory_utilization=0.5, tensor_parallel_size=4)
    VLLMGenerator("base/model", tokenizer, _adapter_dir(tmp_path / "r64", 64), "bfloat16", engine)
    VLLMGenerator("base/model", tokenizer, _adapter_dir(tmp_path / "r4", 4, {"q_proj": 24}))
    VLLMGenerator("base/model", tokenizer)
    with_adapter, small_rank, plain = fake.engines
    assert with_adapter == {"model": "base/model", "dtype": "bfloat16", "seed": 0, "trust_remote_code": False,
                            "gpu_memory_utilization": 0.5, "enable_lora": True, "max_model_len": 4096,
                            "max_lora_rank": 64, "max_loras": 1, "tensor_parallel_size": 4}
    assert small_rank["max_lora_rank"] == 32  # the largest rank (24, in rank_pattern), rounded up to vLLM's set
    assert plain["enable_lora"] is False and "max_lora_rank" not in plain and "max_model_len" not in plain
    assert "tensor_parallel_size" not in plain  # one GPU: vLLM's own default
    assert plain["gpu_memory_utilization"] == 0.9
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 9, 64, 65, 512)] == [1, 8, 8, 16, 64, 128, 512]
    with pytest.raises(UserError, match="above the largest"):
        vllm_max_lora_rank(513)


def test_vllm_gets_token_ids_with_exactly_one_bos(monkeypatch, tokenizer):
    fake = _FakeVLLM().install(monkeypatch)
    tok = _bos_tokenizer(tokenizer)
    gen = VLLMGenerator("base/model", tok)
    chat = gen.generate(["Hallo?", [{"role": "user", "content": "Two"}]], GenerationSettings(max_new_tokens=5))
    gen.generate(["plain text without a template"], GenerationSettings(chat=False))
    assert chat == [["answer 0"], ["answer 0"]]
    bos = tok.bos_token_id
    (first, second), (plain,) = fake.requests
    for request in (first, second, plain):
        ids = request["prompt_token_ids"]
        assert ids[0] == bos and ids.count(bos) == 1
    # The same ids as the HF backend feeds and as training encodes the prompt.
    encoder = PairTokenizer(tok, "tokenizer")
    assert first["prompt_token_ids"] == encoder.encode_prompt(encoder.prompt_text("Hallo?"))
    assert PromptEncoder(tok)(["Hallo?"], chat=True) == [first["prompt_token_ids"]]


def test_vllm_sampling_params_and_lora_request(monkeypatch, tmp_path, tokenizer):
    fake = _FakeVLLM().install(monkeypatch)
    adapter = _adapter_dir(tmp_path / "adapter", 16)
    gen = VLLMGenerator("base/model", tokenizer, adapter)
    detailed = gen.generate_detailed(["Hi"], GenerationSettings(max_new_tokens=7, temperature=0.9, top_p=0.8, n=2, seed=5))
    gen.generate(["Hi"], GenerationSettings(temperature=0.9, top_k=20))
    none, top20 = fake.params
    assert none == {"n": 2, "temperature": 0.9, "top_p": 0.8, "top_k": -1, "max_tokens": 7, "seed": 5}
    assert top20["top_k"] == 20
    assert fake.loras[0].args == ("adapter", 1, adapter)
    assert [(c.text, c.completion_tokens, c.finish_reason) for c in detailed[0]] == [("answer 0", 3, "stop"),
                                                                                      ("answer 1", 3, "length")]
    assert detailed[0][0].prompt_tokens == len(fake.requests[0][0]["prompt_token_ids"])


def test_make_generator_and_bench_options_pass_the_engine_settings(monkeypatch, tmp_path, tiny_model_dir):
    from xlpo.cli.bench import Candidate

    fake = _FakeVLLM().install(monkeypatch)
    adapter = _adapter_dir(tmp_path / "adapter", 64)
    make_generator(str(tiny_model_dir), adapter, backend="vllm", engine=VLLMSettings(2048, 0.6))
    assert {k: fake.engines[0][k] for k in ("max_model_len", "gpu_memory_utilization", "max_lora_rank")} == \
        {"max_model_len": 2048, "gpu_memory_utilization": 0.6, "max_lora_rank": 64}
    local = Candidate(str(tiny_model_dir), Path(adapter), batch_size=4, backend="vllm", max_model_len=1024,
                      gpu_memory_utilization=0.7).build()
    local.generator
    assert (fake.engines[1]["max_model_len"], fake.engines[1]["gpu_memory_utilization"]) == (1024, 0.7)
    with pytest.raises(UserError, match="--backend"):
        Candidate(backend="tpu").build()


class Scripted(torch.nn.Module):
    """A model whose generate() continues every prompt with the same scripted tokens, cut at max_new_tokens."""

    def __init__(self, tokens: list[int]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokens = tokens
        self.generation_config = SimpleNamespace(eos_token_id=None)

    def generate(self, input_ids, attention_mask, max_new_tokens, num_return_sequences, **kwargs):
        rows = input_ids.repeat_interleave(num_return_sequences, dim=0)
        new = torch.tensor(self.tokens[:max_new_tokens]).repeat(rows.shape[0], 1)
        return torch.cat([rows, new], dim=1)


@pytest.mark.parametrize("text", ["森林の栄養素。", "  Hé 日本  語 "])
def test_hf_completions_cut_at_max_new_tokens_never_end_in_half_a_character(tokenizer, text):
    from test_serve_generation import reference_text  # the slow obvious version, shared with the server's test

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    cuts = [k for k in range(1, len(ids) + 1) if tokenizer.decode(ids[:k]).endswith("\ufffd")]
    assert cuts, "the test needs a multi-byte character split across tokens"
    gen = HFGenerator(Scripted(ids), tokenizer)
    for k in range(1, len(ids) + 1):
        (completion,), = gen.generate_detailed(["Hi"], GenerationSettings(max_new_tokens=k))
        assert completion.text == reference_text(tokenizer, ids[:k]) and not completion.text.endswith("\ufffd")
        assert completion.completion_tokens == k and completion.finish_reason == "length"
