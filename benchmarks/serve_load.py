"""Load test of `xlpo serve`: a bounded number of clients for a bounded time against 127.0.0.1.

Starts `xlpo serve` (the embedded SmolLM2 by default) as a child process on a free loopback port, then
runs --clients threads for --duration seconds, each sending its next request when the last one ended,
in a fixed rotation of kinds: short, long (a ~330-token prompt and 64 answer tokens), streamed, streamed
and cancelled midway, over the model's context (expects 400) and a 5 MB body (the reliability issue's
request; expects 413). A client refused with 503/429 waits the Retry-After it was given (at most until
the deadline), as a well-behaved client does. Requests in flight at the deadline finish (the server's
--request-timeout bounds them); then the server must still answer, and it is stopped with Ctrl-C.

Reports p50/p99 latency per kind, throughput, answers by HTTP status, requests that got no clean
answer (connection errors, client timeouts), the first error message of each status, and the
server's resident memory: idle (after one warm-up
request) and peak (sampled every 0.2 s). Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import openai
import psutil

from xlpo.fileio import write_json
from xlpo.versions import library_versions

REPO = Path(__file__).resolve().parents[1]
SHORT = ["Give three tips for learning a new language.", "Erkläre kurz, was ein Regenbogen ist.",
         "Donne trois idées de repas rapides.", "用两句话解释什么是人工智能。"]
LONG = "Summarise the following notes in one sentence.\n" + " ".join(
    f"Note {i}: the committee met on day {i} and agreed to revisit the budget, the schedule and the venue." for i in range(12))
KINDS = {  # kind: (messages, settings, the answer expected when the server keeps up)
    "short": ([{"role": "user", "content": SHORT[0]}], {"max_tokens": 8}, "200"),
    "long": ([{"role": "user", "content": LONG}], {"max_tokens": 64}, "200"),
    "stream": ([{"role": "user", "content": SHORT[1]}], {"max_tokens": 16, "stream": True}, "200"),
    "cancelled": ([{"role": "user", "content": SHORT[2]}], {"max_tokens": 64, "stream": True}, "200 (left)"),
    "over_context": ([{"role": "user", "content": "word " * 12_000}], {"max_tokens": 16}, "400"),
    "body_5mb": ([{"role": "user", "content": "word " * 1_000_000}], {"max_tokens": 4}, "413"),
}
# Each client walks this rotation from its own starting point: mostly real work, some of every kind.
ROTATION = ["short", "stream", "long", "short", "cancelled", "over_context", "short", "stream", "body_5mb"]


class ServerProcess:
    """`xlpo serve` in a child process; its address from its first line, its memory sampled in a thread."""

    def __init__(self, args):
        command = [sys.executable, "-m", "xlpo", "serve", "--model", args.model, "--port", "0", "--served-name", "served",
                   "--batch-size", str(args.batch_size), "--max-queue", str(args.max_queue),
                   "--request-timeout", str(args.request_timeout)]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        self.url = self._address()
        self.psutil = psutil.Process(self.process.pid)
        self.peak = 0
        self.peak_load = 0.0  # the machine's highest 1-minute load average seen while sampling
        self.sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _address(self) -> str:
        for line in self.process.stderr:
            found = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
            if found:
                threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()  # drain
                return found.group(1)
        raise SystemExit(f"xlpo serve did not start (exit code {self.process.wait()})")

    def rss(self) -> int:
        return self.psutil.memory_info().rss

    def _sample(self) -> None:
        while self.sampling and self.process.poll() is None:
            try:
                self.peak = max(self.peak, self.rss())
                self.peak_load = max(self.peak_load, os.getloadavg()[0])
            except psutil.Error:
                return
            time.sleep(0.2)

    def stop(self) -> int:
        self.sampling = False
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def one_request(client: openai.OpenAI, kind: str) -> tuple[str, int, str, float]:
    """(outcome, completion tokens, error message, Retry-After seconds): outcome is the HTTP status, '200 (left)'
    for a stream left early, or the name of the error when no HTTP answer came back."""
    messages, settings, _ = KINDS[kind]
    try:
        if not settings.get("stream"):
            reply = client.chat.completions.create(model="served", messages=messages, temperature=0, **settings)
            return "200", reply.usage.completion_tokens, "", 0.0
        pieces = 0
        with client.chat.completions.create(model="served", messages=messages, temperature=0, **settings) as stream:
            for chunk in stream:
                pieces += bool(chunk.choices and chunk.choices[0].delta.content)
                if kind == "cancelled" and pieces >= 2:
                    return "200 (left)", pieces, "", 0.0
        return "200", pieces, "", 0.0
    except openai.APIStatusError as exc:
        return str(exc.status_code), 0, exc.message, float(exc.response.headers.get("retry-after", 0))
    except openai.APIConnectionError as exc:  # no HTTP answer: connection refused or reset, client timeout
        return type(exc).__name__, 0, str(exc), 0.0
    except openai.APIError as exc:  # an error event inside a stream that had started (e.g. the request timed out)
        return (f"{exc.code} (in stream)" if exc.code else type(exc).__name__), 0, exc.message, 0.0


def run_clients(url: str, args) -> list[dict]:
    rows: list[dict] = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.duration

    def client(index: int) -> None:
        sdk = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=args.client_timeout)
        step = index
        while time.monotonic() < deadline:
            kind = ROTATION[step % len(ROTATION)]
            step += 1
            start = time.monotonic()
            outcome, tokens, message, retry_after = one_request(sdk, kind)
            with lock:
                rows.append({"kind": kind, "outcome": outcome, "seconds": time.monotonic() - start, "tokens": tokens,
                             "message": message})
            time.sleep(max(0.0, min(retry_after, deadline - time.monotonic())))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rows


def summarise(rows: list[dict], wall: float) -> dict:
    by_kind = defaultdict(list)
    for row in rows:
        by_kind[row["kind"]].append(row)
    kinds = {}
    for kind, items in by_kind.items():
        seconds = np.array([r["seconds"] for r in items])
        expected = KINDS[kind][2]
        kinds[kind] = {"requests": len(items), "outcomes": dict(Counter(r["outcome"] for r in items)),
                       "as_expected": sum(r["outcome"] == expected for r in items),
                       "p50_s": float(np.percentile(seconds, 50)), "p99_s": float(np.percentile(seconds, 99))}
    seconds = np.array([r["seconds"] for r in rows])
    clean = [r for r in rows if r["outcome"].split()[0].isdigit()]  # an HTTP status, or one told inside a stream
    return {"requests": len(rows), "wall_s": wall, "requests_per_s": len(rows) / wall,
            "completion_tokens_per_s": sum(r["tokens"] for r in rows if r["outcome"] == "200") / wall,
            "p50_s": float(np.percentile(seconds, 50)), "p99_s": float(np.percentile(seconds, 99)),
            "by_status": dict(Counter(r["outcome"] for r in rows)), "no_clean_answer": len(rows) - len(clean),
            "first_message_by_status": {o: next(r["message"] for r in rows if r["outcome"] == o)[:300]
                                        for o in sorted({r["outcome"] for r in rows}) if not o.startswith("200")},
            "kinds": kinds}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds during which new requests start")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-queue", type=int, default=16,
                        help="the server's --max-queue: 32 clients against batches of 8 fill a queue of 16")
    parser.add_argument("--request-timeout", type=float, default=60.0,
                        help="the server's --request-timeout: what bounds the test's length after --duration")
    parser.add_argument("--client-timeout", type=float, default=120.0,
                        help="seconds a client waits for an answer (more than the server's timeout)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_load.json")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 0 < args.duration <= 3600:
        parser.error("--clients must be 1-256 and --duration at most an hour: a load test is bounded")
    if args.client_timeout <= args.request_timeout:
        parser.error("--client-timeout must be longer than --request-timeout: the server answers first")
    server = ServerProcess(args)
    try:
        started_rss = server.rss()
        warm = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=args.client_timeout)
        warm.chat.completions.create(model="served", messages=[{"role": "user", "content": SHORT[3]}], max_tokens=8)
        time.sleep(1.0)
        idle = server.rss()
        server.peak = idle
        load_before = os.getloadavg()
        start = time.monotonic()
        rows = run_clients(server.url, args)
        wall = time.monotonic() - start
        health = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=args.client_timeout)
        try:  # the server still answers a chat request after the load
            alive = bool(health.chat.completions.create(model="served", messages=[{"role": "user", "content": "Hi"}],
                                                        max_tokens=4).choices)
        except openai.APIError as exc:
            alive = f"no: {type(exc).__name__}: {exc}"
        after = server.rss()
    finally:
        exit_code = server.stop()
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                    "load_average_1min_max_during": server.peak_load, "nice": os.nice(0),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "versions": {**library_versions(), "openai": openai.__version__},
        "settings": {k: (os.path.relpath(v, REPO) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rotation": ROTATION,
        "summary": summarise(rows, wall),
        "memory_mb": {"started": started_rss / 2**20, "idle": idle / 2**20, "peak": server.peak / 2**20,
                      "after": after / 2**20, "peak_over_idle": server.peak / idle},
        "server_alive_after": alive, "server_exit_code_after_ctrl_c": exit_code,
    }
    write_json(args.out, result)
    s, m = result["summary"], result["memory_mb"]
    print(f"{s['requests']} requests in {s['wall_s']:.0f} s from {args.clients} clients: {s['requests_per_s']:.2f} "
          f"requests/s, {s['completion_tokens_per_s']:.1f} completion tokens/s, p50 {s['p50_s']:.1f} s, "
          f"p99 {s['p99_s']:.1f} s")
    for kind, k in s["kinds"].items():
        print(f"  {kind:13} {k['requests']:4} requests  p50 {k['p50_s']:6.2f} s  p99 {k['p99_s']:6.2f} s  {k['outcomes']}")
    print(f"by status: {s['by_status']}; without a clean answer: {s['no_clean_answer']}")
    print(f"server memory: idle {m['idle']:.0f} MB, peak {m['peak']:.0f} MB ({m['peak_over_idle']:.2f}x idle); "
          f"alive after: {alive}; exit code after Ctrl-C: {exit_code}")
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
