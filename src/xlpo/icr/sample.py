"""Sampling N responses per prompt, and the model's own translations of them for R_t.

Both go through `xlpo.generation` (batched HF generation, or vLLM). Prompts are rendered with the
same chat formatting as training (`ResponseEncoder`), so the sampled text is exactly what gets
scored and trained on. Each chunk of prompts has its own seed, so a resumed run samples what an
uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from xlpo.generation import GenerationSettings, VLLMSettings
from xlpo.icr.prompts import ENGLISH, Prompt, translate_prompt
from xlpo.icr.response_logps import ResponseEncoder


def generation_settings(sampling) -> GenerationSettings:
    """The generation settings of the config's `sampling` section (prompts are already chat-formatted)."""
    return GenerationSettings(max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                              top_p=sampling.top_p, top_k=sampling.top_k, n=sampling.n, seed=sampling.seed,
                              batch_size=sampling.batch_size, chat=False)


def engine_settings(sampling) -> VLLMSettings:
    """The vLLM engine settings of the config's `sampling` section."""
    return VLLMSettings(max_model_len=sampling.max_model_len, gpu_memory_utilization=sampling.gpu_memory_utilization,
                        tensor_parallel_size=sampling.tensor_parallel_size)


def chunk_seed(seed: int, iteration: int, lang: str, chunk: int) -> int:
    digest = hashlib.sha256(f"{seed}|{iteration}|{lang}|{chunk}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 1)


def sample_responses(generator, encoder: ResponseEncoder, prompts: list[Prompt],
                     settings: GenerationSettings) -> list[dict]:
    """One row per prompt: its `settings.n` responses to the target-language instruction (stripped)."""
    texts = [encoder.prompt_text(p.instruction) for p in prompts]
    outputs = generator.generate(texts, replace(settings, chat=False))
    return [{"id": p.id, "lang": p.lang, "instruction_id": p.instruction_id, "prompt": p.instruction,
             "responses": list(responses)} for p, responses in zip(prompts, outputs)]


def translate_responses(generator, encoder: ResponseEncoder, rows: list[dict], settings: GenerationSettings) -> list[dict]:
    """T(lang, y): English responses unchanged; others translated to English greedily by the model itself
    with the paper's prompt (Appendix E.2)."""
    greedy = replace(settings, temperature=0.0, n=1, chat=False)
    jobs = [(i, j) for i, row in enumerate(rows) if row["lang"] != ENGLISH for j in range(len(row["responses"]))]
    texts = [encoder.prompt_text(translate_prompt(rows[i]["responses"][j])) for i, j in jobs]
    outputs = generator.generate(texts, greedy) if texts else []
    translated = [list(row["responses"]) for row in rows]
    for (i, j), out in zip(jobs, outputs):
        translated[i][j] = out[0]
    return [{"id": row["id"], "lang": row["lang"], "instruction_id": row["instruction_id"], "translations": t}
            for row, t in zip(rows, translated)]
