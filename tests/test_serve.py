"""`xlpo serve`: request validation, limits (context, body, queue, timeout), OpenAI response and stream
shapes, auth, disconnects, loopback default, and the official `openai` SDK against real tiny models
(stream and not, n>1, multi-turn, errors, 8 concurrent clients)."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import torch
from jinja2 import TemplateError

from xlpo.clients.chat import ChatRequest
from xlpo.clients.endpoint import EndpointBackend, EndpointSettings
from xlpo.errors import UserError
from xlpo.generation import Completion, GenerationSettings, make_generator, render_prompt
from xlpo.serve.app import is_loopback, make_server
from xlpo.serve.engine import BatchingEngine
from xlpo.serve.protocol import RequestError
from xlpo.serve.run import Scheduling, build_service
from xlpo.serve.service import ChatService, Limits, PromptLength


class FakeGenerate:
    """Streams 'answer <k>' in two pieces per choice and records every call's requests."""

    def __init__(self, fail_first: bool = False):
        self.calls = []
        self.fail_first = fail_first

    def __call__(self, requests):
        self.calls.append(requests)
        if self.fail_first and len(self.calls) == 1:
            raise RuntimeError("out of memory")
        for request in requests:
            for k in range(request.sampling.n):
                request.on_text(k, "answer")
                request.on_text(k, f" {k}")
        return [[Completion(f"answer {k}", 11, 4, "stop") for k in range(r.sampling.n)] for r in requests]


class SlowGenerate:
    """Streams one piece every `step` seconds until `steps` pieces or until every request is cancelled;
    `started` is set when a call begins and `cancelled` records how each call ended."""

    def __init__(self, steps: int = 500, step: float = 0.02):
        self.steps, self.step = steps, step
        self.started, self.cancelled = threading.Event(), []

    def __call__(self, requests):
        self.started.set()
        for _ in range(self.steps):
            if all(r.cancelled() for r in requests):
                self.cancelled.append(True)
                return [[Completion("", 1, 0, "cancelled")] * r.sampling.n for r in requests]
            for r in requests:
                r.on_text(0, "x")
            time.sleep(self.step)
        self.cancelled.append(False)
        return [[Completion("x" * self.steps, 1, self.steps, "length")] * r.sampling.n for r in requests]


@pytest.fixture
def make_service():
    """Builds services over a fake generate; their engine threads end with the test."""
    services = []

    def make(generate, name="m", max_wait=0.0, batch_size=8, max_waiting=None, prompt_length=None,
             **limits) -> ChatService:
        engine = BatchingEngine(generate, batch_size, max_wait, max_waiting)
        services.append(ChatService(engine, name, Limits(**limits), prompt_length))
        return services[-1]

    yield make
    for service in services:
        service.engine.close()


def user(text="hi"):
    return [{"role": "user", "content": text}]


def chat(service: ChatService, body: dict) -> dict:
    async def run():
        call = service.parse(body)
        service.submit(call)
        return await service.reply(call)

    return asyncio.run(run())


def test_chat_response_shape_and_settings(make_service):
    gen = FakeGenerate()
    out = chat(make_service(gen), {"model": "m", "messages": user(), "max_tokens": 9, "temperature": 0.3,
                                  "top_p": 0.9, "n": 2, "seed": 5, "frequency_penalty": 0})
    assert out["object"] == "chat.completion" and out["model"] == "m" and out["id"].startswith("chatcmpl-")
    assert [c["message"] for c in out["choices"]] == [{"role": "assistant", "content": "answer 0"},
                                                      {"role": "assistant", "content": "answer 1"}]
    assert out["usage"] == {"prompt_tokens": 11, "completion_tokens": 8, "total_tokens": 19}
    request = gen.calls[0][0]
    assert request.sampling == type(request.sampling)(max_tokens=9, temperature=0.3, top_p=0.9, n=2, seed=5)
    assert request.messages == user()


