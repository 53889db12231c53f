"""`xlpo bench {mtbench,mifeval,xlsum,winrate,xalpacaeval}`: multilingual benchmarks with LLM judges.

The candidate and the judge are each a local model (+ adapter) or any OpenAI-compatible endpoint
(a hosted model, vLLM, or `xlpo serve`). Each command writes results.json and prints a table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from xlpo.cli.command import app, option_group, quiet_libraries, user_errors

bench_app = typer.Typer(help="Benchmarks: multilingual MT-Bench, M-IFEval, XL-Sum, judged win rates, X-AlpacaEval.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")

Out = Annotated[Path, typer.Option("--out", help="Output folder (re-running it resumes and reuses answers).")]
Model = Annotated[str, typer.Option("--model", help="Candidate model: 'embedded', a local folder or a Hub id.")]
Adapter = Annotated[Optional[Path], typer.Option("--adapter", help="LoRA adapter folder for the candidate.")]
Endpoint = Annotated[Optional[str], typer.Option(
    "--endpoint", help="Candidate served at this OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1) "
                       "instead of --model.")]
EndpointModel = Annotated[Optional[str], typer.Option("--endpoint-model", help="Model name at --endpoint.")]
EndpointKey = Annotated[Optional[str], typer.Option(
    "--endpoint-key-env", help="Environment variable holding --endpoint's API key.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Prompts per generate call (local model).")]
Backend = Annotated[str, typer.Option(
    "--backend", help="Generation for --model: auto (vLLM when installed and a GPU is present), hf or vllm.")]
MaxModelLen = Annotated[Optional[int], typer.Option(
    "--max-model-len", min=1, help="vLLM: longest prompt + answer to plan for (default: the model's whole context, "
                                   "which for 128k-context models may not fit the GPU).")]
GpuMemory = Annotated[float, typer.Option(
    "--gpu-memory-utilization", min=0.01, max=1.0, help="vLLM: share of GPU memory for weights and KV cache.")]
JudgeUrl = Annotated[Optional[str], typer.Option(
    "--judge-url", help="Judge's OpenAI-compatible base URL, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1 "
                        "(leave out for a local judge).")]
JudgeModel = Annotated[Optional[str], typer.Option(
    "--judge-model", help="Judge model: its name at --judge-url (e.g. gpt-4o), or without --judge-url a model loaded "
                          "here: 'embedded', a local folder or a Hub id (no server needed).")]
JudgeKey = Annotated[Optional[str], typer.Option(
    "--judge-key-env", help="Environment variable holding the judge's API key (e.g. OPENAI_API_KEY); never logged.")]
JudgeConcurrency = Annotated[int, typer.Option("--judge-concurrency", min=1, help="Judge requests in flight.")]
JudgeRpm = Annotated[Optional[float], typer.Option("--judge-rpm", min=0.1, help="Judge requests per minute (default: no limit).")]
JudgeCache = Annotated[Optional[Path], typer.Option(
    "--judge-cache", help="Response cache folder (default: $XLPO_CACHE/judge-cache; reruns cost nothing).")]
NoJudgeCache = Annotated[bool, typer.Option("--no-judge-cache", help="Ask the judge again even for cached requests.")]
Languages = Annotated[Optional[str], typer.Option("--languages", help="Comma-separated language codes.")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="First N items per language (smoke runs).")]
Seed = Annotated[int, typer.Option("--seed", help="Run seed: per-item sampling seeds and orders derive from it.")]


JudgeAdapter = Annotated[Optional[Path], typer.Option(
    "--judge-adapter", help="LoRA adapter for a local judge (--judge-model without --judge-url).")]
JudgeBatch = Annotated[int, typer.Option("--judge-batch-size", min=1, help="Prompts per forward pass (local judge).")]


@dataclass(frozen=True)
class Candidate:
    """The model that answers: a local model (+ adapter) or an endpoint; how a local one generates."""

    model: Model = "embedded"
    adapter: Adapter = None
    endpoint: Endpoint = None
    endpoint_model: EndpointModel = None
    endpoint_key_env: EndpointKey = None
    batch_size: BatchSize = 8
    backend: Backend = "auto"
    max_model_len: MaxModelLen = None
    gpu_memory_utilization: GpuMemory = 0.9

    def build(self, role: str = "candidate", **instead):
        """Its chat backend; `instead` replaces fields (xalpacaeval's baseline: another model, same settings)."""
        from xlpo.clients.backends import candidate_backend  # loads torch: only for commands that generate
        from xlpo.generation import VLLMSettings

        c = replace(self, **instead)
        return candidate_backend(c.model, c.adapter, c.endpoint, c.endpoint_model, c.endpoint_key_env, c.batch_size,
                                 role, c.backend, VLLMSettings(c.max_model_len, c.gpu_memory_utilization))


@dataclass(frozen=True)
class Judge:
    """The judge: an endpoint, or a local model (+ adapter); its rate, concurrency and response cache."""

    judge_url: JudgeUrl = None
    judge_model: JudgeModel = None
    judge_key_env: JudgeKey = None
    judge_concurrency: JudgeConcurrency = 4
    judge_rpm: JudgeRpm = None
    judge_cache: JudgeCache = None
    no_judge_cache: NoJudgeCache = False
    judge_adapter: JudgeAdapter = None
    judge_batch_size: JudgeBatch = 8

    def build(self):
        from xlpo.clients.backends import judge_backend  # loads torch: only for commands that judge

        return judge_backend(self.judge_url, self.judge_model, self.judge_key_env, self.judge_concurrency,
                             self.judge_rpm, self.judge_cache, self.no_judge_cache, self.judge_adapter,
                             self.judge_batch_size)


def split_languages(value: str | None, default: list[str]) -> list[str]:
    if not value:
        return list(default)
    return [code.strip() for code in value.split(",") if code.strip()]


def print_results(table_fn, results: dict, out: Path) -> None:
    from xlpo.bench.common import print_table

    title, columns, rows = table_fn(results)
    print_table(title, columns, rows)
    typer.echo(f"results: {out / 'results.json'}")


@bench_app.command()
@user_errors
@option_group("candidate", Candidate)
@option_group("judge", Judge)
def mtbench(
    data: Annotated[Path, typer.Option("--data", help="Multilingual MT-Bench folder (FastChat llm_judge layout: "
                                       "judge_prompts.jsonl, <lang>_mt_bench/question.jsonl, reference_answer/).")],
    out: Out,
    candidate: Candidate = Candidate(),
    judge: Judge = Judge(),
    languages: Languages = None, limit: Limit = None, seed: Seed = 0,
    temperature: Annotated[float, typer.Option("--temperature", min=0, help="Candidate sampling temperature (CAPO paper: 0.7).")] = 0.7,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Candidate tokens per turn (paper: 1024).")] = 1024,
    reference_judge: Annotated[str, typer.Option("--reference-judge", help="Which reference_answer/<name>.jsonl to use.")] = "gpt-4o",
    judge_max_tokens: Annotated[int, typer.Option("--judge-max-tokens", min=1, help="Judge reply tokens (FastChat: 2048).")] = 2048,
    generate_only: Annotated[bool, typer.Option("--generate-only", help="Only generate the answers; judge later.")] = False,
) -> None:
    """Two-turn multilingual MT-Bench, graded 1-10 per turn by the judge (CAPO paper, Table 3)."""
    from xlpo.bench import mtbench as bench

    quiet_libraries()
    results = bench.run_mtbench(data, out, candidate.build(), None if generate_only else judge.build(), languages=split_languages(languages, bench.DEFAULT_LANGUAGES),
                                limit=limit, temperature=temperature, max_tokens=max_tokens, seed=seed,
                                reference_judge=reference_judge, judge_max_tokens=judge_max_tokens, echo=lambda line: typer.echo(line, err=True))
    print_results(bench.table, results, out)


@bench_app.command()
@user_errors
@option_group("candidate", Candidate)
def xlsum(
    source: Annotated[str, typer.Option("--source", help="Folder of <language>_test.jsonl files (id, text, summary), "
                                        "or the Hub id csebuetnlp/xlsum.")],
    out: Out,
    candidate: Candidate = Candidate(),
    languages: Languages = None,
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="Articles sampled per language (paper: 50; default all).")] = 50,
    seed: Seed = 0,
    temperature: Annotated[float, typer.Option("--temperature", min=0, help="Sampling temperature (paper: 0.7).")] = 0.7,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Summary tokens.")] = 128,
    max_text_chars: Annotated[int, typer.Option("--max-text-chars", min=0,
                                                help="Cut longer articles (0 = never cut).")] = 4000,
    split: Annotated[str, typer.Option("--split", help="XL-Sum split.")] = "test",
) -> None:
    """One-sentence summaries of XL-Sum articles and their ROUGE-L per language (CAPO paper, Figure 12).
    Compare two runs with `xlpo bench winrate`."""
    from xlpo.bench import xlsum as bench

    quiet_libraries()
    results = bench.run_xlsum(source, split_languages(languages, bench.PAPER_LANGUAGES), n, out, candidate.build(),
                              seed=seed, temperature=temperature, max_tokens=max_tokens,
                              max_text_chars=max_text_chars or None, split=split,
                              echo=lambda line: typer.echo(line, err=True))
    print_results(bench.table, results, out)


