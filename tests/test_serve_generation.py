"""`xlpo serve` internals: text released without half characters, per-row sampling, one generate call per
batch, and the scheduler that forms the batches."""

from __future__ import annotations

import re
import threading
import time

import pytest
import torch

from xlpo.generation import Completion, GenerationSettings, make_generator
from xlpo.serve.engine import BatchingEngine, Failed, Finished, Job, TextPiece
from xlpo.serve.generation import BatchGenerator, IncrementalText, RowSampler, RowsRequest, Sampling


def reference_text(tokenizer, ids: list[int]) -> str:
    """The slow obvious version: decode everything, strip, and drop a trailing half character."""
    return re.sub(r"[\s\ufffd]+$", "", tokenizer.decode(ids, skip_special_tokens=True).lstrip())


@pytest.mark.parametrize("text", ["森林の栄養素。", "  Hé 日本  語 ", "\u00e9t\u00e9 \u2014 ok", "a\n\nb"])
def test_incremental_text_never_ends_in_half_a_character(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    cuts = [k for k in range(1, len(ids) + 1) if tokenizer.decode(ids[:k]).endswith("\ufffd")]
    if any("\u3000" <= c for c in text):
        assert cuts, "the test needs a multi-byte character split across tokens"
    for k in range(1, len(ids) + 1):
        stream = IncrementalText(tokenizer)
        pieces = [stream.push(t) for t in ids[:k]] + [stream.finish()]
        assert "".join(pieces) == stream.text == reference_text(tokenizer, ids[:k])
        assert not stream.text.endswith("\ufffd")
        released = ""
        for piece in pieces:  # every prefix the client has seen is final: never a half character
            released += piece
            assert not released.endswith("\ufffd") and not released[-1:].isspace()


def reference_top_p(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Slow obvious nucleus sampling: the smallest set of most likely tokens whose mass reaches top_p."""
    probs = (logits / temperature).softmax(-1).tolist()
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, mass = [], 0.0
    for i in order:
        kept.append(i)
        mass += probs[i]
        if mass >= top_p:
            break
    out = torch.zeros(len(probs), dtype=torch.float64)
    for i in kept:
        out[i] = probs[i] / mass
    return out


@pytest.mark.parametrize("temperature, top_p", [(0.7, 1.0), (1.3, 0.8), (1.0, 0.5)])
def test_row_sampler_draws_from_the_tempered_nucleus(temperature, top_p):
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.2, -1.0, -3.0]])
    sampler = RowSampler([(Sampling(8, temperature, top_p, 1, seed=3), 0)], torch.device("cpu"))
    draws = 6000
    counts = torch.zeros(6, dtype=torch.float64)
    for _ in range(draws):
        out = sampler(torch.zeros(1, 1, dtype=torch.long), logits)
        token = int(out[0].argmax())
        assert out[0, token] == 0 and torch.isinf(out[0]).sum() == 5  # only the drawn token survives
        counts[token] += 1
    expected = reference_top_p(logits[0], temperature, top_p)
    assert counts[expected == 0].sum() == 0  # never outside the nucleus
    assert torch.allclose(counts / draws, expected, atol=0.02)  # ~3 standard errors


def test_row_sampler_rows_are_independent_and_greedy_rows_pass_through():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(3, 1, dtype=torch.long)
    alone = RowSampler([(Sampling(8, 1.0, 0.9, 1, seed=7), 1)], torch.device("cpu"))
    mixed = RowSampler([(Sampling(8, 0.0), 0), (Sampling(8, 1.0, 0.9, 1, seed=7), 1), (Sampling(8, 1.0, seed=9), 0)],
                       torch.device("cpu"))
    for _ in range(20):
        a = alone(ids[:1], logits[1:2])
        m = mixed(ids, logits)
        assert torch.equal(m[0], logits[0])  # greedy row untouched
        assert int(a[0].argmax()) == int(m[1].argmax())  # same (seed, choice) draws alike, whatever its neighbours


def test_batch_generator_matches_local_generation_and_counts_one_call(tiny_model_dir):
    local = make_generator(str(tiny_model_dir), backend="hf")
    calls = []
    original = local.model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    local.model.generate = counting
    prompts = [[{"role": "user", "content": t}] for t in ("Hallo", "Bonjour tout le monde", "Hola")]
    limits = [5, 9, 3]
    batch = BatchGenerator(local.model, local.tokenizer)
    texts: dict[tuple[int, int], str] = {}
    requests = [RowsRequest(p, Sampling(max_tokens=m, n=2 if i == 1 else 1),
                            on_text=lambda c, t, i=i: texts.__setitem__((i, c), texts.get((i, c), "") + t))
                for i, (p, m) in enumerate(zip(prompts, limits))]
    out = batch(requests)
    assert calls == [4]  # three requests, four rows, one call
    local.model.generate = original
    for i, (prompt, limit) in enumerate(zip(prompts, limits)):
        alone = local.generate_detailed([prompt], GenerationSettings(max_new_tokens=limit, temperature=0.0, batch_size=1))[0][0]
        for completion in out[i]:
            assert completion.text == re.sub(r"[\s\ufffd]+$", "", alone.text)
            assert (completion.prompt_tokens, completion.completion_tokens, completion.finish_reason) == \
                (alone.prompt_tokens, alone.completion_tokens, alone.finish_reason)
        assert [texts.get((i, c), "") for c in range(len(out[i]))] == [c.text for c in out[i]]


def test_sampled_reply_does_not_depend_on_its_batch(tiny_model_dir):
    local = make_generator(str(tiny_model_dir), backend="hf")
    batch = BatchGenerator(local.model, local.tokenizer)
    target = RowsRequest([{"role": "user", "content": "Erzähl mir was"}], Sampling(6, temperature=1.0, top_p=0.95, n=2, seed=5))
    other = RowsRequest([{"role": "user", "content": "Something much longer to pad the batch with"}],
                        Sampling(4, temperature=0.8, seed=1))
    alone = batch([target])[0]
    together = batch([other, target])[1]
    assert [c.text for c in alone] == [c.text for c in together]
    assert alone[0].text != alone[1].text  # the two choices draw from different streams
    reseeded = batch([RowsRequest(target.messages, Sampling(6, temperature=1.0, top_p=0.95, n=2, seed=6))])[0]
    assert [c.text for c in reseeded] != [c.text for c in alone]


def test_cancelled_rows_stop_early(tiny_model_dir):
    local = make_generator(str(tiny_model_dir), backend="hf")
    gone = threading.Event()
    pieces = []

    def on_text(choice, text):
        pieces.append(text)
        gone.set()  # the client leaves after its first piece of text

    request = RowsRequest([{"role": "user", "content": "Hi"}], Sampling(40), on_text, gone.is_set)
    completion = BatchGenerator(local.model, local.tokenizer)([request])[0][0]
    assert completion.finish_reason == "cancelled" and completion.completion_tokens < 40


# ---------------------------------------------------------------- scheduler


class FakeGenerate:
    """Records each call's requests; streams 'x<i>' per choice and answers with a canned completion."""

    def __init__(self, fail_first: bool = False):
        self.calls: list[list[RowsRequest]] = []
        self.fail_first = fail_first

    def __call__(self, requests):
        self.calls.append(requests)
        if self.fail_first and len(self.calls) == 1:
            raise RuntimeError("out of memory")
        out = []
        for i, request in enumerate(requests):
            for choice in range(request.sampling.n):
                request.on_text(choice, f"x{choice}")
            out.append([Completion(f"x{choice}", 3, 1, "stop") for choice in range(request.sampling.n)])
        return out


def job(n=1, stream=False):
    return Job([{"role": "user", "content": "hi"}], Sampling(max_tokens=4, n=n), stream=stream)


def events(j: Job) -> list:
    out = []
    while True:
        event = j.events.get(timeout=10)
        out.append(event)
        if not isinstance(event, TextPiece):
            return out


def test_engine_batches_waiting_jobs_up_to_the_batch_size_in_rows():
    generate = FakeGenerate()
    engine = BatchingEngine(generate, batch_size=4, max_wait=0.5)
    try:
        jobs = [engine.submit(job(n)) for n in (1, 2, 1, 3, 1)]
        for j in jobs:
            assert isinstance(events(j)[-1], Finished)
    finally:
        engine.close()
    # 1+2+1 fill the first call; 3 does not fit beside them and opens the second, where 1 joins it.
    assert [[r.sampling.n for r in call] for call in generate.calls] == [[1, 2, 1], [3, 1]]


def test_engine_waits_at_most_max_wait_for_company():
    generate = FakeGenerate()
    engine = BatchingEngine(generate, batch_size=8, max_wait=1.0)
    try:
        start = time.monotonic()
        first = engine.submit(job())
        time.sleep(0.1)
        second = engine.submit(job())  # arrives within the wait: shares the call
        events(first), events(second)
        assert len(generate.calls) == 1 and len(generate.calls[0]) == 2
        assert 0.95 < time.monotonic() - start < 10  # the batch was not full: it waited the whole second
        lone = engine.submit(job())
        events(lone)
        assert len(generate.calls) == 2
    finally:
        engine.close()


def test_engine_streams_only_streaming_jobs_and_skips_jobs_whose_client_left():
    generate = FakeGenerate()
    engine = BatchingEngine(generate, batch_size=8, max_wait=0.2)
    try:
        streamed, whole, left = job(n=2, stream=True), job(), job()
        left.gone.set()
        for j in (streamed, whole, left):
            engine.submit(j)
        assert [type(e).__name__ for e in events(streamed)] == ["TextPiece", "TextPiece", "Finished"]
        assert [type(e).__name__ for e in events(whole)] == ["Finished"]
        assert len(generate.calls[0]) == 2 and left.events.empty()
    finally:
        engine.close()


def test_a_failed_call_fails_its_jobs_and_the_engine_goes_on():
    generate = FakeGenerate(fail_first=True)
    engine = BatchingEngine(generate, batch_size=8, max_wait=0.2)
    try:
        a, b = engine.submit(job()), engine.submit(job())
        outcomes = [events(a)[-1], events(b)[-1]]
        assert all(isinstance(e, Failed) and e.message == "RuntimeError: out of memory" for e in outcomes)
        c = engine.submit(job())
        assert isinstance(events(c)[-1], Finished)
    finally:
        engine.close()
