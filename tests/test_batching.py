"""Epoch plans (seeded, length-grouped, dealt to processes x accumulation steps) and padded collation."""

from __future__ import annotations

import math
import random

import pytest
import torch

from xlpo.data.batching import (FILLER, PreferenceBatch, collate_mismatched, collate_pairs, mismatched_partners,
                                 pad_sequences, plan_epoch)
from xlpo.data.tokenize import TokenizedPair

PAD = 2


def realistic_lengths(n: int, seed: int = 0) -> list[int]:
    """Log-normal token lengths (median ~120, long tail), like translation pairs in a chat template."""
    r = random.Random(seed)
    return [max(8, min(1024, int(r.lognormvariate(math.log(120), 0.6)))) for _ in range(n)]


def slots_of(step) -> list[int]:
    return [i for proc in step.micro_batches for mb in proc for i in mb]


def real_of(step) -> list[int]:
    return [i for i in slots_of(step) if i != FILLER]


def make_pair(index: int, prompt_len: int, chosen_len: int, rejected_len: int, lang: str | None = "de") -> TokenizedPair:
    # Token values encode where they come from, so a wrong layout is visible in the assertions.
    return TokenizedPair(index=index, id=f"p{index}", lang=lang,
                         prompt_ids=tuple(1000 + 100 * index + k for k in range(prompt_len)),
                         chosen_ids=tuple(5000 + 100 * index + k for k in range(chosen_len)),
                         rejected_ids=tuple(9000 + 100 * index + k for k in range(rejected_len)))


CONFIGS = [(1, 8, 1), (8, 1, 1), (4, 1, 2), (2, 2, 2), (1, 1, 8), (4, 2, 1)]  # (micro, accum, world), global 8


# --------------------------------------------------------------------------- plan shape and coverage


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("n", [1, 7, 8, 29, 64, 203])
@pytest.mark.parametrize("micro,accum,world", [(1, 8, 1), (3, 2, 2), (4, 1, 2), (2, 3, 1)])
def test_every_example_exactly_once_per_epoch(n, micro, accum, world, group):
    lengths = realistic_lengths(n, seed=n)
    global_size = micro * accum * world
    for epoch in range(2):
        plan = plan_epoch(lengths, micro, accum, world, seed=3, epoch=epoch, group_by_length=group,
                          mega_batch_factor=2)
        assert len(plan) == math.ceil(n / global_size)
        seen = [i for step in plan for i in real_of(step)]
        assert sorted(seen) == list(range(n))
        for step in plan:
            # the shape every process expects: world x accum micro-batches of exactly `micro` slots
            assert len(step.micro_batches) == world
            assert all(len(proc) == accum and all(len(mb) == micro for mb in proc) for proc in step.micro_batches)
            assert step.real_examples == len(real_of(step))


def test_empty_dataset_gives_empty_plan():
    assert plan_epoch([], 2, 2, 1, seed=0, epoch=0) == []


@pytest.mark.parametrize("group", [True, False])
def test_plan_is_deterministic_per_seed_and_epoch(group):
    lengths = realistic_lengths(300)

    def order(seed, epoch):
        return [slots_of(s) for s in plan_epoch(lengths, 4, 2, 2, seed=seed, epoch=epoch, group_by_length=group)]

    assert order(7, 0) == order(7, 0)
    assert order(7, 3) == order(7, 3)
    assert order(7, 0) != order(7, 1)
    assert order(7, 1) != order(7, 2)
    assert order(7, 0) != order(8, 0)
    # different epochs also put different examples together, not just the same batches in another order
    sets0 = {frozenset(real_of(s)) for s in plan_epoch(lengths, 4, 2, 2, 7, 0, group)}
    sets1 = {frozenset(real_of(s)) for s in plan_epoch(lengths, 4, 2, 2, 7, 1, group)}
    assert sets0 != sets1


def test_plan_does_not_depend_on_global_random_state():
    lengths = realistic_lengths(100)
    random.seed(1)
    torch.manual_seed(1)
    a = [slots_of(s) for s in plan_epoch(lengths, 2, 2, 2, 5, 0)]
    random.seed(2)
    torch.manual_seed(2)
    random.random()
    b = [slots_of(s) for s in plan_epoch(lengths, 2, 2, 2, 5, 0)]
    assert a == b


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("n", [64, 203])
def test_global_batches_equal_across_accumulation_and_processes(n, group):
    """Global batch k holds the same examples for micro 1 x accum 8, micro 8 x accum 1, micro 4 x 2 processes..."""
    lengths = realistic_lengths(n, seed=1)
    plans = {cfg: plan_epoch(lengths, *cfg, seed=11, epoch=2, group_by_length=group) for cfg in CONFIGS}
    reference = [sorted(real_of(s)) for s in plans[(1, 8, 1)]]
    for cfg, plan in plans.items():
        assert [sorted(real_of(s)) for s in plan] == reference, cfg
        assert [s.real_examples for s in plan] == [len(b) for b in reference], cfg


