"""Strict and loose instruction following of one response, and prompt/instruction-level accuracies (IFEval).

Strict checks the response as it is; loose passes an instruction if any of eight variants passes: the
response, without its first line, without its last line, without both, and each of those without '*'
(lm-eval's `test_instruction_following_loose`, itself Google's IFEval). Blank text never passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

Check = Callable[[str], bool]


def loose_variants(response: str) -> list[str]:
    """The eight texts the loose score tries, in lm-eval's order (the first is the response itself)."""
    lines = response.split("\n")
    without_first = "\n".join(lines[1:]).strip()
    without_last = "\n".join(lines[:-1]).strip()
    without_both = "\n".join(lines[1:-1]).strip()
    return [response, response.replace("*", ""), without_first, without_last, without_both,
            without_first.replace("*", ""), without_last.replace("*", ""), without_both.replace("*", "")]


def follows(check: Check, text: str) -> bool:
    return bool(text.strip()) and bool(check(text))


def score_response(checks: Sequence[Check], response: str) -> tuple[list[bool], list[bool]]:
    """(strict, loose) verdict per instruction."""
    strict = [follows(check, response) for check in checks]
    variants = loose_variants(response)
    loose = [any(follows(check, text) for text in variants) for check in checks]
    return strict, loose


@dataclass
class Tally:
    """Counts behind the four accuracies of one group of prompts (a language, all, or one instruction id)."""

    prompts: int = 0
    prompts_strict: int = 0
    prompts_loose: int = 0
    instructions: int = 0
    instructions_strict: int = 0
    instructions_loose: int = 0
    failed: int = 0

    def add(self, strict: Sequence[bool], loose: Sequence[bool]) -> None:
        self.prompts += 1
        self.prompts_strict += all(strict)
        self.prompts_loose += all(loose)
        self.instructions += len(strict)
        self.instructions_strict += sum(strict)
        self.instructions_loose += sum(loose)

    def summary(self) -> dict:
        return {
            "prompt_strict_acc": _ratio(self.prompts_strict, self.prompts),
            "prompt_loose_acc": _ratio(self.prompts_loose, self.prompts),
            "instruction_strict_acc": _ratio(self.instructions_strict, self.instructions),
            "instruction_loose_acc": _ratio(self.instructions_loose, self.instructions),
            "n_prompts": self.prompts,
            "n_instructions": self.instructions,
            "n_failed": self.failed,
        }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def aggregate(rows: Iterable[dict], languages: Sequence[str]) -> dict:
    """Per-language, overall (micro-average over prompts and over instructions) and per-instruction-id numbers.

    Rows are scores.jsonl rows; failed generations are counted in `n_failed` and scored nowhere.
    """
    per_language = {language: Tally() for language in languages}
    overall, per_instruction = Tally(), {}
    for row in rows:
        tally = per_language[row["language"]]
        if row["failed"]:
            tally.failed += 1
            overall.failed += 1
            continue
        tally.add(row["strict"], row["loose"])
        overall.add(row["strict"], row["loose"])
        for instruction_id, strict, loose in zip(row["instruction_id_list"], row["strict"], row["loose"]):
            per_instruction.setdefault(instruction_id, Tally()).add([strict], [loose])
    return {
        "languages": list(languages),
        "per_language": {language: tally.summary() for language, tally in per_language.items()},
        "all": overall.summary(),
        "per_instruction": {
            instruction_id: {"n": t.instructions, "strict_acc": _ratio(t.instructions_strict, t.instructions),
                             "loose_acc": _ratio(t.instructions_loose, t.instructions)}
            for instruction_id, t in sorted(per_instruction.items())
        },
    }