def test_defaults_and_content_parts(make_service):
    gen = FakeGenerate()
    chat(make_service(gen, default_max_tokens=77),
         {"messages": [{"role": "system", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
                      {"role": "user", "content": "x"}], "max_completion_tokens": None})
    request = gen.calls[0][0]
    assert request.messages[0] == {"role": "system", "content": "be brief"}
    s = request.sampling
    assert (s.max_tokens, s.temperature, s.n, s.seed) == (77, 1.0, 1, 0)


@pytest.mark.parametrize("body, message", [
    ([], "the request body must be a JSON object"),
    ({"messages": []}, "messages: List should have at least 1 item"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role: Input should be 'system', 'user' or 'assistant'"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content: content must be a string"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content: content parts must all be text parts"),
    ({"messages": user() + [{"role": "assistant", "content": "x"}]}, "the last message must be a user or system message"),
    ({"messages": user(), "max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
    ({"messages": user(), "max_tokens": 5000}, "max_tokens: at most 4096 on this server, got 5000"),
    ({"messages": user(), "max_tokens": True}, "max_tokens: Input should be a valid integer"),
    ({"messages": user(), "max_tokens": "7"}, "max_tokens: Input should be a valid integer"),
    ({"messages": user(), "temperature": 3}, "temperature: Input should be less than or equal to 2"),
    ({"messages": user(), "temperature": "hot"}, "temperature: Input should be a valid number"),
    ({"messages": user(), "top_p": 0}, "top_p: Input should be greater than 0"),
    ({"messages": user(), "n": 100}, "n: Input should be less than or equal to 16"),
    ({"messages": user(), "seed": 1.5}, "seed: Input should be a valid integer"),
    ({"messages": user(), "stream": "yes"}, "stream: Input should be a valid boolean"),
    ({"messages": user(), "stream_options": {"include_usage": True}}, "stream_options is only allowed when stream is true"),
    ({"messages": user(), "stream": True, "stream_options": []}, "stream_options: Input should be a valid dictionary"),
    ({"messages": user(), "stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage: Input should be a valid boolean"),
])
def test_invalid_requests(make_service, body, message):
    with pytest.raises(RequestError) as exc:
        make_service(FakeGenerate()).parse(body)
    assert exc.value.status == 400 and message in str(exc.value)


def test_messages_the_chat_template_rejects_are_a_400(make_service):
    def strict_template(messages, room):
        if messages[0]["role"] == "system":
            raise TemplateError("System role not supported")
        return 3, True

    service = make_service(FakeGenerate(), prompt_length=strict_template)
    with pytest.raises(RequestError, match="chat template rejects these messages: System role") as exc:
        service.parse({"messages": [{"role": "system", "content": "x"}, *user()]})
    assert exc.value.status == 400
    assert service.parse({"messages": user()}).job.messages == user()


def test_wrong_model_name_is_404(make_service):
    with pytest.raises(RequestError, match="serves 'm'") as exc:
        make_service(FakeGenerate()).parse({"model": "gpt-4o", "messages": user()})
    assert exc.value.status == 404


def test_prompt_length_counts_what_generation_tokenizes(tokenizer):
    measure = PromptLength(tokenizer)
    for messages in (user(), [{"role": "system", "content": "Sei kurz."}, *user("Wie spät ist es? 森林")]):
        ids = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
        assert measure(messages) == (len(ids), True)
    # Bytes beyond what `room` tokens could ever hold are not tokenized: a lower bound above room.
    huge = user("x" * 100_000)
    at_least, exact = measure(huge, room=100)
    assert not exact and 100 < at_least <= len(tokenizer(render_prompt(tokenizer, huge))["input_ids"])


def test_a_request_over_the_context_is_a_400_with_the_numbers(make_service, tokenizer):
    service = make_service(FakeGenerate(), prompt_length=PromptLength(tokenizer), context_length=60)
    prompt = len(tokenizer(render_prompt(tokenizer, user("hi")), add_special_tokens=False)["input_ids"])
    with pytest.raises(RequestError) as exc:
        service.parse({"messages": user("hi"), "max_tokens": 61 - prompt})
    assert exc.value.status == 400 and str(exc.value).startswith(
        f"This model's maximum context length is 60 tokens. However, you requested 61 tokens ({prompt} in the "
        f"messages, {61 - prompt} in the completion).")
    assert service.parse({"messages": user("hi"), "max_tokens": 60 - prompt}).job.prompt_tokens == prompt
    # Without max_tokens the reply gets the room left (at most the default); a prompt alone too long is refused.
    assert service.parse({"messages": user("hi")}).job.sampling.max_tokens == 60 - prompt
    with pytest.raises(RequestError, match=r"you requested at least \d+ tokens \(at least \d+ in the messages"):
        service.parse({"messages": user("word " * 50_000), "max_tokens": 4})


def test_a_request_needing_more_cache_than_a_batch_holds_is_a_400(make_service):
    service = make_service(FakeGenerate(), max_batch_tokens=100)
    assert service.parse({"messages": user(), "max_tokens": 50, "n": 2}).job.sampling.n == 2
    assert service.parse({"messages": user(), "n": 4}).job.sampling.max_tokens == 25  # no max_tokens: what fits
    with pytest.raises(RequestError, match=r"n x \(prompt \+ max_tokens\) = 3 x \(0 \+ 50\) = 150 tokens") as exc:
        service.parse({"messages": user(), "max_tokens": 50, "n": 3})
    assert exc.value.status == 400


def test_stream_chunks_in_openai_shape(make_service):
    service = make_service(FakeGenerate())

    async def run():
        call = service.parse({"messages": user(), "n": 2, "stream": True, "stream_options": {"include_usage": True}})
        service.submit(call)
        return call, [chunk async for chunk in service.chunks(call)]

    call, chunks = asyncio.run(run())
    assert {c["id"] for c in chunks} == {call.id} and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [{"role": "assistant", "content": ""}] * 2
    text = {0: "", 1: ""}
    for c in chunks[2:-3]:
        (choice,) = c["choices"]
        assert choice["finish_reason"] is None and c["usage"] is None
        text[choice["index"]] += choice["delta"]["content"]
    assert text == {0: "answer 0", 1: "answer 1"}
    assert [(c["choices"][0]["index"], c["choices"][0]["finish_reason"], c["choices"][0]["delta"]) for c in chunks[-3:-1]] \
        == [(0, "stop", {}), (1, "stop", {})]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 11, "completion_tokens": 8,
                                                                   "total_tokens": 19}


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")


class Served:
    """A server on a free loopback port, serving in a thread; closed on exit."""

    def __init__(self, service: ChatService, **kw):
        self.service = service
        self.server = make_server(service, "127.0.0.1", 0, **kw)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=kw.pop("api_key", "unused"), max_retries=0, timeout=300, **kw)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.service.engine.close()


def _post(url, payload, headers=None, timeout=60):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_errors_are_openai_shaped(make_service):
    with Served(make_service(FakeGenerate())) as served:
        status, body = _post(served.url + "/chat/completions", b"{not json")
        assert status == 400 and body["error"]["type"] == "invalid_request_error" and "JSON" in body["error"]["message"]
        status, body = _post(served.url + "/chat/completions", {"messages": user(), "n": 99})
        assert status == 400 and body["error"]["message"] == "n: Input should be less than or equal to 16"
        status, body = _post(served.url + "/completions", {"prompt": "x"})
        assert status == 404 and body["error"]["type"] == "not_found"
        with urllib.request.urlopen(served.url + "/models", timeout=10) as r:
            assert json.loads(r.read())["data"][0]["id"] == "m"


def test_generation_failure_is_a_500_and_the_server_survives(make_service):
    with Served(make_service(FakeGenerate(fail_first=True))) as served:
        status, body = _post(served.url + "/chat/completions", {"messages": user()})
        assert status == 500 and "out of memory" in body["error"]["message"]
        status, body = _post(served.url + "/chat/completions", {"messages": user()})
        assert status == 200 and body["choices"][0]["message"]["content"] == "answer 0"


def test_a_failure_inside_a_stream_is_an_error_event_the_sdk_raises(make_service):
    with Served(make_service(FakeGenerate(fail_first=True))) as served:
        client = served.client()
        with pytest.raises(openai.APIError, match="out of memory"):
            for _ in client.chat.completions.create(model="m", messages=user(), stream=True):
                pass
        chunks = list(client.chat.completions.create(model="m", messages=user(), stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "answer 0"


def test_a_body_over_the_limit_is_a_413_and_the_server_goes_on(make_service):
    """The issue's 5 MB request: one long user message, max_tokens=4 (and the same sent in chunks)."""
    gen = FakeGenerate()
    with Served(make_service(gen), max_body_bytes=1024 * 1024) as served:
        huge = "word " * 1_000_000
        with pytest.raises(openai.APIStatusError, match="request body too large") as exc:
            served.client().chat.completions.create(model="m", messages=user(huge), max_tokens=4)
        assert exc.value.status_code == 413
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
        body = json.dumps({"messages": user(huge), "max_tokens": 4}).encode()
        connection.request("POST", "/v1/chat/completions", body=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                           headers={"Content-Type": "application/json"}, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413 and "too large" in json.loads(response.read())["error"]["message"]
        assert gen.calls == []
        assert served.client().chat.completions.create(model="m", messages=user(), max_tokens=4).choices


def test_a_full_queue_is_a_503_with_retry_after(make_service):
    gen = SlowGenerate(steps=50, step=0.02)
    with Served(make_service(gen, max_waiting=1)) as served:
        url = served.url + "/chat/completions"
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(_post, url, {"messages": user()})
            assert gen.started.wait(10)
            waiting = pool.submit(_post, url, {"messages": user()})
            deadline = time.monotonic() + 10
            while served.service.engine.queued < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            req = urllib.request.Request(url, data=json.dumps({"messages": user()}).encode(),
                                         headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(req, timeout=10)
            assert refused.value.code == 503 and int(refused.value.headers["Retry-After"]) >= 1
            assert "busy" in json.loads(refused.value.read())["error"]["message"]
            assert running.result()[0] == 200 and waiting.result()[0] == 200


def test_a_request_past_its_timeout_is_a_504_and_its_generation_stops(make_service):
    gen = SlowGenerate()
    with Served(make_service(gen, request_timeout=0.3)) as served:
        status, body = _post(served.url + "/chat/completions", {"messages": user()})
        assert status == 504 and "request timeout (0.3 s)" in body["error"]["message"]
        deadline = time.monotonic() + 10
        while not gen.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gen.cancelled == [True]


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_stops_its_generation(make_service, stream):
    gen = SlowGenerate()
    with Served(make_service(gen)) as served:
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
        connection.request("POST", "/v1/chat/completions", body=json.dumps({"messages": user(), "stream": stream}),
                           headers={"Content-Type": "application/json"})
        if stream:
            response = connection.getresponse()
            assert response.status == 200
            while b'"content": "x"' not in response.readline():  # the role chunk comes before generation starts
                pass
        assert gen.started.wait(10)
        connection.sock.shutdown(2)
        connection.close()
        deadline = time.monotonic() + 10
        while not gen.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gen.cancelled == [True]  # stopped long before its 500 pieces (10 s)


def test_api_key_required_when_configured(make_service, monkeypatch):
    monkeypatch.setenv("XLPO_SERVE_KEY", "k-123")
    with Served(make_service(FakeGenerate()), api_key_env="XLPO_SERVE_KEY") as served:
        url = served.url + "/chat/completions"
        assert _post(url, {"messages": user()})[0] == 401
        assert _post(url, {"messages": user()}, {"Authorization": "Bearer nope"})[0] == 401
        assert _post(url, {"messages": user()}, {"Authorization": "Bearer k-123"})[0] == 200
        with pytest.raises(openai.AuthenticationError):
            served.client(api_key="nope").models.list()
        assert [m.id for m in served.client(api_key="k-123").models.list()] == ["m"]
    monkeypatch.delenv("XLPO_SERVE_KEY")
    with pytest.raises(UserError, match="XLPO_SERVE_KEY"):
        make_server(make_service(FakeGenerate()), "127.0.0.1", 0, api_key_env="XLPO_SERVE_KEY")


def test_busy_port_is_a_user_error(make_service):
    with Served(make_service(FakeGenerate())) as served:
        with pytest.raises(UserError, match="cannot listen on 127.0.0.1"):
            make_server(make_service(FakeGenerate()), "127.0.0.1", served.server.server_address[1])


# ---------------------------------------------------------------- real models, official client

SCRIPT = "森林の栄養素。"  # CJK characters are split across byte-level tokens by the SmolLM2 tokenizer


@pytest.fixture(scope="module")
def scripted_model_dir(tmp_path_factory, tokenizer):
    """A Llama whose greedy reply to any chat prompt is exactly SCRIPT, then end-of-sequence.

    Attention and MLP outputs are zero, so the last hidden state is the (normalised) embedding of the last
    token; each token of the chain (the generation prompt's last token, then SCRIPT's tokens) gets its own
    embedding axis, and the output head maps that axis to the next token of the chain.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    start = tokenizer(render_prompt(tokenizer, user()), add_special_tokens=False)["input_ids"][-1]
    script = tokenizer(SCRIPT, add_special_tokens=False)["input_ids"]
    chain, targets = [start, *script], [*script, tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.fill_(1.0 if "norm" in name else 0.0)
        for axis, (token, following) in enumerate(zip(chain, targets)):
            model.model.embed_tokens.weight[token, axis] = 1.0
            model.lm_head.weight[following, axis] = 1.0
    path = tmp_path_factory.mktemp("scripted-llama")
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def serve_model(model_dir, name="tiny", batch_size=8, max_wait=0.0) -> tuple[Served, object]:
    generator = make_generator(str(model_dir), backend="hf")
    return Served(build_service(generator, name, Scheduling(batch_size, max_wait))), generator  # as `xlpo serve`


def stream_text(chunks) -> dict[int, str]:
    text: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            text[choice.index] = text.get(choice.index, "") + (choice.delta.content or "")
    return text


def test_stream_and_whole_replies_agree_and_never_end_in_half_a_character(scripted_model_dir, tokenizer):
    script = tokenizer(SCRIPT, add_special_tokens=False)["input_ids"]
    cut = next(k for k in range(len(script), 0, -1) if tokenizer.decode(script[:k]).endswith("\ufffd"))
    served, _ = serve_model(scripted_model_dir)
    with served:
        client = served.client()
        whole = client.chat.completions.create(model="tiny", messages=user(), max_tokens=64, temperature=0)
        assert whole.choices[0].message.content == SCRIPT and whole.choices[0].finish_reason == "stop"
        assert whole.usage.completion_tokens == len(script) + 1  # the end-of-sequence token counts

        chunks = list(client.chat.completions.create(model="tiny", messages=user(), max_tokens=64, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
        assert stream_text(chunks) == {0: SCRIPT}
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        counts = lambda u: (u.prompt_tokens, u.completion_tokens, u.total_tokens)  # noqa: E731
        assert chunks[-1].choices == [] and counts(chunks[-1].usage) == counts(whole.usage)

        cut_whole = client.chat.completions.create(model="tiny", messages=user(), max_tokens=cut, temperature=0)
        expected = tokenizer.decode(script[:cut]).rstrip("\ufffd")
        assert cut_whole.choices[0].message.content == expected and cut_whole.choices[0].finish_reason == "length"
        cut_chunks = list(client.chat.completions.create(model="tiny", messages=user(), max_tokens=cut, temperature=0,
                                                         stream=True, n=2))
        assert stream_text(cut_chunks) == {0: expected, 1: expected}
        assert all("\ufffd" not in (c.choices[0].delta.content or "") for c in cut_chunks if c.choices)
        finals = [(c.choices[0].index, c.choices[0].finish_reason) for c in cut_chunks if c.choices[0].finish_reason]
        assert sorted(finals) == [(0, "length"), (1, "length")]


def local_reply(generator, messages, max_tokens) -> str:
    settings = GenerationSettings(max_new_tokens=max_tokens, temperature=0.0, batch_size=1)
    return re.sub(r"[\s\ufffd]+$", "", generator.generate([messages], settings)[0][0])


def test_openai_sdk_against_a_real_tiny_model(tiny_model_dir):
    served, generator = serve_model(tiny_model_dir)
    with served:
        client = served.client()
        assert [m.id for m in client.models.list()] == ["tiny"]
        conversation = [{"role": "system", "content": "Antworte kurz."}, {"role": "user", "content": "Hallo!"},
                        {"role": "assistant", "content": "Hallo, wie geht's?"}, {"role": "user", "content": "Gut."}]
        reply = client.chat.completions.create(model="tiny", messages=conversation, max_tokens=6, temperature=0)
        assert reply.choices[0].message.content == local_reply(generator, conversation, 6)
        assert reply.usage.prompt_tokens == len(generator.tokenizer(render_prompt(generator.tokenizer, conversation),
                                                                    add_special_tokens=False)["input_ids"])
        sampled = client.chat.completions.create(model="tiny", messages=user(), max_tokens=5, n=3, seed=4)
        assert [c.index for c in sampled.choices] == [0, 1, 2]
        again = client.chat.completions.create(model="tiny", messages=user(), max_tokens=5, n=3, seed=4)
        assert [c.message.content for c in again.choices] == [c.message.content for c in sampled.choices]
        with pytest.raises(openai.BadRequestError, match="temperature"):
            client.chat.completions.create(model="tiny", messages=user(), temperature=5)
        with pytest.raises(openai.NotFoundError, match="not served here"):
            client.chat.completions.create(model="gpt-4o", messages=user())


def test_eight_concurrent_clients_share_one_generate_call(tiny_model_dir):
    served, generator = serve_model(tiny_model_dir, batch_size=8, max_wait=20.0)  # a full batch never waits
    calls = []
    generate = generator.model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return generate(*args, **kwargs)

    generator.model.generate = counting
    prompts = [f"Frage Nummer {i}: {'warum ' * i}?" for i in range(8)]
    limits = [3 + i for i in range(8)]  # each client its own max_tokens, in one call
    barrier = threading.Barrier(8)

    def ask(i):
        barrier.wait()
        stream = i % 2 == 1
        answer = served.client().chat.completions.create(model="tiny", messages=user(prompts[i]), max_tokens=limits[i],
                                                         temperature=0, stream=stream)
        return stream_text(answer)[0] if stream else answer.choices[0].message.content

    with served:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(8)))
    generator.model.generate = generate
    assert calls == [8]  # eight requests, one generate call
    assert answers == [local_reply(generator, user(p), m) for p, m in zip(prompts, limits)]


def test_endpoint_client_round_trip(tiny_model_dir):
    """xlpo's own judge client in front of the server: greedy text equals local generation."""
    served, generator = serve_model(tiny_model_dir)
    with served:
        backend = EndpointBackend(EndpointSettings(served.url, "tiny", max_concurrency=2))
        replies = backend.complete_many([ChatRequest(user(t), temperature=0.0, max_tokens=6)
                                         for t in ("Hallo", "Bonjour", "Hola")])
        assert [r.text for r in replies] == [local_reply(generator, user(t), 6) for t in ("Hallo", "Bonjour", "Hola")]
        assert all(r.usage["completion_tokens"] <= 6 for r in replies)


@pytest.mark.slow
def test_concurrency_benchmark_smoke(tiny_model_dir, tmp_path):
    """benchmarks/serve_concurrency.py still runs end to end (two clients, tiny model, one round)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_concurrency.py"
    out = tmp_path / "serve.json"
    done = subprocess.run([sys.executable, str(script), "--model", str(tiny_model_dir), "--clients", "2",
                           "--requests-per-client", "1", "--max-tokens", "3", "--repeats", "1", "--threads", "1",
                           "--modes", "one_at_a_time,concurrent", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    runs = {r["mode"]: r for r in result["runs"]}
    assert runs["one_at_a_time"]["generate_calls"] == 2 and runs["concurrent"]["requests"] == 2
    assert result["ratio_concurrent_vs_one_at_a_time"]["concurrent"] > 0
    assert result["replies_identical_to_one_at_a_time"]["concurrent"] == 1.0
    assert "concurrent: " in done.stdout and "x the throughput of one at a time" in done.stdout
