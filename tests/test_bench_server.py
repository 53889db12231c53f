"""`xlpo serve`: request validation, OpenAI response shape, auth, loopback default, client round trip."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from xlpo.bench.chat import ChatRequest
from xlpo.bench.client import EndpointBackend, EndpointSettings
from xlpo.bench.server import ChatService, RequestError, is_loopback, make_server
from xlpo.errors import UserError
from xlpo.generation import Completion


class FakeGenerator:
    def __init__(self):
        self.calls = []

    def generate_detailed(self, prompts, settings, progress=None):
        self.calls.append((prompts, settings))
        return [[Completion(f"answer {k}", 11, 4, "stop") for k in range(settings.n)] for _ in prompts]


def user(text="hi"):
    return [{"role": "user", "content": text}]


def test_chat_response_shape_and_settings():
    gen = FakeGenerator()
    out = ChatService(gen, "m").chat({"model": "m", "messages": user(), "max_tokens": 9, "temperature": 0.3,
                                      "top_p": 0.9, "n": 2, "seed": 5, "frequency_penalty": 0})
    assert out["object"] == "chat.completion" and out["model"] == "m" and out["id"].startswith("chatcmpl-")
    assert [c["message"] for c in out["choices"]] == [{"role": "assistant", "content": "answer 0"},
                                                      {"role": "assistant", "content": "answer 1"}]
    assert out["usage"] == {"prompt_tokens": 11, "completion_tokens": 8, "total_tokens": 19}
    settings = gen.calls[0][1]
    assert (settings.max_new_tokens, settings.temperature, settings.top_p, settings.n, settings.seed) == (9, 0.3, 0.9, 2, 5)
    assert gen.calls[0][0] == [user()]


def test_defaults_and_content_parts():
    gen = FakeGenerator()
    ChatService(gen, "m", default_max_tokens=77).chat(
        {"messages": [{"role": "system", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
                      {"role": "user", "content": "x"}], "max_completion_tokens": None})
    prompts, settings = gen.calls[0]
    assert prompts[0][0] == {"role": "system", "content": "be brief"}
    assert (settings.max_new_tokens, settings.temperature, settings.n, settings.seed) == (77, 1.0, 1, 0)


@pytest.mark.parametrize("body, message", [
    ([], "JSON object"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content must be a string"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text parts"),
    ({"messages": user() + [{"role": "assistant", "content": "x"}]}, "last message"),
    ({"messages": user(), "max_tokens": 0}, "max_tokens"),
    ({"messages": user(), "max_tokens": 5000}, "max_tokens"),
    ({"messages": user(), "max_tokens": True}, "max_tokens"),
    ({"messages": user(), "temperature": 3}, "temperature"),
    ({"messages": user(), "temperature": "hot"}, "temperature"),
    ({"messages": user(), "top_p": 0}, "top_p"),
    ({"messages": user(), "n": 100}, "n must be"),
    ({"messages": user(), "seed": 1.5}, "seed"),
    ({"messages": user(), "stream": True}, "stream"),
])
def test_invalid_requests(body, message):
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]")) as exc:
        ChatService(FakeGenerator(), "m").parse(body)
    assert exc.value.status == 400


def test_wrong_model_name_is_404():
    with pytest.raises(RequestError, match="serves 'm'") as exc:
        ChatService(FakeGenerator(), "m").parse({"model": "gpt-4o", "messages": user()})
    assert exc.value.status == 404


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")


def _serve(service, **kw):
    server = make_server(service, "127.0.0.1", 0, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def _post(url, payload, headers=None):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_errors_are_openai_shaped():
    server, url = _serve(ChatService(FakeGenerator(), "m"))
    try:
        status, body = _post(url + "/chat/completions", b"{not json")
        assert status == 400 and body["error"]["type"] == "invalid_request_error" and "JSON" in body["error"]["message"]
        status, body = _post(url + "/completions", {"prompt": "x"})
        assert status == 404
        with urllib.request.urlopen(url + "/models", timeout=10) as r:
            assert json.loads(r.read())["data"][0]["id"] == "m"
    finally:
        server.shutdown()
        server.server_close()


def test_generation_failure_is_a_500_and_the_server_survives():
    class Broken(FakeGenerator):
        def generate_detailed(self, prompts, settings, progress=None):
            if not self.calls:
                self.calls.append(1)
                raise RuntimeError("out of memory")
            return super().generate_detailed(prompts, settings)

    server, url = _serve(ChatService(Broken(), "m"))
    try:
        status, body = _post(url + "/chat/completions", {"messages": user()})
        assert status == 500 and "out of memory" in body["error"]["message"]
        status, body = _post(url + "/chat/completions", {"messages": user()})
        assert status == 200 and body["choices"][0]["message"]["content"] == "answer 0"
    finally:
        server.shutdown()
        server.server_close()


def test_api_key_required_when_configured(monkeypatch):
    monkeypatch.setenv("XLPO_SERVE_KEY", "k-123")
    server, url = _serve(ChatService(FakeGenerator(), "m"), api_key_env="XLPO_SERVE_KEY")
    try:
        assert _post(url + "/chat/completions", {"messages": user()})[0] == 401
        assert _post(url + "/chat/completions", {"messages": user()}, {"Authorization": "Bearer nope"})[0] == 401
        assert _post(url + "/chat/completions", {"messages": user()}, {"Authorization": "Bearer k-123"})[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    monkeypatch.delenv("XLPO_SERVE_KEY")
    with pytest.raises(UserError, match="XLPO_SERVE_KEY"):
        make_server(ChatService(FakeGenerator(), "m"), "127.0.0.1", 0, api_key_env="XLPO_SERVE_KEY")


def test_busy_port_is_a_user_error():
    server, _ = _serve(ChatService(FakeGenerator(), "m"))
    try:
        with pytest.raises(UserError, match="cannot listen on 127.0.0.1"):
            make_server(ChatService(FakeGenerator(), "m"), "127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_client_round_trip_on_a_real_tiny_model(tiny_model_dir):
    """The real generator behind the server, the real client in front: greedy text equals local generation."""
    from xlpo.generation import GenerationSettings, make_generator

    generator = make_generator(str(tiny_model_dir), backend="hf")
    server, url = _serve(ChatService(generator, "tiny"))
    try:
        backend = EndpointBackend(EndpointSettings(url, "tiny", max_concurrency=2))
        requests = [ChatRequest(user(t), temperature=0.0, max_tokens=6) for t in ("Hallo", "Bonjour", "Hola")]
        replies = backend.complete_many(requests)
        local = generator.generate([user(t) for t in ("Hallo", "Bonjour", "Hola")],
                                   GenerationSettings(max_new_tokens=6, temperature=0.0, batch_size=1))
        assert [r.text for r in replies] == [group[0] for group in local]
        assert all(r.usage["completion_tokens"] <= 6 for r in replies)
    finally:
        server.shutdown()
        server.server_close()
