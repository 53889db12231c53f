"""Batch plans and padded tensors for preference pairs.

A plan fixes, for every optimizer step, which examples form the global batch and how they split
into per-process micro-batches; it depends only on the seed, so a resumed run and a run on a
different number of processes see the same global batches. Length grouping sorts examples of
similar length together to cut padding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

from xlpo.data.tokenize import TokenizedPair

FILLER = -1  # a slot that keeps shapes equal across processes; it carries weight 0


@dataclass
class StepPlan:
    """One optimizer step: micro-batches[process][accumulation step] -> example indices (FILLER for padding)."""

    micro_batches: list[list[list[int]]]
    real_examples: int


def plan_epoch(lengths: list[int], micro_batch_size: int, grad_accum: int, world_size: int, seed: int,
               epoch: int, group_by_length: bool = True, mega_batch_factor: int = 16) -> list[StepPlan]:
    """Shuffle, (optionally) group by length, cut into global batches, and deal them out to processes."""
    global_size = micro_batch_size * grad_accum * world_size
    order = list(range(len(lengths)))
    rng = random.Random(seed * 1_000_003 + epoch)
    rng.shuffle(order)
    if group_by_length:
        # Sort within mega-batches, then shuffle the order of global batches: little padding,
        # still a random order of lengths across steps.
        mega = global_size * mega_batch_factor
        grouped = []
        for start in range(0, len(order), mega):
            grouped.extend(sorted(order[start:start + mega], key=lambda i: -lengths[i]))
        batches = [grouped[s:s + global_size] for s in range(0, len(grouped), global_size)]
        # Only full batches are shuffled: the one partial batch (with FILLER slots) stays last.
        partial = batches.pop() if batches and len(batches[-1]) < global_size else None
        rng.shuffle(batches)
        if partial is not None:
            batches.append(partial)
    else:
        batches = [order[s:s + global_size] for s in range(0, len(order), global_size)]
    return [_deal(batch, lengths, micro_batch_size, grad_accum, world_size, group_by_length) for batch in batches]


def _deal(batch: list[int], lengths: list[int], micro: int, accum: int, world: int, by_length: bool) -> StepPlan:
    if by_length:
        batch = sorted(batch, key=lambda i: -lengths[i])
    slots = world * accum
    padded = batch + [FILLER] * (slots * micro - len(batch))
    # Consecutive (similar-length) examples share a micro-batch; micro-batch k goes to process k % world.
    chunks = [padded[k * micro:(k + 1) * micro] for k in range(slots)]
    per_process = [[chunks[a * world + p] for a in range(accum)] for p in range(world)]
    return StepPlan(micro_batches=per_process, real_examples=len(batch))


@dataclass
class PreferenceBatch:
    """2B rows: the B chosen sequences, then the B rejected ones, right-padded."""

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    ids: list[str]
    langs: list[str | None]
    indices: Tensor  # (B,) positions in the tokenized pair list (FILLER slots repeat a real example)
    weights: Tensor  # (B,) loss weight per pair; 0 for fillers

    @property
    def size(self) -> int:
        return len(self.ids)

    def to(self, device) -> "PreferenceBatch":
        return PreferenceBatch(self.input_ids.to(device), self.attention_mask.to(device),
                               self.completion_mask.to(device), self.ids, self.langs,
                               self.indices.to(device), self.weights.to(device))


def pad_sequences(prompts: list[tuple[int, ...]], completions: list[tuple[int, ...]], pad_id: int,
                  pad_to_multiple_of: int = 1):
    """Right-padded (input_ids, attention_mask, completion_mask) for prompt+completion rows."""
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    width = max(lengths)
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    n = len(prompts)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    completion = torch.zeros((n, width), dtype=torch.bool)
    for row, (p, c) in enumerate(zip(prompts, completions)):
        input_ids[row, :len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        attention[row, :len(p) + len(c)] = 1
        completion[row, len(p):len(p) + len(c)] = True
    return input_ids, attention, completion


def collate_pairs(pairs: list[TokenizedPair], slot_indices: list[int], pad_id: int, weight_per_example: float,
                  pad_to_multiple_of: int = 1) -> PreferenceBatch:
    """Build the batch for one micro-batch; FILLER slots reuse the first real pair with weight 0."""
    real = [i for i in slot_indices if i != FILLER]
    stand_in = real[0] if real else 0
    chosen_slots = [pairs[i if i != FILLER else stand_in] for i in slot_indices]
    prompts = [p.prompt_ids for p in chosen_slots]
    completions = [p.chosen_ids for p in chosen_slots] + [p.rejected_ids for p in chosen_slots]
    input_ids, attention, completion = pad_sequences(prompts + prompts, completions, pad_id, pad_to_multiple_of)
    weights = torch.tensor([0.0 if i == FILLER else weight_per_example for i in slot_indices])
    return PreferenceBatch(input_ids=input_ids, attention_mask=attention, completion_mask=completion,
                           ids=[p.id for p in chosen_slots], langs=[p.lang for p in chosen_slots],
                           indices=torch.tensor([i if i != FILLER else stand_in for i in slot_indices]), weights=weights)


def collate_mismatched(pairs: list[TokenizedPair], slot_indices: list[int], pad_id: int):
    """Rows (prompt_i, chosen_{i+1}) for KTO's KL estimate: completions paired with the wrong prompt."""
    real = [i for i in slot_indices if i != FILLER] or [0]
    rows = [pairs[i] for i in real]
    shifted = rows[1:] + rows[:1]
    if len(rows) == 1 and len(pairs) > 1:
        # A lone real example (e.g. the last partial batch) would be paired with its own answer:
        # borrow the next example's answer from the data instead.
        shifted = [pairs[(real[0] + 1) % len(pairs)]]
    return pad_sequences([r.prompt_ids for r in rows], [s.chosen_ids for s in shifted], pad_id)
