"""Judge plumbing: top-p and top log-probs through every backend, stage reuse per backend, local judges."""

from __future__ import annotations

import pytest
import torch

from test_clients_endpoint import ask, scripted, settings  # noqa: F401 (scripted is a fixture)
from xlpo.clients import backends
from xlpo.clients.chat import ChatReply, ChatRequest, request_key
from xlpo.clients.endpoint import EndpointBackend
from xlpo.clients.local import LocalBackend
from xlpo.clients.stage import run_requests
from xlpo.errors import RequestsFailed, UserError
from xlpo.generation import GenerationSettings, make_generator


def with_logprobs(text, alternatives):
    choice = {"message": {"role": "assistant", "content": text}, "finish_reason": "length",
              "logprobs": {"content": [{"token": text, "logprob": alternatives[0][1],
                                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": [1]}
                                                         for t, lp in alternatives]}]}}
    return 200, {"choices": [choice]}, {}


def test_requests_without_the_new_fields_keep_their_hash():
    # The hash every existing cache and stage file was written with (fields: messages, temperature, max_tokens, seed).
    old = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.0, "max_tokens": 7, "seed": 3}
    request = ChatRequest(old["messages"], 0.0, 7, 3)
    assert request.to_dict() == old and request_key(request.to_dict()) == request_key(old)
    assert request_key(ChatRequest(old["messages"], 0.0, 7, 3, top_p=0.9).to_dict()) != request_key(old)


def test_endpoint_sends_top_p_and_logprobs_and_reads_them_back(scripted, tmp_path):  # noqa: F811
    server = scripted(default=with_logprobs("M", [("M", -0.2), ("m", -1.8)]))
    backend = EndpointBackend(settings(server.url, cache_dir=tmp_path))
    reply = backend.complete(ask("x", max_tokens=1, top_p=0.9, top_logprobs=5))
    assert server.requests[0] == {"model": "judge-1", "messages": [{"role": "user", "content": "x"}],
                                  "temperature": 0.0, "max_tokens": 1, "top_p": 0.9, "logprobs": True,
                                  "top_logprobs": 5}
    assert reply.top_logprobs == [{"token": "M", "logprob": -0.2}, {"token": "m", "logprob": -1.8}]
    cached = EndpointBackend(settings(server.url, cache_dir=tmp_path)).complete(ask("x", max_tokens=1, top_p=0.9,
                                                                                    top_logprobs=5))
    assert cached.cached and cached.top_logprobs == reply.top_logprobs and len(server.requests) == 1


def test_endpoint_without_logprobs_answers_with_text_only(scripted):  # noqa: F811
    server = scripted()
    reply = EndpointBackend(settings(server.url)).complete(ask("x", top_logprobs=5))
    assert reply.text == "ok" and reply.top_logprobs is None


class Named:
    def __init__(self, model, text="answer"):
        self.model, self.text, self.asked = model, text, 0

    def complete_many(self, requests, progress=None):
        self.asked += len(requests)
        return [ChatReply(self.text, top_logprobs=[{"token": "m", "logprob": -0.1}]) for _ in requests]

    def describe(self):
        return {"kind": "fake", "model": self.model, "batch_size": 8}


def test_stage_rows_are_reused_only_for_the_same_backend(tmp_path):
    path = tmp_path / "stage.jsonl"
    requests = [("a", ask("a")), ("b", ask("b"))]
    first = Named("judge-a")
    replies = run_requests(path, first, requests, echo=None)
    assert first.asked == 2 and replies["a"].top_logprobs == [{"token": "m", "logprob": -0.1}]
    same = Named("judge-a")
    same.describe = lambda: {"kind": "fake", "model": "judge-a", "batch_size": 2}  # batch size is no identity
    again = run_requests(path, same, requests, echo=None)
    assert same.asked == 0 and again["b"].top_logprobs == [{"token": "m", "logprob": -0.1}]
    other = Named("judge-b", text="other")
    replaced = run_requests(path, other, requests, echo=None)
    assert other.asked == 2 and replaced["a"].text == "other"  # never the first judge's answer


class Failing(Named):
    """Fails the requests whose text is in `failing`, answers the others."""

    def __init__(self, failing):
        super().__init__("judge-a")
        self.failing = failing

    def complete_many(self, requests, progress=None):
        self.asked += len(requests)
        return [ChatReply(None, error="HTTP 404: no such model") if r.messages[0]["content"] in self.failing
                else ChatReply("answer") for r in requests]


def test_a_stage_where_every_request_failed_stops_the_run(tmp_path):
    path = tmp_path / "stage.jsonl"
    requests = [("a", ask("a")), ("b", ask("b"))]
    with pytest.raises(RequestsFailed, match=r"^judge: all 2 requests failed \(first: HTTP 404: no such model\); "
                                             r"they are kept in .*stage.jsonl and a rerun asks them again$") as exc:
        run_requests(path, Failing({"a", "b"}), requests, label="judge", echo=None)
    assert exc.value.exit_code == 1 and path.is_file()
    said = []
    replies = run_requests(path, Failing({"b"}), requests, label="judge", echo=said.append)  # the rerun asks both
    assert [replies[k].ok for k in "ab"] == [True, False]
    assert said == ["judge: 1 of 2 requests failed (first: HTTP 404: no such model); a rerun asks them again"]


