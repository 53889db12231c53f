"""Batched generation: prompt rendering, left padding, n samples, determinism, greedy = one-by-one."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from xlpo.generation import GenerationSettings, HFGenerator, render_prompt


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