def test_processes_split_a_global_batch_without_overlap():
    lengths = realistic_lengths(160)
    for step in plan_epoch(lengths, 4, 2, 2, seed=0, epoch=0):
        per_process = [{i for mb in proc for i in mb if i != FILLER} for proc in step.micro_batches]
        assert per_process[0].isdisjoint(per_process[1])
        assert len(per_process[0]) == len(per_process[1]) == 8


# --------------------------------------------------------------------------- fillers


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("micro,accum,world", CONFIGS)
def test_fillers_only_in_the_last_partial_batch(micro, accum, world, group):
    n = 8 * 37 + 3  # 37 full global batches of 8, then 3 examples
    lengths = realistic_lengths(n, seed=4)
    for seed in range(4):
        plan = plan_epoch(lengths, micro, accum, world, seed=seed, epoch=0, group_by_length=group, mega_batch_factor=4)
        assert [s.real_examples for s in plan] == [8] * 37 + [3]
        assert all(FILLER not in slots_of(s) for s in plan[:-1])
        assert slots_of(plan[-1]).count(FILLER) == 5


def test_no_fillers_when_the_data_divides_evenly():
    plan = plan_epoch(realistic_lengths(96), 4, 2, 2, seed=0, epoch=0)
    assert all(FILLER not in slots_of(s) and s.real_examples == 16 for s in plan)


def test_filler_slots_have_weight_zero_and_reuse_a_real_pair():
    pairs = [make_pair(i, 2 + i, 3, 1 + i) for i in range(5)]
    plan = plan_epoch([p.length for p in pairs], 2, 2, 2, seed=0, epoch=0)  # global 8, only 5 real
    assert len(plan) == 1 and plan[0].real_examples == 5
    weight = 2 / plan[0].real_examples  # what the trainer passes: processes / real examples
    total = 0.0
    for proc in plan[0].micro_batches:
        for slots in proc:
            batch = collate_pairs(pairs, slots, PAD, weight)
            for k, slot in enumerate(slots):
                if slot == FILLER:
                    assert batch.weights[k] == 0
                    assert 0 <= int(batch.indices[k]) < len(pairs)
                else:
                    assert batch.weights[k] == pytest.approx(weight)
                    assert int(batch.indices[k]) == slot and batch.ids[k] == f"p{slot}"
            total += float(batch.weights.sum())
    # DDP averages over the 2 processes: the real examples' weights then form a mean (sum 1)
    assert total / 2 == pytest.approx(1.0)


def test_all_filler_micro_batch_is_collatable_with_zero_weight():
    pairs = [make_pair(i, 2, 2, 2) for i in range(3)]
    batch = collate_pairs(pairs, [FILLER, FILLER], PAD, 0.5)
    assert batch.weights.tolist() == [0.0, 0.0]
    assert batch.rows.input_ids.shape[0] == 4 and batch.size == 2


def test_mixed_micro_batch_stand_in_is_a_real_pair_of_that_batch():
    pairs = [make_pair(i, 2, 2, 2) for i in range(4)]
    batch = collate_pairs(pairs, [3, FILLER], PAD, 1.0)
    assert batch.indices.tolist() == [3, 3]
    assert batch.weights.tolist() == [1.0, 0.0]


# --------------------------------------------------------------------------- length grouping


def _padding(plan, lengths) -> int:
    pad = 0
    for step in plan:
        for proc in step.micro_batches:
            for mb in proc:
                real = [lengths[i] for i in mb if i != FILLER]
                pad += max(real) * len(real) - sum(real) if real else 0
    return pad


@pytest.mark.parametrize("micro,accum,world", [(4, 2, 1), (8, 1, 1), (4, 1, 2), (2, 2, 2)])
def test_length_grouping_cuts_padding(micro, accum, world):
    lengths = realistic_lengths(1000)
    for seed in range(3):
        grouped = _padding(plan_epoch(lengths, micro, accum, world, seed, 0, group_by_length=True), lengths)
        plain = _padding(plan_epoch(lengths, micro, accum, world, seed, 0, group_by_length=False), lengths)
        assert plain > 0.3 * sum(lengths) / micro  # the baseline really pads
        assert grouped < 0.25 * plain, (grouped, plain)


