"""xlpo against Hugging Face TRL, side by side: pairs/s, peak memory and model FLOP utilisation.

Same model, data, batch (8 pairs), LoRA (r 16, all linear layers), plain-text format and thread
count for both libraries; each run is a separate child process (so its memory is its own), runs
are alternated, and the numbers printed are ratios measured in this one script.

On the CPU both libraries compute in fp32 without gradient checkpointing and peak memory is the
process's RSS. On a CUDA GPU (`--device cuda`, the default when one is present) both compute in
bf16 (xlpo's model.dtype=auto, TRL's bf16=True), TRL otherwise keeps its defaults (gradient
checkpointing on), peak memory is torch.cuda.max_memory_allocated, and MFU is against a bf16
matmul measured on the same GPU.

    .venv/bin/pip install 'torch==2.13.0' -e '.[bench]'       # TRL 1.16
    .venv/bin/python benchmarks/vs_trl.py                       # all settings, 1 and 2 threads
    .venv/bin/python benchmarks/vs_trl.py --settings a --threads 1 --steps 2 --warmup 1   # smoke

Settings: (a) random Llama, 4 layers, hidden 256, BPE vocabulary of 8,192 trained on the data;
(b) the embedded SmolLM2-135M-Instruct; (c) random small Llama with Llama-3's vocabulary size
(128,256) on the SmolLM2 tokenizer. Methods: LoRA DPO (TRL DPOTrainer), LoRA SimPO (TRL's
CPOTrainer, loss_type simpo), and xlpo's CAPO against the same CPO/SimPO trainer (TRL's nearest
reference-free trainer). Throughput is end to end over the same pairs (tokenization and reference
log-probs included); steady-state step time is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCH = 8


# --------------------------------------------------------------------------- setup (parent)

def _pairs(n: int) -> list[dict]:
    """Real MTPE pairs (post-edit vs MT), plain strings, ~100 tokens per sequence."""
    from xlpo.data.mtpe.build import build_mtpe

    build = build_mtpe("en-de,en-zh", per_split=max(n, 8))
    rows = build.splits["train"][:n]
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "id": r["id"], "lang": r["lang"]}
            for r in rows]


def _save_random_llama(path: Path, tokenizer, vocab: int, layers: int, hidden: int, heads: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=1024,
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _bpe_tokenizer(texts: list[str], vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def prepare(workdir: Path, settings: list[str], n_pairs: int) -> dict[str, Path]:
    from xlpo.models import embedded_model_dir, load_tokenizer

    pairs = _pairs(n_pairs)
    data = workdir / "pairs.jsonl"
    data.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    models = {}
    if "a" in settings:
        texts = [t for p in _pairs(400) for t in (p["prompt"], p["chosen"], p["rejected"])]
        models["a"] = _save_random_llama(workdir / "llama-8k", _bpe_tokenizer(texts, 8192), 8192, 4, 256, 4)
    if "b" in settings:
        models["b"] = embedded_model_dir()
    if "c" in settings:
        models["c"] = _save_random_llama(workdir / "llama-128k", load_tokenizer("embedded"), 128_256, 4, 256, 4)
    return {"data": data, **models}


# --------------------------------------------------------------------------- one run (child)

def matmul_ceiling_gflops(threads: int, device: str = "cpu") -> float:
    """GFLOP/s of a large matmul (fp32 on the CPU with this many threads, bf16 on CUDA): the MFU denominator."""
    import torch

    if device == "cuda":
        return _cuda_bf16_matmul_gflops()
    a, b = torch.randn(1536, 1536), torch.randn(1536, 1536)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(5):
        tic = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tic)
    return 2 * 1536 ** 3 / best / 1e9


def _cuda_bf16_matmul_gflops(size: int = 8192, repeats: int = 10) -> float:
    """Median bf16 GFLOP/s of a size^3 matmul on random data, timed with CUDA events after warm-up."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def _model_flops(model_dir: str, tokens_per_step: float, method: str) -> float:
    """Model FLOPs per step for LoRA: forward 2NT + input-gradient backward 2NT (+ reference forward 2NT).

    T counts the tokens of the chosen and the rejected sequence with the prompt in each, whatever the
    layout: both libraries are credited with the same work (xlpo's shared prompt does less of it)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    h, layers, inter, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    kv = h * cfg.num_key_value_heads // cfg.num_attention_heads
    n = layers * (2 * h * h + 2 * h * kv + 3 * h * inter) + vocab * h  # matmul weights incl. output layer
    passes = 3 if method == "dpo" else 2
    return 2 * n * tokens_per_step * passes


def _import_everything(model_dir: str, lib: str) -> None:
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    import peft  # noqa: F401

    if lib == "trl":  # only TRL's runs need it: xlpo's run where TRL's wheel was not carried
        import trl  # noqa: F401
        import trl.experimental.cpo  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    import xlpo.train.trainer  # noqa: F401

    AutoTokenizer.from_pretrained(model_dir)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir).__class__(num_hidden_layers=1, vocab_size=8,
                                                                                      hidden_size=8, intermediate_size=8,
                                                                                      num_attention_heads=1,
                                                                                      num_key_value_heads=1))


def end_to_end_mfu(result: dict, model_dir: str) -> float:
    """Model FLOPs of the whole run over its wall time and the measured matmul ceiling. End to end,
    so a reference pass done up front (xlpo) counts exactly like one done every step (TRL)."""
    steps = result["pairs"] / BATCH
    flops = _model_flops(model_dir, result["tokens_per_step"], result["method"]) * steps
    return flops / result["total_seconds"] / (result["matmul_gflops"] * 1e9)


def steady_step_mfu(result: dict, model_dir: str) -> float:
    """Model FLOPs of the work one steady step really does over its time and the ceiling: xlpo's DPO
    step has its reference log-probs already (forward + backward), TRL's also runs the reference."""
    method = "dpo" if result["method"] == "dpo" and result["lib"] == "trl" else "simpo"  # 3 passes, else 2
    flops = _model_flops(model_dir, result["tokens_per_step"], method)
    return flops / result["steady_step_seconds"] / (result["matmul_gflops"] * 1e9)


