"""Progress of long stages: plain lines (start, every ~10%, end) in logs, a live bar on a terminal."""

from __future__ import annotations

import io
import re

import pytest

from xlpo.clients.chat import ChatReply, ChatRequest
from xlpo.clients.stage import run_requests
from xlpo.errors import UserError
from xlpo.progress import Progress, clock, rate_text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv("XLPO_PROGRESS", raising=False)


def test_a_log_gets_a_line_at_the_start_every_tenth_and_the_end():
    out = io.StringIO()
    with Progress("train demo", 100, "steps", stream=out) as p:
        for step in range(100):
            p.advance(1, info=f"loss {1 / (step + 1):.3f}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # start, 10% ... 90%, done
    assert lines[0] == "train demo: 100 steps"
    assert [re.search(r": (\d+)/100 steps \((\d+)%\)", line).groups() for line in lines[1:-1]] == \
        [(str(k), str(k)) for k in range(10, 100, 10)]
    assert all("steps/s" in line and "ETA " in line and "| loss" in line for line in lines[1:-1])
    assert re.match(r"train demo: done at 100/100 steps in \d+:\d\d:\d\d \(.* steps/s\) \| loss 0\.010$", lines[-1])


def test_uneven_advances_print_one_line_per_tenth_crossed_and_a_resumed_start_counts_as_done():
    out = io.StringIO()
    with Progress("score base", 40, "pairs", start=8, stream=out) as p:
        for _ in range(4):
            p.advance(8)
    lines = out.getvalue().splitlines()
    assert lines[0] == "score base: 40 pairs (8 done before)"
    # 8 -> 16 (40%), 24 (60%), 32 (80%), 40 (end): each crossing of a tenth prints once
    assert [re.search(r"(\d+)/40", line).group(1) for line in lines[1:]] == ["16", "24", "32", "40"]
    assert lines[-1].startswith("score base: done at 40/40 pairs")


def test_a_stage_that_stops_early_says_so():
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with Progress("train x", 10, stream=out) as p:
            p.advance(3)
            raise RuntimeError("boom")
    assert out.getvalue().splitlines()[-1].startswith("train x: stopped at 3/10 steps")


def test_a_terminal_gets_a_live_bar_with_count_rate_and_eta():
    out = Terminal()
    with Progress("train demo", 20, "steps", stream=out) as p:
        for _ in range(20):
            p.advance(1, info="loss 0.5000")
    text = out.getvalue()
    assert "\x1b[" in text and "━" in text  # drawn in place with escape codes: a rich bar
    assert "train demo" in text and "20/20" in text and "steps/s" in text and "loss 0.5000" in text
    assert "done at" not in text  # no log lines on a terminal


def test_bar_false_gives_lines_on_a_terminal_and_the_environment_decides_when_set(monkeypatch):
    out = Terminal()
    with Progress("train a", 10, stream=out, bar=False) as p:
        p.advance(10)
    assert out.getvalue().splitlines()[0] == "train a: 10 steps" and "\x1b[" not in out.getvalue()
    monkeypatch.setenv("XLPO_PROGRESS", "off")
    quiet = Terminal()
    with Progress("train b", 10, stream=quiet) as p:
        p.advance(10)
    assert quiet.getvalue() == ""
    monkeypatch.setenv("XLPO_PROGRESS", "bar")
    forced = io.StringIO()  # not a terminal, but asked for
    with Progress("train c", 10, stream=forced) as p:
        p.advance(10)
    assert "10/10" in forced.getvalue() and "done at" not in forced.getvalue()
    monkeypatch.setenv("XLPO_PROGRESS", "sometimes")
    with pytest.raises(UserError, match="XLPO_PROGRESS: expected one of auto, bar, lines, off, got 'sometimes'"):
        Progress("train d", 10, stream=io.StringIO())


def test_a_stage_inside_another_shares_the_one_live_display():
    out = Terminal()
    with Progress("experiment", 2, "stages", stream=out) as outer:
        with Progress("train dpo", 5, stream=out) as inner:  # rich allows one live display: no LiveError
            inner.advance(5)
        outer.advance(1)
        with Progress("train capo", 5, stream=out) as inner:
            inner.advance(5)
        outer.advance(1)
    assert "train capo" in out.getvalue() and "2/2" in out.getvalue()


def test_disabled_shows_nothing_and_numbers_read_well():
    out = Terminal()
    with Progress("train", 10, enabled=False, stream=out) as p:
        p.advance(10)
    assert out.getvalue() == ""
    assert clock(3725) == "1:02:05"
    assert rate_text(2.5, "pairs") == "2.50 pairs/s" and rate_text(0.25, "steps") == "4.0 s/step"


class Echo:
    """A backend that answers each request with its last message, and reports nothing itself."""

    def describe(self):
        return {"kind": "echo"}

    def complete_many(self, requests, progress=None):
        return [ChatReply(text=r.messages[-1]["content"]) for r in requests]


def test_benchmark_stages_report_progress_per_chunk_even_when_the_backend_does_not(tmp_path, capsys):
    requests = [(f"k{i}", ChatRequest(messages=[{"role": "user", "content": f"q{i}"}])) for i in range(40)]
    replies = run_requests(tmp_path / "answers.jsonl", Echo(), requests, label="judge", chunk_size=4, echo=None)
    assert replies["k7"].text == "q7"
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "judge: 40 answers" and lines[-1].startswith("judge: done at 40/40 answers")
    assert len(lines) == 11
    run_requests(tmp_path / "answers.jsonl", Echo(), requests, label="judge", chunk_size=4, echo=None)
    assert capsys.readouterr().err == ""  # all reused: no stage to show