def test_length_grouping_cuts_padded_tokens_in_collated_batches():
    r = random.Random(5)
    pairs = []
    for i in range(240):
        prompt = max(4, int(r.lognormvariate(math.log(60), 0.5)))
        pairs.append(make_pair(i, prompt, max(2, int(r.lognormvariate(math.log(40), 0.6))),
                               max(2, int(r.lognormvariate(math.log(40), 0.6)))))
    lengths = [p.length for p in pairs]

    def padded_tokens(group):
        waste = 0
        for step in plan_epoch(lengths, 4, 2, 1, seed=0, epoch=0, group_by_length=group):
            for mb in step.micro_batches[0]:
                mask = collate_pairs(pairs, mb, PAD, 1.0).rows.attention_mask
                waste += int(mask.numel() - mask.sum())
        return waste

    grouped, plain = padded_tokens(True), padded_tokens(False)
    assert grouped < 0.6 * plain, (grouped, plain)


def test_grouped_steps_are_not_in_length_order():
    lengths = realistic_lengths(800)
    plan = plan_epoch(lengths, 4, 1, 1, seed=0, epoch=0, group_by_length=True, mega_batch_factor=4)
    longest = [max(lengths[i] for i in real_of(s)) for s in plan[:-1]]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_grouped_micro_batches_hold_similar_lengths_across_processes():
    # Within a global batch, consecutive (sorted) examples share a micro-batch.
    lengths = realistic_lengths(128)
    for step in plan_epoch(lengths, 4, 2, 2, seed=0, epoch=0, group_by_length=True):
        per_mb = [sorted(lengths[i] for i in mb) for proc in step.micro_batches for mb in proc]
        for x, a in enumerate(per_mb):
            for b in per_mb[x + 1:]:
                assert max(a) <= min(b) or max(b) <= min(a)  # ranges do not interleave


# --------------------------------------------------------------------------- collation


def test_collate_layout_masks_and_padding():
    pairs = [make_pair(0, 3, 2, 4, lang="de"), make_pair(1, 1, 3, 1, lang=None), make_pair(2, 2, 1, 1, lang="zh")]
    batch = collate_pairs(pairs, [0, 2], PAD, 0.25)
    assert isinstance(batch, PreferenceBatch)
    assert batch.size == 2 and batch.ids == ["p0", "p2"] and batch.langs == ["de", "zh"]
    assert batch.indices.tolist() == [0, 2] and batch.weights.tolist() == [0.25, 0.25]
    rows = [pairs[0].prompt_ids + pairs[0].chosen_ids, pairs[2].prompt_ids + pairs[2].chosen_ids,
            pairs[0].prompt_ids + pairs[0].rejected_ids, pairs[2].prompt_ids + pairs[2].rejected_ids]
    width = max(len(r) for r in rows)
    scored = batch.rows
    assert scored.input_ids.shape == scored.attention_mask.shape == (4, width)
    assert scored.input_ids.dtype == torch.long and scored.position_ids is None and scored.num_sequences == 4
    prompt_lens = [3, 2, 3, 2]
    for r, row in enumerate(rows):
        expected = list(row) + [PAD] * (width - len(row))
        assert scored.input_ids[r].tolist() == expected
        assert scored.attention_mask[r].tolist() == [1] * len(row) + [0] * (width - len(row))
        # Sequence r is row r: its completion tokens, each scored from the position before it.
        mine = scored.sequences == r
        assert scored.targets[mine].tolist() == list(row[prompt_lens[r]:])
        assert scored.sources[mine].tolist() == [r * width + t - 1 for t in range(prompt_lens[r], len(row))]
    assert scored.token_counts().tolist() == [2, 1, 4, 1]
    assert batch.sequence_tokens.tolist() == [3 + 3 + 2 + 4, 2 + 2 + 1 + 1]


def test_collate_pad_id_is_used_and_never_counted():
    pairs = [make_pair(0, 2, 1, 1), make_pair(1, 5, 5, 5)]
    batch = collate_pairs(pairs, [0, 1], pad_id=49151, weight_per_example=1.0)
    padded = batch.rows.attention_mask == 0
    assert padded.any()
    assert (batch.rows.input_ids[padded] == 49151).all()
    assert not padded.flatten()[batch.rows.sources + 1].any()  # no scored token is padding


def test_pad_to_multiple_of():
    ids, attention, completion = pad_sequences([(1, 2, 3)], [(4, 5, 6, 7, 8)], PAD, pad_to_multiple_of=8)
    assert ids.shape == (1, 8)
    ids, attention, completion = pad_sequences([(1, 2, 3)], [(4, 5, 6, 7, 8, 9)], PAD, pad_to_multiple_of=8)
    assert ids.shape == (1, 16) and int(attention.sum()) == 9 and int(completion.sum()) == 6
    batch = collate_pairs([make_pair(0, 3, 2, 2)], [0], PAD, 1.0, pad_to_multiple_of=8)
    assert batch.rows.input_ids.shape == (2, 8)
    batch = collate_pairs([make_pair(0, 3, 2, 2)], [0], PAD, 1.0, pad_to_multiple_of=8, share_prompt=True)
    assert batch.rows.input_ids.shape == (1, 8) and batch.rows.attention_mask.shape == (1, 1, 8, 8)