def child(args) -> None:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines()]
    steps = args.warmup + args.steps
    rows = rows[:steps * BATCH]
    out = Path(tempfile.mkdtemp(prefix=f"bench-{args.lib}-"))
    _import_everything(args.model, args.lib)  # module import time is not training time, for either library
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.lib == "xlpo":
        step_times, tokens = _run_xlpo(args, rows, out, steps)
    else:
        step_times, tokens = _run_trl(args, rows, out, steps)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"lib": args.lib, "method": args.method, "setting": args.setting, "threads": args.threads,
              "device": args.device, "pairs": len(rows), "total_seconds": step_times.pop("total"),
              "steady_step_seconds": statistics.median(step_times["steps"][args.warmup:]),
              "peak_rss_mb": rss,
              "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else rss,
              "memory_measure": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak RSS",
              "tokens_per_step": tokens, "matmul_gflops": matmul_ceiling_gflops(args.threads, args.device),
              "layout": step_times.get("layout", "two rows")}
    result["pairs_per_second"] = result["pairs"] / result["total_seconds"]
    result["mfu"] = end_to_end_mfu(result, args.model)
    result["steady_step_mfu"] = steady_step_mfu(result, args.model)
    Path(args.result).write_text(json.dumps(result))


def _run_xlpo(args, rows, out: Path, steps: int):
    from xlpo.train.config import load_config
    from xlpo.train.trainer import train

    data = out / "pairs.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    loss = {"dpo": ["loss.name=dpo", "loss.beta=0.1"], "simpo": ["loss.name=simpo", "loss.beta=2.0", "loss.gamma=0.5"],
            "capo": ["loss.name=capo"]}[args.method]
    # fp32 on the CPU (as TRL there); dtype auto = bf16 on a GPU that supports it.
    dtype = "auto" if args.device == "cuda" else "float32"
    cfg = load_config(None, [f"model.name_or_path={args.model}", f"model.dtype={dtype}", f"data.train={data}",
                             "data.chat_format=none", "data.max_length=512", "data.max_prompt_length=256", *loss,
                             f"training.output_dir={out / 'run'}", f"training.batch_size={BATCH}",
                             f"training.max_steps={steps}", "training.learning_rate=1e-5", "training.progress=false",
                             f"reference.cache_dir={out / 'ref'}", "training.warmup_ratio=0",
                             f"training.share_prompt={args.xlpo_layout == 'shared'}"])
    tic = time.perf_counter()
    layout = train(cfg).summary["layout"]
    total = time.perf_counter() - tic
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    tokens = statistics.mean(m["tokens_per_second"] * m["step_seconds"] for m in metrics)
    return {"total": total, "steps": [m["step_seconds"] for m in metrics], "layout": layout}, tokens


def _run_trl(args, rows, out: Path, steps: int):
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.last = [], None

        def on_step_begin(self, *a, **k):
            self.last = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.last)

    timer = StepTimer()
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    common = dict(output_dir=str(out / "run"), per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=1e-5,
                  logging_steps=1, save_strategy="no", report_to=[], seed=42, max_length=512,
                  dataloader_num_workers=0)
    if args.device == "cuda":
        common.update(use_cpu=False, bf16=True)  # TRL's defaults otherwise (gradient checkpointing on)
    else:
        # TRL 1.x defaults to gradient checkpointing and bf16; match xlpo's CPU run (fp32, no
        # checkpointing) so that both do the same arithmetic on the same activations.
        common.update(use_cpu=True, gradient_checkpointing=False, bf16=False)
    tic = time.perf_counter()
    if args.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(args.model, args=DPOConfig(beta=0.1, **common), train_dataset=dataset,
                             processing_class=tokenizer, peft_config=lora, callbacks=[timer])
    else:  # simpo, and the reference-free trainer CAPO is compared with
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        trainer = CPOTrainer(args.model, args=CPOConfig(loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=0.5,
                                                        **common),
                             train_dataset=dataset, processing_class=tokenizer, peft_config=lora, callbacks=[timer])
    trainer.train()
    total = time.perf_counter() - tic
    batch = next(iter(trainer.get_train_dataloader()))
    masks = [v for k, v in batch.items() if k.endswith("attention_mask")]
    tokens = float(sum(m.sum() for m in masks)) if masks else float("nan")
    return {"total": total, "steps": timer.times}, tokens