@bench_app.command()
@user_errors
@option_group("judge", Judge)
def winrate(
    run_a: Annotated[Path, typer.Argument(help="The system to rate: an `xlpo bench xlsum` folder (or its summaries.jsonl).")],
    run_b: Annotated[Path, typer.Argument(help="The system it is compared with, same items.")],
    out: Out,
    judge: Judge = Judge(),
    name_a: Annotated[Optional[str], typer.Option("--name-a", help="Name of system A (default: its folder name).")] = None,
    name_b: Annotated[Optional[str], typer.Option("--name-b", help="Name of system B (default: its folder name).")] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Judge each item this many times with a new "
                                         "random order; SDs over repeats as in the paper's Tables 7-8.")] = 1,
    seed: Seed = 0,
    judge_max_tokens: Annotated[int, typer.Option("--judge-max-tokens", min=1, help="Judge reply tokens.")] = 256,
) -> None:
    """Pairwise win/tie/lose of A against B per language, judged with the CAPO paper's Figure 11 prompt."""
    from xlpo.bench import winrate as bench

    def summaries(path: Path) -> Path:
        return path / "summaries.jsonl" if path.is_dir() else path

    results = bench.run_xlsum_winrate(summaries(run_a), summaries(run_b), out, judge.build(), name_a=name_a, name_b=name_b,
                                      repeats=repeats, seed=seed, max_tokens=judge_max_tokens,
                                      echo=lambda line: typer.echo(line, err=True))
    print_results(bench.table, results, out)