@pytest.mark.parametrize("share", [False, True])
def test_batch_to_device_keeps_everything(share):
    batch = collate_pairs([make_pair(0, 2, 2, 3), make_pair(1, 1, 1, 1)], [1, FILLER], PAD, 1.0, share_prompt=share)
    moved = batch.to("cpu")
    for name in ("indices", "weights", "sequence_tokens"):
        assert torch.equal(getattr(moved, name), getattr(batch, name))
    for name in ("input_ids", "attention_mask", "position_ids", "sources", "targets", "sequences"):
        a, b = getattr(moved.rows, name), getattr(batch.rows, name)
        assert (a is None and b is None) or torch.equal(a, b)
    assert moved.ids == batch.ids and moved.langs == batch.langs and moved.rows.num_sequences == 4


# --------------------------------------------------------------------------- KTO mismatched rows


def test_mismatched_rows_pair_prompt_i_with_chosen_of_next():
    pairs = [make_pair(i, 2 + i, 1 + i, 2) for i in range(4)]
    slots = [2, 0, 3]
    ids, attention, completion = collate_mismatched(pairs, slots, PAD)
    assert ids.shape[0] == 3
    nxt = {2: 0, 0: 3, 3: 2}  # i -> the next slot's example, wrapping around
    for r, i in enumerate(slots):
        row = pairs[i].prompt_ids + pairs[nxt[i]].chosen_ids
        assert ids[r, :len(row)].tolist() == list(row)
        assert (ids[r, len(row):] == PAD).all()
        assert int(attention[r].sum()) == len(row)
        assert ids[r][completion[r]].tolist() == list(pairs[nxt[i]].chosen_ids)
        assert nxt[i] != i  # never the example's own answer


def test_mismatched_rows_skip_fillers():
    pairs = [make_pair(i, 2, 2, 2) for i in range(3)]
    ids, attention, completion = collate_mismatched(pairs, [1, 2, FILLER, FILLER], PAD)
    assert ids.shape[0] == 2
    assert ids[0][completion[0]].tolist() == list(pairs[2].chosen_ids)
    assert ids[1][completion[1]].tolist() == list(pairs[1].chosen_ids)


def test_mismatched_row_of_a_lone_example_is_still_mismatched():
    # The last partial batch can leave one real example in a micro-batch (batch_size >= 2 is not enough).
    pairs = [make_pair(i, 2, 1 + i, 2) for i in range(5)]
    plan = plan_epoch([p.length for p in pairs], 2, 1, 1, seed=0, epoch=0)
    lone = [mb for step in plan for mb in step.micro_batches[0] if mb.count(FILLER) == 1]
    assert len(lone) == 1
    for slots in (lone[0], [4, FILLER], [4]):
        i = next(s for s in slots if s != FILLER)
        ids, attention, completion = collate_mismatched(pairs, slots, PAD)
        assert ids.shape[0] == 1
        answer = ids[0][completion[0]].tolist()
        assert ids[0, :2].tolist() == list(pairs[i].prompt_ids)
        assert answer != list(pairs[i].chosen_ids)
        assert answer in [list(p.chosen_ids) for p in pairs]


def test_global_order_is_the_same_for_every_layout_of_one_global_batch():
    """KTO's mismatched pairs are defined over the global batch: 1 x 4, 2 x 2, 1 x 2 x accum 2 and
    2 x 1 x accum 2 (processes x batch x accumulation) must see the same order and partners."""
    lengths = [3, 9, 4, 4, 7, 1, 8, 2, 5, 6, 2, 3]
    layouts = [(4, 1, 1), (2, 1, 2), (2, 2, 1), (1, 2, 2), (1, 4, 1)]
    orders = {}
    for micro, accum, world in layouts:
        plans = plan_epoch(lengths, micro, accum, world, seed=5, epoch=0)
        orders[(micro, accum, world)] = [plan.global_order() for plan in plans]
    first = orders[layouts[0]]
    assert all(sorted(step) == sorted(set(step)) and len(step) == 4 for step in first)
    assert all(o == first for o in orders.values())
    partners = mismatched_partners(first[0], len(lengths))
    assert sorted(partners) == sorted(partners.values()) == sorted(first[0])
    assert all(partners[i] != i for i in first[0])
