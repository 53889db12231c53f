"""`xlpo bench` and `xlpo serve` turn user mistakes into one line and exit 2, before loading any model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner


def _invoke(*args: str):
    from xlpo.cli import _register, app

    _register()
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("args, message", [
    (["bench", "mtbench", "--data", "{mt}", "--out", "{out}"], "needs a judge: --judge-url URL --judge-model NAME"),
    (["bench", "mtbench", "--data", "{mt}", "--out", "{out}", "--judge-url", "http://127.0.0.1:9/v1",
      "--judge-model", "j", "--languages", "xx"], "xx"),
    (["bench", "mifeval", "--data", "{mif}", "--out", "{out}", "--endpoint", "http://127.0.0.1:9/v1"],
     "--endpoint needs --endpoint-model"),
    (["bench", "mifeval", "--data", "{mif}", "--out", "{out}", "--languages", "de"], "languages must be"),
    (["bench", "mifeval", "--data", "{out}", "--out", "{out}"], "file not found"),
    (["bench", "xlsum", "--source", "{out}", "--out", "{out}"], ""),
    (["bench", "winrate", "{out}", "{out}", "--out", "{out}", "--judge-url", "http://127.0.0.1:9/v1",
      "--judge-model", "j", "--judge-key-env", "XLPO_TEST_UNSET_KEY"], "XLPO_TEST_UNSET_KEY is not set"),
    (["serve", "--api-key-env", "XLPO_TEST_UNSET_KEY"], "XLPO_TEST_UNSET_KEY"),
    (["bench", "mtbench", "--data", "{mt}", "--out", "{out}", "--judge-model", "embedded", "--judge-adapter", "{out}"],
     "out': no such folder"),
    (["bench", "mifeval", "--data", "{mif}", "--out", "{out}", "--adapter", "{mif}"], "no adapter_config.json there"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, shared_data, monkeypatch, args, message):
    monkeypatch.delenv("XLPO_TEST_UNSET_KEY", raising=False)
    paths = {"mt": str(shared_data / "mt-bench"), "mif": str(shared_data / "m-ifeval" / "data"),
             "out": str(tmp_path / "out")}
    result = _invoke(*(a.format(**paths) for a in args))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("xlpo: error: ") and message in lines[0], result.output
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("config, message", [
    ("{not json", "adapter_config.json: not valid JSON"),
    ('["a list"]', "expected a PEFT adapter config"),
    (None, "no adapter_config.json there"),
])
def test_serve_checks_the_adapter_before_loading_the_model(tmp_path, monkeypatch, config, message):
    import xlpo.generation

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the adapter was checked")

    monkeypatch.setattr(xlpo.generation, "load_model", never)
    monkeypatch.setattr(xlpo.generation, "load_tokenizer", never)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    if config is not None:
        (adapter / "adapter_config.json").write_text(config)
    result = _invoke("serve", "--adapter", str(adapter), "--port", "0")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("xlpo: error: ") and message in lines[0], result.output


def test_xalpacaeval_checks_the_baseline_before_generating_any_answer(tmp_path, monkeypatch):
    from test_bench_xalpacaeval import DATA, write_data

    import xlpo.generation

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(xlpo.generation, "load_model", never)
    monkeypatch.setattr(xlpo.generation, "load_tokenizer", never)
    data = write_data(tmp_path / "data", DATA)
    base = tmp_path / "base"
    base.mkdir()
    (base / "en.json").write_text(json.dumps([{"id": 1, "output": "x"}]))  # answers for 1 of 3 instructions
    out = tmp_path / "out"
    result = _invoke("bench", "xalpacaeval", "--data", str(data), "--out", str(out), "--languages", "en",
                     "--baseline", str(base), "--judge-model", "embedded")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no answer for en instruction id 2" in lines[0], result.output
    assert not (out / "answers.jsonl").exists()


def _two_xlsum_runs(tmp_path):
    from chat_fakes import FakeBackend
    from test_bench_winrate import FIXTURES, summariser

    from xlpo.bench.xlsum import run_xlsum

    for name, tag in (("a", "GOOD"), ("b", "BAD")):
        run_xlsum(FIXTURES, ["en"], None, tmp_path / name, FakeBackend(summariser(tag)), seed=1, echo=None)
    return tmp_path / "a", tmp_path / "b"


def test_winrate_with_a_judge_that_fails_every_request_says_so_and_exits_1(tmp_path):
    from test_clients_endpoint import Scripted

    a, b = _two_xlsum_runs(tmp_path)
    server = Scripted(default=(404, {"error": {"message": "The model `j` does not exist"}}, {}))
    try:
        result = _invoke("bench", "winrate", str(a), str(b), "--out", str(tmp_path / "out"), "--judge-url", server.url,
                         "--judge-model", "j", "--no-judge-cache")
    finally:
        server.close()
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1] == (f"xlpo: error: judge: all {len(server.requests)} requests failed (first: HTTP 404: The model "
                         f"`j` does not exist); they are kept in {tmp_path / 'out' / 'judge_requests.jsonl'} and a "
                         "rerun asks them again"), result.output
    assert len(server.requests) > 0 and not (tmp_path / "out" / "results.json").exists()


def test_winrate_with_a_judge_that_fails_some_requests_counts_them(tmp_path):
    from test_clients_endpoint import Scripted, completion

    a, b = _two_xlsum_runs(tmp_path)
    asked = []

    def every_other(body):
        asked.append(body)
        return completion("Comparison: same.\nPreferred: Answer (A)") if len(asked) % 2 else (
            400, {"error": {"message": "context too long"}}, {})

    server = Scripted(responder=every_other)
    try:
        result = _invoke("bench", "winrate", str(a), str(b), "--out", str(tmp_path / "out"), "--judge-url", server.url,
                         "--judge-model", "j", "--no-judge-cache", "--judge-concurrency", "1")
    finally:
        server.close()
    assert result.exit_code == 0, result.output
    failed = len(asked) // 2
    assert failed > 0 and f"judge: {failed} of {len(asked)} requests failed (first: HTTP 400: context too long)" \
        in result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["results"]["all"]["failed"] == failed
