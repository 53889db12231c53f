"""The X-AlpacaEval judge: AlpacaEval 2.0's pairwise classifier prompt, order randomised, logprob-weighted.

The judge sees the instruction and two outputs named "m" (first) and "M" (second) and answers
with one identifier. Its preference is P(M) / (P(m) + P(M)) from the first token's top log-probs
when the judge returns them, else 1 or 0 from the reply text; anything else is unparseable.
"""

from __future__ import annotations

import math
import re

from xlpo.clients.chat import ChatReply, ChatRequest

# The X-AlpacaEval leaderboard's annotator (the ICR authors' copy of alpaca_eval, config
# `weighted_alpaca_eval_gpt4_turbo_multilingual`, Apache-2.0): AlpacaEval 2.0's default
# `alpaca_eval_clf_gpt4_turbo` prompt plus the sentence "A good output should be in the same
# language as the instruction, ...". System and user turns as alpaca_eval's prompt_to_chatml gives them.
SYSTEM_PROMPT = ("You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) "
                 "based on the quality of their responses to a given instruction. This process will be used to create "
                 "a leaderboard reflecting the most accurate and human-preferred answers.")

USER_TEMPLATE = '''I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{
    "instruction": """{instruction}""",
}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{
    {
        "model_identifier": "m",
        "output": """{output_1}"""
    },
    {
        "model_identifier": "M",
        "output": """{output_2}"""
    }
}

## Task

A good output should be in the same language as the instruction, except when the instruction explicitly requests the output in a different language. Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier'''

_PLACEHOLDER = re.compile(r"(\{instruction\}|\{output_1\}|\{output_2\})")
IDENTIFIERS = ("m", "M")  # output_1, output_2


def judge_messages(instruction: str, output_1: str, output_2: str) -> list[dict[str, str]]:
    """The judge's conversation; placeholders are filled in one pass, so answer text is never rescanned."""
    values = {"{instruction}": instruction, "{output_1}": output_1, "{output_2}": output_2}
    user = "".join(values.get(piece, piece) for piece in _PLACEHOLDER.split(USER_TEMPLATE))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def judge_request(instruction: str, output_1: str, output_2: str, *, max_tokens: int = 1, logprobs: bool = True,
                  seed: int = 0) -> ChatRequest:
    """Greedy, one token by default (AlpacaEval asks for one token), top-5 log-probs when `logprobs`."""
    return ChatRequest(judge_messages(instruction, output_1, output_2), temperature=0.0, max_tokens=max_tokens,
                       seed=seed, top_logprobs=5 if logprobs else None)


def preference_for_second(reply: ChatReply) -> tuple[float | None, str]:
    """(probability that output_2 is better, how it was read): ("logprobs" | "text") or (None, why).

    From the first token's top log-probs when "m" or "M" is among them (a missing one has
    probability 0, as in alpaca_eval's logprob_parser); else the reply text stripped must be
    exactly "m" or "M". Identifiers are matched exactly, case included.
    """
    if reply.top_logprobs:
        found: dict[str, float] = {}
        for alt in reply.top_logprobs:
            if alt["token"] in IDENTIFIERS:
                found.setdefault(alt["token"], float(alt["logprob"]))  # the first (most likely) of equal strings
        if found:
            first, second = found.get("m", -math.inf), found.get("M", -math.inf)
            top = max(first, second)
            return math.exp(second - top) / (math.exp(first - top) + math.exp(second - top)), "logprobs"
    text = (reply.text or "").strip()
    if text in IDENTIFIERS:
        return float(text == "M"), "text"
    return None, f"unrecognised reply {text[:40]!r}"