def test_local_first_token_logprobs_match_a_direct_forward_pass(tiny_model_dir):
    generator = make_generator(str(tiny_model_dir), backend="hf")
    backend = LocalBackend(generator=generator, batch_size=2)
    conversations = [[{"role": "user", "content": "Hallo"}],
                     [{"role": "system", "content": "Kurz."}, {"role": "user", "content": "Eine längere Frage hier?"}],
                     [{"role": "user", "content": "x"}]]
    got = backend.first_token_logprobs(conversations, 3)
    tok, model = generator.tokenizer, generator.model
    for messages, alternatives in zip(conversations, got):
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
        values, top = logprobs.topk(3)
        assert [a["token"] for a in alternatives] == [tok.decode([i]) for i in top.tolist()]
        assert [a["logprob"] for a in alternatives] == pytest.approx(values.tolist(), abs=1e-4)
    # Greedy one-token requests are answered from the same pass, with the most likely token as text.
    [reply] = backend.complete_many([ChatRequest(conversations[0], 0.0, 1, top_logprobs=3)])
    assert [a["token"] for a in reply.top_logprobs] == [a["token"] for a in got[0]]
    assert [a["logprob"] for a in reply.top_logprobs] == pytest.approx([a["logprob"] for a in got[0]], abs=1e-5)
    [[greedy]] = generator.generate([conversations[0]], GenerationSettings(max_new_tokens=1, temperature=0.0))
    assert reply.text == greedy  # what one greedily generated token gives
    # Longer replies are generated, and still carry the first token's alternatives.
    [long] = backend.complete_many([ChatRequest(conversations[0], 0.0, 3, top_logprobs=2)])
    assert len(long.top_logprobs) == 2 and long.usage["completion_tokens"] == 3


def test_local_backend_passes_top_p_to_generation():
    seen = []

    class Recording:
        def generate_detailed(self, prompts, settings, progress=None):
            seen.append(settings)
            from xlpo.generation import Completion

            return [[Completion("t", 1, 1, "stop")] for _ in prompts]

    backend = LocalBackend(generator=Recording())
    backend.complete_many([ChatRequest([{"role": "user", "content": "a"}], 0.6, 4, 1, top_p=0.9),
                           ChatRequest([{"role": "user", "content": "b"}], 0.6, 4, 2)])
    assert [s.top_p for s in seen] == [0.9, 1.0]
    # A generator without a Hugging Face model gives no log-probs: the reply is text only.
    [reply] = backend.complete_many([ChatRequest([{"role": "user", "content": "c"}], 0.0, 1, top_logprobs=5)])
    assert reply.text == "t" and reply.top_logprobs is None


def test_judge_backend_local_or_endpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "_LOADED", {})
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"\x02" + bytes(7) + b"{}")  # no tensors; header read
    local = backends.judge_backend(None, "embedded", adapter=tmp_path / "adapter")
    assert isinstance(local, LocalBackend) and local.describe()["adapter"] == str(tmp_path / "adapter")
    candidate = backends.candidate_backend("embedded", tmp_path / "adapter", None, None, None, 8)
    assert candidate is local  # the same model and adapter load once
    small = backends.judge_backend(None, "embedded", adapter=tmp_path / "adapter", batch_size=2)
    local._generator = sentinel = object()  # as if loaded
    assert small.batch_size == 2 and local.batch_size == 8 and small.generator is sentinel
    assert backends.candidate_backend("embedded", None, None, None, None, 8) is not local
    remote = backends.judge_backend("http://127.0.0.1:9/v1", "gpt-x", cache=tmp_path / "c")
    assert isinstance(remote, EndpointBackend) and remote.settings.cache_dir == tmp_path / "c"
    assert backends.judge_backend("http://127.0.0.1:9/v1", "gpt-x", no_cache=True).settings.cache_dir is None
    for kwargs, message in [({"url": None, "model": None}, "needs a judge"),
                            ({"url": "http://h/v1", "model": "m", "adapter": tmp_path}, "--judge-adapter applies"),
                            ({"url": None, "model": "embedded", "key_env": "K"}, "--judge-key-env applies")]:
        with pytest.raises(UserError, match=message):
            backends.judge_backend(**kwargs)
    with pytest.raises(UserError, match="--baseline-endpoint needs --baseline-endpoint-model"):
        backends.candidate_backend("embedded", None, "http://h/v1", None, None, 8, role="baseline")


def test_local_judge_weighted_preference_end_to_end(tiny_model_dir):
    """A local X-AlpacaEval judge: the model's own P(m) and P(M) become the preference."""
    from xlpo.bench.xalpacaeval import judge_request, preference_for_second

    generator = make_generator(str(tiny_model_dir), backend="hf")
    tok = generator.tokenizer
    ids = {name: tok.convert_tokens_to_ids(name) for name in ("m", "M")}
    head = generator.model.get_output_embeddings()
    bias = torch.zeros(head.weight.shape[0])
    bias[ids["M"]], bias[ids["m"]] = 30.0, 29.0  # M about e times as likely as m, both far above the rest
    head.bias = torch.nn.Parameter(bias)
    backend = LocalBackend(generator=generator, batch_size=2)
    request = judge_request("Say hi.", "Hi!", "Hello there!")
    [reply] = backend.complete_many([request])
    value, source = preference_for_second(reply)
    assert reply.text == "M" and source == "logprobs"
    text = tok.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
    with torch.no_grad():
        logits = generator.model(tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]).logits[0, -1]
    expected = torch.softmax(logits[[ids["m"], ids["M"]]], dim=0)[1].item()
    assert value == pytest.approx(expected, abs=1e-5) and 0.6 < value < 0.8
