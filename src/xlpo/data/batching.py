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
from xlpo.logprobs import ScoredRows, shared_prompt_unsupported

FILLER = -1  # a slot that keeps shapes equal across processes; it carries weight 0


@dataclass
class StepPlan:
    """One optimizer step: micro-batches[process][accumulation step] -> example indices (FILLER for padding)."""

    micro_batches: list[list[list[int]]]
    real_examples: int

    def global_order(self) -> list[int]:
        """The step's real examples in the order of its global batch: the same for any number of
        processes and accumulation steps that give this global batch (micro-batch k of the deal is
        process k % world, accumulation step k // world)."""
        world, accum = len(self.micro_batches), len(self.micro_batches[0])
        return [i for a in range(accum) for p in range(world) for i in self.micro_batches[p][a] if i != FILLER]


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
    """B pairs as model rows: sequences 0..B-1 are the chosen ones, B..2B-1 the rejected ones."""

    rows: ScoredRows
    ids: list[str]
    langs: list[str | None]
    indices: Tensor  # (B,) positions in the tokenized pair list (FILLER slots repeat a real example)
    weights: Tensor  # (B,) loss weight per pair; 0 for fillers
    sequence_tokens: Tensor  # (B,) tokens of the chosen plus the rejected sequence, prompt counted in each

    @property
    def size(self) -> int:
        return len(self.ids)

    def to(self, device) -> "PreferenceBatch":
        return PreferenceBatch(self.rows.to(device), self.ids, self.langs, self.indices.to(device),
                               self.weights.to(device), self.sequence_tokens.to(device))


