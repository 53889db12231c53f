"""Table 1 from a judge: `judge_pairs`, `table1`, and `xlpo icr stats --judge-*` on a finished run."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from test_clients_endpoint import completion, scripted  # noqa: F401 (scripted is a fixture)
from test_icr_pipeline import _config, policy_adapter  # noqa: F401 (policy_adapter is a fixture)
from xlpo.clients.chat import ChatReply
from xlpo.icr.pipeline import IterationDir, run_icr
from xlpo.icr.stats import accuracy_replicates, judge_pairs, judged_accuracy, table1


class Scripted:
    def __init__(self, answer, model="table1-judge"):
        self.answer, self.model, self.requests = answer, model, []

    def complete_many(self, requests, progress=None):
        self.requests.extend(requests)
        return [self.answer(r.messages[0]["content"]) for r in requests]

    def describe(self):
        return {"kind": "fake", "model": self.model}


REQUESTS = [{"id": f"crosslingual/p{i}", "pair_id": f"p{i}", "kind": "crosslingual", "lang": "en",
             "answer1": "chosen" if i % 2 else "rejected", "prompt": f"prompt {i}"} for i in range(4)]


def test_judge_pairs_maps_answers_back_and_counts_the_rest(tmp_path):
    replies = {"prompt 0": ChatReply("Comparison: first.\nPreferred: answer1"),  # answer1 = rejected
               "prompt 1": ChatReply("Comparison: first.\nPreferred: answer1"),  # answer1 = chosen
               "prompt 2": ChatReply("I like both."), "prompt 3": ChatReply(None, error="HTTP 503")}
    judge = Scripted(lambda prompt: replies[prompt])
    verdicts, rows = judge_pairs(REQUESTS, judge, tmp_path / "replies.jsonl", echo=None)
    assert verdicts == {"crosslingual/p0": "rejected", "crosslingual/p1": "chosen"}
    assert [r["status"] for r in rows] == ["judged", "judged", "unparseable", "failed"]
    assert judge.requests[0].temperature == 0.0 and judge.requests[0].max_tokens == 256
    same = Scripted(lambda prompt: replies[prompt])
    judge_pairs(REQUESTS, same, tmp_path / "replies.jsonl", echo=None)
    assert [r.messages[0]["content"] for r in same.requests] == ["prompt 3"]  # only the failed one is retried
    other = Scripted(lambda prompt: ChatReply("Preferred: tie"), model="another-judge")
    verdicts, _ = judge_pairs(REQUESTS, other, tmp_path / "replies.jsonl", echo=None)
    assert len(other.requests) == 4 and set(verdicts.values()) == {"tie"}  # never the first judge's replies


def test_accuracy_interval_covers_the_truth_by_simulation():
    """Stated in advance: the 95% interval of a 100-pair judged accuracy covers the true accuracy
    in 88-100% of 200 simulated judge runs (binomial SD at 95%: 1.5 points)."""
    import numpy as np

    rng = np.random.default_rng(0)
    truth = 0.66
    covered = 0
    for run in range(200):
        chosen = int(rng.binomial(100, truth))
        lo, hi = np.percentile(accuracy_replicates(chosen, 100 - chosen, 0, f"sim{run}", n_boot=1000)["accuracy"],
                               [2.5, 97.5])
        covered += lo <= truth <= hi
    assert 0.88 <= covered / 200 <= 1.0, covered


def test_table1_averages_languages_with_an_interval():
    pairs = [{"id": f"p{i}-{lang}", "lang": lang} for lang in ("en", "es") for i in range(50)]
    verdicts = {f"crosslingual/p{i}-en": "chosen" if i < 40 else "rejected" for i in range(50)}
    verdicts.update({f"crosslingual/p{i}-es": "chosen" if i < 30 else "tie" for i in range(50)})
    judged = judged_accuracy(pairs, verdicts, "crosslingual")
    stats = {lang: {"rewards": {"crosslingual": {"judge": judged[lang]}}} for lang in judged}
    stats["_run"] = {}
    [row] = table1(stats, ["crosslingual", "multilingual"])
    assert row["languages"]["en"]["accuracy"] == 0.8 and row["languages"]["es"]["accuracy"] == 0.8
    assert row["avg"]["accuracy"] == pytest.approx(0.8) and row["avg"]["judged"] == 100
    lo, hi = row["avg"]["accuracy_ci"]
    en_lo, en_hi = judged["en"]["accuracy_ci"]
    assert lo < 0.8 < hi and hi - lo < en_hi - en_lo  # two languages' mean is tighter than one


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir, policy_adapter, shared_data):  # noqa: F811
    run_dir = tmp_path_factory.mktemp("icr-judge") / "run"
    run_icr(_config(run_dir, tiny_model_dir, policy_adapter, shared_data), log=lambda _: None)
    return run_dir


def _invoke(*args):
    from xlpo.cli import _register, app

    _register()
    return CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)


def test_icr_stats_with_an_endpoint_judge_reports_table1(finished_run, tmp_path, scripted):  # noqa: F811
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    server = scripted(default=completion("Comparison: the first is better.\nPreferred: answer1"))
    result = _invoke("icr", "stats", run_dir, "--judge-url", server.url, "--judge-model", "judge-1",
                     "--no-judge-cache")
    assert result.exit_code == 0, result.output
    it = IterationDir(run_dir, 1)
    requests = [json.loads(line) for line in (it.judge / "requests.jsonl").read_text().splitlines()]
    labels = [json.loads(line) for line in (it.judge / "labels.jsonl").read_text().splitlines()]
    assert len(server.requests) == len(requests) == len(labels) > 0
    assert all(lab["preferred"] == req["answer1"] for lab, req in zip(labels, requests))  # "answer1" always wins
    stats = json.loads(it.stats.read_text())
    judged = [stats[lang]["rewards"]["crosslingual"]["judge"] for lang in ("en", "es")]
    assert sum(j["judged"] for j in judged) == len(requests) and all(j["accuracy_ci"] for j in judged)
    assert "judged pair accuracy" in result.output and f"judged {len(requests)}, unparseable 0" in result.output
    # A rerun asks nothing again.
    assert _invoke("icr", "stats", run_dir, "--judge-url", server.url, "--judge-model", "judge-1",
                   "--no-judge-cache").exit_code == 0
    assert len(server.requests) == len(requests)


def test_icr_stats_with_a_judge_that_fails_every_request_says_so_and_exits_1(finished_run, tmp_path, scripted):  # noqa: F811
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    server = scripted(default=(404, {"error": {"message": "The model `judge-1` does not exist"}}, {}))
    result = _invoke("icr", "stats", run_dir, "--judge-url", server.url, "--judge-model", "judge-1", "--no-judge-cache")
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"xlpo: error: judge: all {len(server.requests)} requests failed (first: HTTP 404: The model `judge-1` does "
        f"not exist); they are kept in {IterationDir(run_dir, 1).judge / 'replies.jsonl'} and a rerun asks them again")
    assert "judged pair accuracy" not in result.output


def test_icr_stats_table_counts_the_judgements_that_failed(finished_run, tmp_path, scripted):  # noqa: F811
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    asked = []

    def every_other(body):
        asked.append(body)
        if len(asked) % 2:
            return completion("Comparison: same.\nPreferred: tie")
        return 400, {"error": {"message": "context too long"}}, {}

    server = scripted(responder=every_other)
    result = _invoke("icr", "stats", run_dir, "--judge-url", server.url, "--judge-model", "judge-1", "--no-judge-cache",
                     "--judge-concurrency", "1")
    assert result.exit_code == 0, result.output
    failed = len(asked) // 2
    assert failed > 0 and f"failed {failed}" in result.output
    assert f"judge: {failed} of {len(asked)} requests failed (first: HTTP 400: context too long)" in result.output
    table = result.output[result.output.index("judged pair accuracy"):]
    [row] = [line for line in table.splitlines() if "crosslingu" in line]  # rich may cut the name to fit 80 columns
    assert [cell.strip() for cell in row.split("│")][-3:-1] == ["0", str(failed)]  # the unparseable and failed columns


def test_icr_stats_with_a_local_judge_counts_what_it_cannot_read(finished_run, tmp_path, tiny_model_dir):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    result = _invoke("icr", "stats", run_dir, "--judge-model", tiny_model_dir, "--judge-max-tokens", "4")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (IterationDir(run_dir, 1).judge / "judgments.jsonl").read_text().splitlines()]
    assert rows and {r["status"] for r in rows} == {"unparseable"}  # a random model writes no "Preferred:" line
    assert f"judged 0, unparseable {len(rows)}, failed 0" in result.output


def test_icr_stats_refuses_to_overwrite_a_configured_labels_file(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    config = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(config.replace("judge_labels: null", "judge_labels: mine.jsonl"))
    result = _invoke("icr", "stats", run_dir, "--judge-model", "embedded")
    assert result.exit_code == 2 and "stats.judge_labels names a labels file of your own" in result.output
