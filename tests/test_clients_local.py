"""The in-process backend: grouping by sampling settings, seeds, token counts and stop reasons."""

from __future__ import annotations

import torch

from xlpo.clients.chat import ChatRequest
from xlpo.clients.local import LocalBackend
from xlpo.generation import Completion, GenerationSettings, make_generator


class Recording:
    def __init__(self):
        self.calls = []

    def generate_detailed(self, prompts, settings, progress=None):
        self.calls.append(([p[0]["content"] for p in prompts], settings))
        return [[Completion(f"{p[0]['content']}@{settings.temperature}", 1, 1, "stop")] for p in prompts]


def ask(text, temperature=0.0, max_tokens=8, seed=None):
    return ChatRequest([{"role": "user", "content": text}], temperature, max_tokens, seed)


def test_groups_consecutive_requests_with_equal_settings_and_keeps_order():
    gen = Recording()
    backend = LocalBackend(generator=gen, batch_size=3)
    replies = backend.complete_many([ask("a", seed=7), ask("b", seed=8), ask("c", 0.7, seed=9), ask("d")])
    assert [r.text for r in replies] == ["a@0.0", "b@0.0", "c@0.7", "d@0.0"]
    assert [c[0] for c in gen.calls] == [["a", "b"], ["c"], ["d"]]
    first = gen.calls[0][1]
    assert (first.seed, first.batch_size, first.max_new_tokens) == (7, 3, 8)
    assert gen.calls[2][1].seed == 0


def test_describe_names_model_and_adapter():
    assert LocalBackend("some/model", adapter="run/adapter", generator=Recording()).describe()["adapter"] == "run/adapter"


def test_generate_detailed_counts_tokens_and_stop_reason(tiny_model_dir):
    generator = make_generator(str(tiny_model_dir), backend="hf")
    tok = generator.tokenizer
    prompt = [{"role": "user", "content": "Hallo"}]
    [[done]] = generator.generate_detailed([prompt], GenerationSettings(max_new_tokens=5, temperature=0.0))
    assert done.completion_tokens == 5 and done.finish_reason == "length"  # a random model never says EOS early
    text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert done.prompt_tokens == len(tok(text, add_special_tokens=False)["input_ids"])
    # Forcing EOS as the most likely token makes the model stop at once: finish_reason "stop", 1 token.
    head = generator.model.get_output_embeddings()
    bias = torch.zeros(head.weight.shape[0])
    bias[tok.eos_token_id] = 1e4
    head.bias = torch.nn.Parameter(bias)
    [[stopped]] = generator.generate_detailed([prompt], GenerationSettings(max_new_tokens=5, temperature=0.0))
    assert stopped.finish_reason == "stop" and stopped.completion_tokens == 1 and stopped.text == ""
