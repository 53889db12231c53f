"""The OpenAI-compatible client against a scripted HTTP server on loopback: retries, cache, auth, limits."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from xlpo.clients.chat import ChatRequest
from xlpo.clients.endpoint import EndpointBackend, EndpointSettings
from xlpo.errors import UserError


class Scripted:
    """A loopback server that answers each POST with the next scripted (status, body, headers)."""

    def __init__(self, script=None, default=None, delay=0.0, responder=None):
        self.script = list(script or [])
        self.responder = responder  # request body -> (status, body, headers), instead of the script
        self.default = default or (200, {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}, {})
        self.delay = delay
        self.requests: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.headers: list[dict] = []
        self.times: list[float] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.auth_headers.append(self.headers.get("Authorization"))
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    outer.times.append(time.monotonic())
                    outer.active += 1
                    outer.max_active = max(outer.max_active, outer.active)
                    if outer.responder is not None:
                        status, payload, headers = outer.responder(body)
                    else:
                        status, payload, headers = outer.script.pop(0) if outer.script else outer.default
                time.sleep(outer.delay)
                with outer.lock:
                    outer.active -= 1
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(*args, **kwargs):
        servers.append(Scripted(*args, **kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def completion(text):
    return (200, {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 1}}, {})


def settings(url, **kw):
    return EndpointSettings(base_url=url, model="judge-1", **kw)


def ask(text="hi", **kw):
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


def test_payload_and_reply(scripted):
    server = scripted([completion("hello")])
    reply = EndpointBackend(settings(server.url)).complete(ask("hi", temperature=0.0, max_tokens=7, seed=3))
    assert reply.ok and reply.text == "hello" and not reply.cached
    assert reply.usage["finish_reason"] == "stop" and reply.usage["prompt_tokens"] == 3
    assert server.requests == [{"model": "judge-1", "messages": [{"role": "user", "content": "hi"}],
                                "temperature": 0.0, "max_tokens": 7, "seed": 3}]


def test_retries_transient_failures_then_succeeds(scripted):
    server = scripted([(500, {"error": {"message": "boom"}}, {}), (429, {"error": "slow down"}, {"Retry-After": "0"}),
                       completion("fine")])
    reply = EndpointBackend(settings(server.url)).complete(ask())
    assert reply.text == "fine" and len(server.requests) == 3


def test_gives_up_and_reports_the_failure(scripted):
    server = scripted(default=(503, {"error": {"message": "overloaded"}}, {}))
    reply = EndpointBackend(settings(server.url, max_retries=2)).complete(ask())
    assert not reply.ok and reply.text is None
    assert "HTTP 503: overloaded" in reply.error and "3 attempts" in reply.error
    assert len(server.requests) == 3


def test_client_errors_are_not_retried(scripted):
    server = scripted([(400, {"error": {"message": "context too long"}}, {})])
    reply = EndpointBackend(settings(server.url)).complete(ask())
    assert reply.error == "HTTP 400: context too long" and len(server.requests) == 1


def test_malformed_reply_is_a_failure_not_a_guess(scripted):
    server = scripted([(200, {"choices": []}, {}), (200, "not json", {}),
                       (200, {"choices": [{"message": {"content": None}}]}, {})])
    backend = EndpointBackend(settings(server.url))
    replies = [backend.complete(ask(str(i))) for i in range(3)]
    assert [r.ok for r in replies] == [False, False, False]
    assert all("reply" in r.error for r in replies)


def test_connection_refused_is_reported_per_item():
    backend = EndpointBackend(settings("http://127.0.0.1:9/v1", max_retries=1))
    replies = backend.complete_many([ask("a"), ask("b")])
    assert [r.ok for r in replies] == [False, False]
    assert all(r.error == "APIConnectionError contacting http://127.0.0.1:9/v1/chat/completions (gave up after 2 "
               "attempts)" for r in replies)


def test_cache_makes_reruns_free_and_keys_the_whole_request(scripted, tmp_path):
    server = scripted(default=completion("cached answer"))
    backend = EndpointBackend(settings(server.url, cache_dir=tmp_path / "cache"))
    first = backend.complete_many([ask("a"), ask("b")])
    assert [r.cached for r in first] == [False, False] and len(server.requests) == 2
    again = EndpointBackend(settings(server.url, cache_dir=tmp_path / "cache")).complete_many([ask("a"), ask("b")])
    assert [r.text for r in again] == ["cached answer"] * 2 and all(r.cached for r in again)
    assert len(server.requests) == 2
    # Any change in the request is a different cache entry: text, temperature, seed, max tokens, model.
    for request in (ask("c"), ask("a", temperature=0.5), ask("a", seed=1), ask("a", max_tokens=5)):
        assert not backend.complete(request).cached
    other_model = EndpointBackend(EndpointSettings(server.url, "judge-2", cache_dir=tmp_path / "cache"))
    assert not other_model.complete(ask("a")).cached
    assert len(server.requests) == 7


def test_failures_are_not_cached(scripted, tmp_path):
    server = scripted([(400, {"error": "bad"}, {}), completion("second try")])
    backend = EndpointBackend(settings(server.url, cache_dir=tmp_path))
    assert not backend.complete(ask()).ok
    assert backend.complete(ask()).text == "second try"


def test_api_key_from_environment_sent_but_never_stored(scripted, tmp_path, monkeypatch):
    monkeypatch.setenv("XLPO_TEST_KEY", "sk-secret-123")
    server = scripted(default=completion("x"))
    backend = EndpointBackend(settings(server.url, api_key_env="XLPO_TEST_KEY", cache_dir=tmp_path))
    backend.complete_many([ask("a")])
    assert server.auth_headers == ["Bearer sk-secret-123"]
    stored = "".join(p.read_text() for p in tmp_path.rglob("*.json"))
    assert stored and "sk-secret-123" not in stored
    assert "sk-secret-123" not in json.dumps(backend.describe())


def test_without_a_key_no_credentials_from_the_environment_are_sent(scripted, monkeypatch):
    for name, value in (("OPENAI_API_KEY", "sk-must-not-leak"), ("OPENAI_ORG_ID", "org-x"), ("OPENAI_PROJECT_ID", "p-x")):
        monkeypatch.setenv(name, value)
    server = scripted(default=completion("x"))
    assert EndpointBackend(settings(server.url)).complete(ask()).text == "x"
    sent = server.headers[0]
    assert "authorization" not in sent and "openai-organization" not in sent and "openai-project" not in sent


def test_retries_wait_for_the_rate_limit_too(scripted):
    server = scripted([(500, {"error": {"message": "boom"}}, {}), completion("fine")])
    reply = EndpointBackend(settings(server.url, requests_per_minute=60)).complete(ask())
    # The SDK's first backoff is at most 0.5 s; 60 requests a minute start the retry a second after the first
    # try (arrivals may be a little closer: the first one also opened the connection).
    assert reply.text == "fine" and server.times[1] - server.times[0] >= 0.9


def test_missing_key_variable_is_a_user_error(monkeypatch):
    monkeypatch.delenv("XLPO_NO_SUCH_KEY", raising=False)
    with pytest.raises(UserError, match="XLPO_NO_SUCH_KEY is not set"):
        EndpointBackend(settings("http://127.0.0.1:9/v1", api_key_env="XLPO_NO_SUCH_KEY"))


def test_refused_credentials_stop_the_run(scripted, monkeypatch):
    monkeypatch.setenv("XLPO_TEST_KEY", "wrong")
    server = scripted(default=(401, {"error": {"message": "bad key"}}, {}))
    backend = EndpointBackend(settings(server.url, api_key_env="XLPO_TEST_KEY", max_concurrency=1))
    with pytest.raises(UserError, match="refused the credentials.*XLPO_TEST_KEY"):
        backend.complete_many([ask(str(i)) for i in range(5)])
    assert len(server.requests) == 1  # the first refusal stops the others from being sent


def test_concurrency_limit(scripted):
    server = scripted(delay=0.05)
    replies = EndpointBackend(settings(server.url, max_concurrency=3)).complete_many([ask(str(i)) for i in range(9)])
    assert len(replies) == 9 and 2 <= server.max_active <= 3


def test_replies_come_back_in_request_order(scripted):
    server = scripted(responder=lambda body: completion("echo " + body["messages"][0]["content"]))
    texts = [f"q{i}" for i in range(8)]
    replies = EndpointBackend(settings(server.url, max_concurrency=4)).complete_many([ask(t) for t in texts])
    assert [r.text for r in replies] == [f"echo {t}" for t in texts]


def test_rate_limit_spaces_requests(scripted):
    server = scripted()
    began = time.monotonic()
    EndpointBackend(settings(server.url, max_concurrency=4, requests_per_minute=600)).complete_many(
        [ask(str(i)) for i in range(4)])
    # 600/min: the k-th request may not start before k x 0.1 s. (Gaps between neighbours can be shorter
    # on a loaded machine: a thread woken late narrows the gap to the next one, which keeps its slot.)
    for k, arrived in enumerate(sorted(server.times)):
        assert arrived - began >= 0.1 * k - 0.005
