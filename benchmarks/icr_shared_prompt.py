"""Shared-prompt vs naive scoring of N responses per prompt (ICR's reward step): responses/s and speed-up.

    .venv/bin/python benchmarks/icr_shared_prompt.py                 # embedded SmolLM2-135M, N=10
    .venv/bin/python benchmarks/icr_shared_prompt.py --model tiny    # a tiny random Llama (seconds)

Prompts are real ICR prompts (the English instruction behind the Spanish prefix, chat template
applied); responses are real Spanish text of varying length (other prompts' translations), cut to
--response-tokens at most. Both methods score the same tokens; the script checks they agree.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _model(name: str, tokenizer, dtype: str):
    from xlpo.models import load_model

    if name != "tiny":
        return load_model(name, dtype)
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_tiny_model_dir

    folder = make_tiny_model_dir(Path(tempfile.mkdtemp(prefix="xlpo-bench-")), tokenizer, layers=4, hidden=128)
    return load_model(str(folder), dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded", help="'embedded', 'tiny', or a model path")
    ap.add_argument("--prompts-dir", default=str(REPO.parent / "shared/data/icr/ultrafeedback_binarized/subset/random_1000"))
    ap.add_argument("--lang", default="es")
    ap.add_argument("--prompts", type=int, default=4, help="prompt groups to score")
    ap.add_argument("--n", type=int, default=10, help="responses per prompt")
    ap.add_argument("--response-tokens", type=int, default=128, help="longest response (tokens)")
    ap.add_argument("--batch-size", type=int, default=10, help="responses per forward (both methods)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes (the best is reported)")
    args = ap.parse_args()

    from xlpo.icr.prompts import crosslingual_instruction, load_parallel_prompts
    from xlpo.icr.response_logps import ResponseEncoder, naive_prompt_logprobs, shared_prompt_logprobs
    from xlpo.models import load_tokenizer

    tokenizer = load_tokenizer("embedded" if args.model in ("tiny", "embedded") else args.model)
    model = _model(args.model, tokenizer, args.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    encoder = ResponseEncoder(tokenizer)
    prompts = load_parallel_prompts(args.prompts_dir, ["en", args.lang], limit=args.prompts + args.n * 4)[args.lang]
    rng = random.Random(0)
    texts = [p.instruction for p in prompts[args.prompts:]]
    groups = []
    for p in prompts[:args.prompts]:
        instruction = crosslingual_instruction(p.english, args.lang)
        prompt_text = encoder.prompt_text(instruction)
        responses = []
        for _ in range(args.n):
            ids = tokenizer(" ".join(rng.sample(texts, 4)), add_special_tokens=False).input_ids
            cut = rng.randint(args.response_tokens // 2, args.response_tokens)
            responses.append(encoder.response_ids(instruction, tokenizer.decode(ids[:cut]).strip(), prompt_text))
        groups.append((encoder.prompt_ids(prompt_text), responses))
    pad = tokenizer.pad_token_id

    def run(fn):
        return [fn(model, prompt_ids, responses, pad, args.batch_size).sums for prompt_ids, responses in groups]

    def timed(fn):
        run(fn)  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            if device == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            values = run(fn)
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - tic)
        return best, values

    t_naive, naive = timed(naive_prompt_logprobs)
    t_shared, shared = timed(shared_prompt_logprobs)
    diff = max(abs(a - b) for ga, gb in zip(naive, shared) for a, b in zip(ga, gb))
    total = args.prompts * args.n
    prompt_tokens = sum(len(p) for p, _ in groups) / len(groups)
    response_tokens = sum(len(r) for _, rs in groups for r in rs) / total
    gpu = torch.cuda.get_device_name() if device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"model {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {model.dtype}) on {gpu}")
    print(f"{args.prompts} prompts x N={args.n} responses; mean prompt {prompt_tokens:.0f} tokens, "
          f"mean response {response_tokens:.0f} tokens; batch {args.batch_size}")
    print(f"naive  (prompt+response per row): {total / t_naive:8.1f} responses/s  ({t_naive:.2f} s)")
    print(f"shared (prompt forwarded once)  : {total / t_shared:8.1f} responses/s  ({t_shared:.2f} s)")
    print(f"speed-up {t_naive / t_shared:.2f}x; max |shared - naive| = {diff:.2e} nats")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