# --------------------------------------------------------------------------- driver (parent)

PEERS = {"dpo": "TRL DPOTrainer", "simpo": "TRL CPOTrainer (simpo)", "capo": "TRL CPOTrainer (simpo)"}


def run_child(model_dir, data, lib: str, method: str, *, setting: str = "-", threads: int = 1, steps: int = 5,
              warmup: int = 1, layout: str = "shared", device: str = "cpu", timeout: float | None = None) -> dict:
    """One training run in a fresh process (its memory and imports its own); its result dict."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, __file__, "--child", "--lib", lib, "--method", method, "--setting", setting,
           "--model", str(model_dir), "--data", str(data), "--threads", str(threads),
           "--steps", str(steps), "--warmup", str(warmup), "--result", result_path,
           "--xlpo-layout", layout, "--device", device]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{lib} {method} ({setting}) failed:\n{done.stderr[-3000:]}")
    return json.loads(Path(result_path).read_text())


def run_one(paths, setting, lib, method, threads, args) -> dict:
    try:
        return run_child(paths[setting], paths["data"], lib, method, setting=setting, threads=threads,
                         steps=args.steps, warmup=args.warmup, layout=args.xlpo_layout, device=args.device)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="a,b,c")
    parser.add_argument("--methods", default="dpo,simpo,capo")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=5, help="measured steps after warm-up")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each (setting, threads, method) this many times, alternating who goes first; "
                             "report the median pairs/s of each library")
    parser.add_argument("--xlpo-layout", choices=["shared", "two_rows"], default="shared",
                        help="xlpo's batch layout: its default, chosen and rejected sharing one row with the prompt "
                             "once (shared), or a row each as TRL does (two_rows)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto = cuda when a GPU is present: bf16, GPU peak memory (see the module docstring)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "vs_trl.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("lib", "method", "setting", "model", "data", "result"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.threads = args.threads if args.child else [int(t) for t in args.threads.split(",")]
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        args.threads = int(args.threads)
        child(args)
        return
    settings, methods = args.settings.split(","), args.methods.split(",")
    work = Path(tempfile.mkdtemp(prefix="xlpo-bench-"))
    paths = prepare(work, settings, (args.warmup + args.steps) * BATCH)
    results = []
    order = 0
    header = (f"{'setting':8} {'thr':>3} {'method':6} {'xlpo p/s':>9} {'TRL p/s':>8} {'ratio':>6} "
              f"{'xlpo MB':>8} {'TRL MB':>8} {'mem':>5} {'xlpo MFU':>8} {'TRL MFU':>8}  peer")
    print(header, flush=True)
    for setting in settings:
        for threads in args.threads:
            for method in methods:
                runs = {"xlpo": [], "trl": []}
                for _ in range(args.repeats):
                    libs = ["xlpo", "trl"] if order % 2 == 0 else ["trl", "xlpo"]  # alternate who runs first
                    order += 1
                    for lib in libs:
                        runs[lib].append(run_one(paths, setting, lib, method, threads, args))
                x, t = _median_run(runs["xlpo"]), _median_run(runs["trl"])
                row = {"setting": setting, "threads": threads, "method": method, "xlpo": x, "trl": t,
                       "speed_ratio": x["pairs_per_second"] / t["pairs_per_second"],
                       "memory_ratio": x["peak_memory_mb"] / t["peak_memory_mb"], "peer": PEERS[method]}
                if args.repeats > 1:
                    row["all_pairs_per_second"] = {lib: [r["pairs_per_second"] for r in rs] for lib, rs in runs.items()}
                results.append(row)
                print(f"{setting:8} {threads:>3} {method:6} {x['pairs_per_second']:9.3f} {t['pairs_per_second']:8.3f} "
                      f"{row['speed_ratio']:6.2f} {x['peak_memory_mb']:8.0f} {t['peak_memory_mb']:8.0f} "
                      f"{row['memory_ratio']:5.2f} {x['mfu']:8.1%} {t['mfu']:8.1%}  {row['peer']}", flush=True)
    import platform

    from xlpo.versions import library_versions

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                                      "device": args.device, "gpu": _gpu_name()},
                                          "versions": {**library_versions(), "trl": _trl_version()},
                                          "batch_pairs": BATCH, "steps": args.steps, "warmup": args.warmup,
                                          "repeats": args.repeats, "xlpo_layout": args.xlpo_layout,
                                          "results": results}, indent=2))
    print(f"saved {args.out}")


def _median_run(runs: list[dict]) -> dict:
    """The run with the median pairs/s (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["pairs_per_second"])[(len(runs) - 1) // 2]


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def _trl_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("trl")


if __name__ == "__main__":
    main()
