"""Throughput of `xlpo serve` with 8 concurrent clients against the same requests one at a time.

The server runs in this process on loopback with the embedded model (or --model); the clients are the
official `openai` SDK. Every request is greedy with the same max_tokens, so the modes do the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import torch

from xlpo.fileio import write_json
from xlpo.generation import make_generator
from xlpo.serve.app import make_server
from xlpo.serve.run import Scheduling, build_service
from xlpo.versions import library_versions

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "Give three tips for learning a new language.",
    "Erkläre kurz, was ein Regenbogen ist.",
    "Nenne drei Vorteile des Radfahrens.",
    "Explique en deux phrases ce qu'est la photosynthèse.",
    "Donne trois idées de repas rapides.",
    "Explica brevemente qué es un volcán.",
    "Escribe un consejo para dormir mejor.",
    "用两句话解释什么是人工智能。",
    "给出三个保持健康的建议。",
    "日本の四季について短く説明してください。",
    "おすすめの本を一冊紹介してください。",
    "Write a haiku about the sea.",
    "What is the capital of Australia, and why is it not Sydney?",
    "Summarise the plot of Romeo and Juliet in one sentence.",
    "List four planets of the solar system.",
]
MODES = {
    "one_at_a_time": "one client sends every request after the previous reply (batching on, nothing to batch)",
    "concurrent": "the clients send at once, each its next request after its previous reply; batched",
    "concurrent_unbatched": "as concurrent, with --batch-size 1: the requests wait in line (the old server)",
}


class Server:
    """`xlpo serve`'s pieces on a free loopback port; counts the generate calls and their rows."""

    def __init__(self, generator, batch_size: int, max_wait: float):
        self.calls: list[int] = []
        model = generator.model
        original = model.generate

        def counting(*args, **kwargs):
            self.calls.append(int(kwargs["input_ids"].shape[0]))
            return original(*args, **kwargs)

        model.generate = counting
        self.restore = lambda: setattr(model, "generate", original)
        self.service = build_service(generator, "bench", Scheduling(batch_size, max_wait))
        self.server = make_server(self.service, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.service.engine.close()
        self.restore()


def run_mode(generator, mode: str, args) -> dict:
    """Sends every prompt once (clients x requests_per_client) and times the whole round."""
    clients = 1 if mode == "one_at_a_time" else args.clients
    server = Server(generator, 1 if mode == "concurrent_unbatched" else args.batch_size, args.batch_wait_ms / 1000)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.clients * args.requests_per_client)]
    per_client = [prompts[c::clients] for c in range(clients)]
    replies: dict[str, str] = {}
    tokens = []

    def client(own: list[str]) -> None:
        sdk = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=3600)
        for prompt in own:
            reply = sdk.chat.completions.create(model="bench", messages=[{"role": "user", "content": prompt}],
                                                max_tokens=args.max_tokens, temperature=0)
            replies[prompt] = reply.choices[0].message.content
            tokens.append(reply.usage.completion_tokens)

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, per_client))
        seconds = time.perf_counter() - start
    finally:
        server.close()
    return {"mode": mode, "clients": clients, "requests": len(prompts), "seconds": seconds,
            "completion_tokens": sum(tokens), "tokens_per_s": sum(tokens) / seconds,
            "requests_per_s": len(prompts) / seconds, "generate_calls": len(server.calls),
            "mean_rows_per_call": statistics.mean(server.calls), "replies": replies}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="model to serve (default: the embedded SmolLM2-135M)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=20.0, help="the server's default")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of every mode, interleaved")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {list(MODES)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_concurrency.json")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes) or "one_at_a_time" not in modes:
        parser.error(f"--modes must include one_at_a_time and name only {list(MODES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = make_generator(args.model, dtype=args.dtype, backend="hf")
    run_mode(generator, "concurrent", argparse.Namespace(**{**vars(args), "requests_per_client": 1, "max_tokens": 4}))
    runs = []
    for repeat in range(args.repeats):
        for mode in modes:
            run = run_mode(generator, mode, args)
            print(f"repeat {repeat + 1} {mode:22} {run['seconds']:7.1f} s  {run['tokens_per_s']:6.1f} tokens/s  "
                  f"{run['generate_calls']} generate calls", flush=True)
            runs.append({"repeat": repeat + 1, **run})
    summary = {mode: statistics.median(r["tokens_per_s"] for r in runs if r["mode"] == mode) for mode in modes}
    first = {r["mode"]: r["replies"] for r in runs if r["repeat"] == 1}
    same = {mode: sum(first[mode][p] == first["one_at_a_time"][p] for p in first[mode]) / len(first[mode])
            for mode in modes}
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "versions": {**library_versions(), "openai": openai.__version__},
        "torch_threads": torch.get_num_threads(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "modes": {m: MODES[m] for m in modes},
        "runs": [{k: v for k, v in r.items() if k != "replies"} for r in runs],
        "median_tokens_per_s": summary,
        "ratio_concurrent_vs_one_at_a_time": {m: summary[m] / summary["one_at_a_time"] for m in modes
                                              if m != "one_at_a_time"},
        "replies_identical_to_one_at_a_time": same,
    }
    write_json(args.out, result)
    for mode, ratio in result["ratio_concurrent_vs_one_at_a_time"].items():
        print(f"{mode}: {ratio:.2f}x the throughput of one at a time "
              f"({summary[mode]:.1f} vs {summary['one_at_a_time']:.1f} completion tokens/s; "
              f"{same[mode]:.0%} of replies identical)")
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
