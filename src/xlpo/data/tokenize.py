"""Turn preference records into token ids: chat formatting, EOS exactly once, BOS never doubled.

Truncation is explicit: a pair whose prompt exceeds `max_prompt_length`, or whose longest
sequence exceeds `max_length`, is skipped (or, on request, its completions are cut) and reported
by id. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from xlpo.data.records import Messages, PreferenceRecord, Text
from xlpo.errors import UserError

ChatFormat = Literal["tokenizer", "zephyr", "none"]


@dataclass(frozen=True)
class TokenizedPair:
    index: int
    id: str
    lang: str | None
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]

    @property
    def length(self) -> int:
        """Tokens of the longer of the two sequences: what a padded batch must hold."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class TokenizationReport:
    total: int = 0
    kept: int = 0
    truncated: int = 0
    identical_pairs: int = 0
    skipped: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        reasons = Counter(s["reason"].split(" (")[0] for s in self.skipped)
        return {"total": self.total, "kept": self.kept, "truncated": self.truncated,
                "identical_pairs": self.identical_pairs, "skipped": len(self.skipped),
                "skipped_by_reason": dict(reasons)}


def leading_bos(tokenizer) -> int | None:
    """The BOS id this tokenizer itself puts before a text, or None (never a None id)."""
    bos = tokenizer.bos_token_id
    return bos if bos is not None and tokenizer("a", add_special_tokens=True).input_ids[:1] == [bos] else None


def prompt_ids(tokenizer, text: str, bos: int | None) -> list[int]:
    """`text` as token ids with exactly one leading `bos` (None: none added): a chat template that
    already writes BOS keeps its own, plain text gets the one the tokenizer would add."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if bos is not None and ids[:1] != [bos]:
        ids.insert(0, bos)
    return ids


class PairTokenizer:
    """Formats and tokenizes records for one tokenizer and one chat format."""

    def __init__(self, tokenizer, chat_format: ChatFormat = "tokenizer", max_length: int = 1024,
                 max_prompt_length: int = 512, truncation: Literal["skip", "truncate"] = "skip"):
        if chat_format == "tokenizer" and not getattr(tokenizer, "chat_template", None):
            raise UserError("data.chat_format: 'tokenizer' but this tokenizer has no chat template; use 'zephyr' or 'none'")
        if tokenizer.eos_token_id is None:
            raise UserError("model: the tokenizer defines no EOS token; xlpo needs one to end completions")
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.truncation = truncation
        self.eos_id = tokenizer.eos_token_id
        self.special_ids = set(tokenizer.all_special_ids)
        self.bos_id = leading_bos(tokenizer)

    def settings(self) -> dict:
        """Everything that changes the token ids (for cache keys and run records)."""
        return {"chat_format": self.chat_format, "max_length": self.max_length,
                "max_prompt_length": self.max_prompt_length, "truncation": self.truncation,
                "tokenizer": getattr(self.tokenizer, "name_or_path", ""), "vocab": len(self.tokenizer),
                "chat_template_sha": hashlib.sha256(str(getattr(self.tokenizer, "chat_template", "")).encode()).hexdigest()[:16]}

    # -- formatting -------------------------------------------------------------------------
    def _messages(self, prompt: Text) -> Messages:
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)

    def prompt_text(self, prompt: Text) -> str:
        if self.chat_format == "none":
            if not isinstance(prompt, str):
                raise UserError("data.chat_format 'none' needs plain-string prompts, got a message list")
            return prompt
        messages = self._messages(prompt)
        if self.chat_format == "zephyr":
            eos = self.tokenizer.eos_token
            return "".join(f"<|{m['role']}|>\n{m['content']}{eos}\n" for m in messages) + "<|assistant|>\n"
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def completion_text(self, prompt: Text, prompt_text: str, completion: Text) -> str:
        content = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
        # A completion that already ends with EOS (e.g. "...<|im_end|>") must not get a second one from
        # the template or from `encode_completion`: drop the trailing EOS text (and whitespace after it).
        eos = self.tokenizer.eos_token
        while eos and content.rstrip().endswith(eos):
            content = content.rstrip()[:-len(eos)]
        if self.chat_format != "tokenizer":
            return content
        messages = self._messages(prompt) + [{"role": "assistant", "content": content}]
        full = self.tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt_text):
            raise UserError("the tokenizer's chat template renders the prompt differently with and without the "
                            "answer, so the completion cannot be located; use data.chat_format=zephyr or none")
        # Whatever the template puts after the end-of-turn token (a newline) is not part of the answer.
        return full[len(prompt_text):].rstrip()

    def encode_completion(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        # EOS exactly once: the template's own end-of-turn token counts (it may differ from EOS, e.g.
        # <end_of_turn>); without a template only EOS itself does, so "...<|endoftext|>" still gets EOS.
        ends_turn = bool(ids) and (ids[-1] == self.eos_id
                                   or (self.chat_format == "tokenizer" and ids[-1] in self.special_ids))
        if not ends_turn:
            ids.append(self.eos_id)
        return ids

    def encode_prompt(self, text: str) -> list[int]:
        return prompt_ids(self.tokenizer, text, self.bos_id)

    # -- public -----------------------------------------------------------------------------
    def encode(self, index: int, record: PreferenceRecord) -> tuple[TokenizedPair | None, str | None, bool]:
        """(pair, skip reason, truncated) for one record."""
        prompt_text = self.prompt_text(record.prompt)
        prompt_ids = self.encode_prompt(prompt_text)
        chosen = self.encode_completion(self.completion_text(record.prompt, prompt_text, record.chosen))
        rejected = self.encode_completion(self.completion_text(record.prompt, prompt_text, record.rejected))
        if len(prompt_ids) > self.max_prompt_length:
            return None, f"prompt too long ({len(prompt_ids)} > max_prompt_length {self.max_prompt_length})", False
        room = self.max_length - len(prompt_ids)
        longest = max(len(chosen), len(rejected))
        truncated = False
        if longest > room:
            if self.truncation == "skip" or room < 1:
                return None, f"sequence too long ({len(prompt_ids) + longest} > max_length {self.max_length})", False
            chosen, rejected, truncated = chosen[:room], rejected[:room], True
        pair = TokenizedPair(index=index, id=record.id, lang=record.lang, prompt_ids=tuple(prompt_ids),
                             chosen_ids=tuple(chosen), rejected_ids=tuple(rejected))
        return pair, None, truncated

    def encode_all(self, records: list[PreferenceRecord]) -> tuple[list[TokenizedPair], TokenizationReport]:
        report = TokenizationReport(total=len(records))
        pairs = []
        for i, record in enumerate(records):
            pair, reason, truncated = self.encode(i, record)
            if pair is None:
                report.skipped.append({"id": record.id, "reason": reason})
                continue
            pairs.append(pair)
            report.truncated += truncated
            report.identical_pairs += pair.chosen_ids == pair.rejected_ids
        report.kept = len(pairs)
        return pairs, report


def fingerprint(pairs: list[TokenizedPair]) -> str:
    """A hash of the exact token ids, ids and languages: equal fingerprints mean identical training inputs."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.id, p.lang, p.prompt_ids, p.chosen_ids, p.rejected_ids]).encode())
    return h.hexdigest()