@bench_app.command()
@user_errors
@option_group("candidate", Candidate)
def mifeval(
    data: Annotated[Path, typer.Option("--data", help="Folder with {en,es,fr,ja}_input_data.jsonl "
                                       "(lightblue-tech/M-IFEval's data/).")],
    out: Out,
    candidate: Candidate = Candidate(),
    languages: Languages = None, limit: Limit = None, seed: Seed = 0,
    temperature: Annotated[float, typer.Option("--temperature", min=0, help="Sampling temperature (0 = greedy).")] = 0.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Response tokens (paper: 1024).")] = 1024,
) -> None:
    """M-IFEval: strict and loose instruction-following accuracy per language, checked by rules (no judge)."""
    from xlpo.bench import mifeval as bench

    quiet_libraries()
    results = bench.run_mifeval(data_dir=data, out_dir=out, candidate=candidate.build(),
                                languages=split_languages(languages, bench.LANGUAGES), limit=limit,
                                temperature=temperature, max_tokens=max_tokens, seed=seed,
                                echo=lambda line: typer.echo(line, err=True))
    print_results(bench.table, results, out)


@bench_app.command()
@user_errors
@option_group("candidate", Candidate)
@option_group("judge", Judge)
def xalpacaeval(
    data: Annotated[Path, typer.Option("--data", help="X-AlpacaEval folder with <lang>.json files "
                                       "(e.g. ../shared/data/icr/x-alpacaeval/data).")],
    out: Out,
    candidate: Candidate = Candidate(),
    baseline: Annotated[Optional[Path], typer.Option(
        "--baseline", help="Baseline answers: another xalpacaeval output folder, or a folder of <lang>.json / "
                           "<lang>.jsonl / <lang>/model_outputs.json in AlpacaEval's outputs format.")] = None,
    baseline_model: Annotated[Optional[str], typer.Option(
        "--baseline-model", help="Or generate the baseline here with this model ('embedded', a folder, a Hub id).")] = None,
    baseline_adapter: Annotated[Optional[Path], typer.Option("--baseline-adapter", help="LoRA adapter for --baseline-model.")] = None,
    baseline_endpoint: Annotated[Optional[str], typer.Option(
        "--baseline-endpoint", help="Or generate the baseline at this OpenAI-compatible base URL.")] = None,
    baseline_endpoint_model: Annotated[Optional[str], typer.Option("--baseline-endpoint-model", help="Model name at --baseline-endpoint.")] = None,
    baseline_endpoint_key_env: Annotated[Optional[str], typer.Option(
        "--baseline-endpoint-key-env", help="Environment variable holding --baseline-endpoint's API key.")] = None,
    judge: Judge = Judge(),
    judge_max_tokens: Annotated[int, typer.Option("--judge-max-tokens", min=1, help="Judge reply tokens (AlpacaEval: 1).")] = 1,
    judge_logprobs: Annotated[bool, typer.Option(
        "--judge-logprobs/--no-judge-logprobs", help="Ask for the first token's top-5 log-probs (AlpacaEval 2.0's weighted "
                                                     "preference); --no-judge-logprobs for endpoints that refuse them.")] = True,
    orders: Annotated[str, typer.Option("--orders", help="random: one judgment per instruction, seeded random order "
                                        "(AlpacaEval); both: both orders, averaged.")] = "random",
    languages: Languages = None, limit: Limit = None, seed: Seed = 0,
    temperature: Annotated[float, typer.Option("--temperature", min=0, help="Sampling temperature (ICR authors: 0.6).")] = 0.6,
    top_p: Annotated[float, typer.Option("--top-p", min=0, max=1, help="Nucleus sampling (ICR authors: 0.9).")] = 0.9,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Answer tokens (ICR authors: 2048).")] = 2048,
    lc_files: Annotated[Optional[str], typer.Option(
        "--lc-files", help="AlpacaEval's df_gamed.csv (or its folder), which AlpacaEval 2.0's LC needs, or the Hub id "
                           "tatsu-lab/alpaca_eval to download it once into xlpo's cache; default: xlpo's cache, no "
                           "network (without a copy, LC is the labelled LC-minimal).")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for the 95% intervals "
                                           "(0 = no intervals).")] = 1000,
    generate_only: Annotated[bool, typer.Option("--generate-only", help="Only generate the answers; judge later.")] = False,
) -> None:
    """X-AlpacaEval (ICR paper, Table 2): win rate and length-controlled win rate against a baseline, per language."""
    from xlpo.bench import xalpacaeval as bench

    quiet_libraries()
    second = None
    if baseline_model or baseline_endpoint:
        second = candidate.build("baseline", model=baseline_model or "embedded", adapter=baseline_adapter,
                                 endpoint=baseline_endpoint, endpoint_model=baseline_endpoint_model,
                                 endpoint_key_env=baseline_endpoint_key_env)
    results = bench.run_xalpacaeval(data, out, candidate.build(), baseline_dir=baseline, baseline=second,
                                    judge=None if generate_only else judge.build(),
                                    languages=split_languages(languages, bench.PAPER_LANGUAGES), limit=limit,
                                    temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                                    orders=orders, judge_max_tokens=judge_max_tokens, judge_logprobs=judge_logprobs,
                                    lc_files=lc_files, n_boot=bootstrap,
                                    echo=lambda line: typer.echo(line, err=True))
    print_results(bench.table, results, out)