def pad_sequences(prompts: list[tuple[int, ...]], completions: list[tuple[int, ...]], pad_id: int,
                  pad_to_multiple_of: int = 1):
    """Right-padded (input_ids, attention_mask, completion_mask) for prompt+completion rows."""
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    width = _padded_width(max(lengths), pad_to_multiple_of)
    n = len(prompts)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    completion = torch.zeros((n, width), dtype=torch.bool)
    for row, (p, c) in enumerate(zip(prompts, completions)):
        input_ids[row, :len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        attention[row, :len(p) + len(c)] = 1
        completion[row, len(p):len(p) + len(c)] = True
    return input_ids, attention, completion


def _padded_width(width: int, multiple: int) -> int:
    return -(-width // multiple) * multiple


def two_row_layout(prompts, chosen, rejected, pad_id: int, pad_to_multiple_of: int = 1) -> ScoredRows:
    """Rows prompt+chosen (B of them), then prompt+rejected: the prompt is computed twice."""
    return ScoredRows.from_completion_mask(*pad_sequences(list(prompts) + list(prompts), list(chosen) + list(rejected),
                                                          pad_id, pad_to_multiple_of))


_PROMPT, _CHOSEN, _REJECTED, _PAD = 0, 1, 2, 3


def shared_prompt_rows(prompts, chosen, rejected, pad_id: int, pad_to_multiple_of: int = 1) -> ScoredRows:
    """One row per pair, [prompt | chosen | rejected | padding], the prompt computed once.

    The attention mask lets chosen tokens see the prompt and earlier chosen tokens, rejected tokens
    the prompt and earlier rejected tokens (never the chosen ones), and the rejected tokens' positions
    continue from the prompt, so each completion is computed exactly as in its own row. The first
    rejected token is scored from the prompt's last position. Padding attends only to itself (its
    outputs are never read; a row with nothing to attend to would give NaN).
    """
    B = len(prompts)
    width = _padded_width(max(len(p) + len(c) + len(r) for p, c, r in zip(prompts, chosen, rejected)),
                          pad_to_multiple_of)
    input_ids = torch.full((B, width), pad_id, dtype=torch.long)
    positions = torch.zeros((B, width), dtype=torch.long)
    segment = torch.full((B, width), _PAD, dtype=torch.long)
    sources, targets, sequences = [], [], []
    for b, (p, c, r) in enumerate(zip(prompts, chosen, rejected)):
        P, C, R = len(p), len(c), len(r)
        input_ids[b, :P + C + R] = torch.tensor(tuple(p) + tuple(c) + tuple(r), dtype=torch.long)
        positions[b, :P + C] = torch.arange(P + C)
        positions[b, P + C:P + C + R] = torch.arange(P, P + R)
        segment[b, :P + C + R] = torch.tensor([_PROMPT] * P + [_CHOSEN] * C + [_REJECTED] * R)
        row = b * width
        # Chosen token t sits at P+t and is predicted from P+t-1; rejected token t sits at P+C+t and is
        # predicted from P+C+t-1, except its first token, predicted from the prompt's last position P-1.
        # Without a prompt a completion's first token has no position to be predicted from (as in a
        # two-row layout, where position 0 is never scored).
        first = 0 if P else 1
        chosen_from = torch.arange(P - 1 + first, P + C - 1)
        rejected_from = torch.cat([torch.tensor([P - 1]), torch.arange(P + C, P + C + R - 1)]) if P \
            else torch.arange(P + C, P + C + R - 1)
        sources += [row + chosen_from, row + rejected_from]
        targets += [torch.tensor(c[first:], dtype=torch.long), torch.tensor(r[first:], dtype=torch.long)]
        sequences += [torch.full((max(C - first, 0),), b), torch.full((max(R - first, 0),), B + b)]
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    visible = (key == _PROMPT) | (key == query)
    padding_alone = (query != _PAD) | torch.eye(width, dtype=torch.bool)
    mask = (causal & visible & padding_alone)[:, None]
    return ScoredRows(input_ids, mask, positions, torch.cat(sources), torch.cat(targets),
                      torch.cat(sequences).long(), num_sequences=2 * B)


def prompt_sharing_blocker(model, pairs: list[TokenizedPair]) -> str | None:
    """Why these pairs cannot share their prompts in one row on `model`, or None when they can."""
    # A sliding window matters when a sequence of the two-row layout (prompt + one answer) exceeds it.
    longest = max((len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs), default=0)
    return shared_prompt_unsupported(model, longest)


def collate_pairs(pairs: list[TokenizedPair], slot_indices: list[int], pad_id: int, weight_per_example: float,
                  pad_to_multiple_of: int = 1, share_prompt: bool = False) -> PreferenceBatch:
    """Build the batch for one micro-batch; FILLER slots reuse the first real pair with weight 0.

    `share_prompt` puts each pair in one row with its prompt once (`shared_prompt_rows`);
    otherwise chosen and rejected get a row each (`two_row_layout`).
    """
    real = [i for i in slot_indices if i != FILLER]
    stand_in = real[0] if real else 0
    slots = [pairs[i if i != FILLER else stand_in] for i in slot_indices]
    layout = shared_prompt_rows if share_prompt else two_row_layout
    rows = layout([p.prompt_ids for p in slots], [p.chosen_ids for p in slots], [p.rejected_ids for p in slots],
                  pad_id, pad_to_multiple_of)
    weights = torch.tensor([0.0 if i == FILLER else weight_per_example for i in slot_indices])
    tokens = torch.tensor([2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in slots])
    return PreferenceBatch(rows=rows, ids=[p.id for p in slots], langs=[p.lang for p in slots],
                           indices=torch.tensor([i if i != FILLER else stand_in for i in slot_indices]),
                           weights=weights, sequence_tokens=tokens)


def mismatched_partners(order: list[int], n_pairs: int) -> dict[int, int]:
    """KTO's mismatched pairing over one batch: example `order[j]` gets the completion of `order[j+1]`
    (wrapping around), so no example is paired with its own answer."""
    if len(order) == 1 and n_pairs > 1:
        # A lone real example (e.g. the last partial batch) borrows the next example's answer from the data.
        return {order[0]: (order[0] + 1) % n_pairs}
    return {i: order[(j + 1) % len(order)] for j, i in enumerate(order)}


def collate_mismatched(pairs: list[TokenizedPair], slot_indices: list[int], pad_id: int,
                       partners: dict[int, int] | None = None):
    """Rows (prompt_i, chosen_partner(i)) for KTO's KL estimate, for the real examples among the slots.

    `partners` (see `mismatched_partners`) is defined over the step's global batch by the trainer;
    by default the slots given are that batch.
    """
    real = [i for i in slot_indices if i != FILLER] or [0]
    partners = partners or mismatched_partners(real, len(pairs))
    return pad_sequences([pairs[i].prompt_ids for i in real], [pairs[partners[i]].chosen_ids for i in real], pad_id)
