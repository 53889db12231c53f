"""Two savings of xlpo measured on setting (a) of vs_trl.py: reference log-probs shared across a sweep
of reference-based runs (vs computed per run or every step), and the batch layout: length grouping
against padding, and chosen and rejected sharing their prompt against a row each."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import vs_trl  # the MTPE pairs and the random Llama of setting (a), as in the TRL benchmark

# The cached modes compute or load the very same fp32 values, so their losses agree exactly; a
# difference above this bound would mean the cache changes results, which is a bug.
CACHED_TOLERANCE = 1e-6
# 'live' scores the reference inside the training batches, whose shapes differ from the up-front
# pass's, so fp32 rounding of the summed log-probs may differ: reported, and held to a looser bound.
LIVE_TOLERANCE = 1e-3
MODES = {
    "shared": "one reference cache for the whole sweep: the first run computes it, the others load it",
    "per_run": "a fresh cache dir per run: the reference is computed once, up front, in every run",
    "live": "reference.precompute=false: a reference forward in every training step, as TRL does",
}
LAYOUT_LOSS = ["loss.name=dpo", "loss.beta=0.1"]

USAGE = "modes of the sweep:\n" + "".join(f"  {m:8} {d}\n" for m, d in MODES.items()) + """
examples:
  .venv/bin/python benchmarks/reuse_and_padding.py               # full measurement, 1 thread
  .venv/bin/python benchmarks/reuse_and_padding.py --threads 2
  .venv/bin/python benchmarks/reuse_and_padding.py --pairs 16 --betas 0.1,0.2 --others '' \\
      --repeats 1 --layout-repeats 1                            # smoke (as in the CI test)
"""


# --------------------------------------------------------------------------- one train() run

def _config(paths: dict, out: Path, loss: list[str], args, cache_dir: Path, precompute: bool = True,
            group_by_length: bool = True, max_steps: int | None = None, share_prompt: bool = True):
    from xlpo.train.config import load_config

    # The training settings of vs_trl.py's xlpo runs, so that both benchmarks describe one workload.
    overrides = [f"model.name_or_path={paths['a']}", "model.dtype=float32", f"data.train={paths['data']}",
                 "data.chat_format=none", "data.max_length=512", "data.max_prompt_length=256", *loss,
                 f"training.output_dir={out}", f"training.batch_size={args.batch}", "training.learning_rate=1e-5",
                 "training.progress=false", "training.warmup_ratio=0", f"training.group_by_length={group_by_length}",
                 f"training.share_prompt={share_prompt}",
                 f"reference.precompute={precompute}", f"reference.cache_dir={cache_dir}"]
    steps = max_steps or args.max_steps
    if steps:
        overrides.append(f"training.max_steps={steps}")
    return load_config(None, overrides)


def _train(cfg) -> dict:
    """Run train() and return its wall time, its per-step records and the trainer's own summary."""
    from xlpo.train.trainer import train

    tic = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - tic
    lines = (Path(cfg.training.output_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return {"seconds": seconds, "steps": [json.loads(line) for line in lines], "summary": result.summary}


def step_plans(cfg, lengths: list[int], steps: int):
    """The StepPlans the trainer runs for `steps` steps on one process, epoch after epoch."""
    from xlpo.data.batching import plan_epoch

    t = cfg.training
    plans, epoch = [], 0
    while len(plans) < steps:
        plans.extend(plan_epoch(lengths, t.batch_size, t.grad_accum, 1, t.seed, epoch, t.group_by_length))
        epoch += 1
    return plans[:steps]


def reference_passes(source: str, plans, n_pairs: int) -> float:
    """Passes over the data made by the reference model in one run, from the trainer's summary:
    'computed ...' is one up-front pass, 'cache ...' none, 'live' one forward per real pair trained."""
    if source.startswith("computed"):
        return 1.0
    if source.startswith("cache"):
        return 0.0
    if source == "live":
        return sum(p.real_examples for p in plans) / n_pairs
    raise ValueError(f"unexpected reference source {source!r}")


def _max_diff(a: list[dict], b: list[dict], keys=("loss", "rewards/margins")) -> float:
    if len(a) != len(b):
        return float("inf")
    return max((abs(x[k] - y[k]) for x, y in zip(a, b) for k in keys), default=0.0)


# --------------------------------------------------------------------------- part 1: the sweep

def sweep_specs(betas: list[float], others: list[str]) -> list[dict]:
    """Loss name and hyper-parameters of every run of the sweep; all must need a reference."""
    from xlpo.losses import get_loss

    specs = [{"name": "dpo", "params": {"beta": b}} for b in betas]
    specs += [{"name": name, "params": {}} for name in others]
    for spec in specs:
        if not get_loss(spec["name"]).needs_reference:
            raise SystemExit(f"loss {spec['name']} is reference-free: it has nothing to reuse in this sweep")
    if not specs:
        raise SystemExit("the sweep is empty: give --betas and/or --others")
    return specs


def _label(spec: dict) -> str:
    return spec["name"] + "".join(f" {k}={v}" for k, v in spec["params"].items())


def run_sweep(mode: str, specs: list[dict], paths: dict, work: Path, args, plans, n_pairs: int) -> dict:
    """Every run of the sweep in `mode`; each sweep starts from empty caches, so that 'shared'
    computes its one reference pass inside the sweep and is timed for it."""
    sweep_dir = Path(tempfile.mkdtemp(prefix=f"sweep-{mode}-", dir=work))
    runs, total = [], 0.0
    for i, spec in enumerate(specs):
        cache = sweep_dir / ("ref" if mode == "shared" else f"ref-{i}")
        loss = [f"loss.name={spec['name']}", *(f"loss.{k}={v}" for k, v in spec["params"].items())]
        run = _train(_config(paths, sweep_dir / f"run-{i}", loss, args, cache, precompute=mode != "live"))
        total += run["seconds"]
        source = run["summary"]["reference"]
        runs.append({"loss": spec["name"], "params": spec["params"], "seconds": run["seconds"], "reference": source,
                     "reference_passes": reference_passes(source, plans, n_pairs),
                     "steps": [{k: s[k] for k in ("step", "loss", "rewards/margins", "step_seconds")}
                               for s in run["steps"]]})
    shutil.rmtree(sweep_dir)  # adapters and caches of ~20 runs would otherwise pile up
    return {"mode": mode, "seconds": total, "reference_passes": sum(r["reference_passes"] for r in runs), "runs": runs}


def summarize_sweep(sweeps: list[dict], modes: list[str]) -> dict:
    """Per mode: the seconds of every sweep and their median, reference passes, the ratio to
    'shared', and the largest per-step difference (loss, reward margin) from the first shared sweep."""
    baseline = next((s for s in sweeps if s["mode"] == "shared"), sweeps[0])
    out = {}
    for mode in modes:
        mine = [s for s in sweeps if s["mode"] == mode]
        diff = max(_max_diff(run["steps"], base["steps"]) for s in mine for run, base in zip(s["runs"], baseline["runs"]))
        tolerance = LIVE_TOLERANCE if mode == "live" else CACHED_TOLERANCE
        out[mode] = {"description": MODES[mode], "sweep_seconds": [s["seconds"] for s in mine],
                     "median_sweep_seconds": statistics.median(s["seconds"] for s in mine),
                     "reference_passes": mine[0]["reference_passes"],
                     "reference_passes_consistent": len({s["reference_passes"] for s in mine}) == 1,
                     "max_abs_diff_vs_shared": diff, "tolerance": tolerance, "losses_match": diff <= tolerance}
    if "shared" in out:
        for row in out.values():
            row["seconds_ratio_to_shared"] = row["median_sweep_seconds"] / out["shared"]["median_sweep_seconds"]
    return out


# --------------------------------------------------------------------------- part 2: batch layouts

# (group_by_length, share_prompt) of each variant; the first is xlpo's default.
LAYOUTS = {
    "grouped_shared": (True, True),
    "ungrouped_shared": (False, True),
    "grouped_two_rows": (True, False),
}


def layout_of(pairs, pad_id: int, plans, share_prompt: bool) -> dict:
    """Token slots of the batches as collated for training (each micro-batch as wide as its longest row),
    the tokens the model really computes (the prompt once per pair when shared, twice otherwise) and
    the share of slots that is padding; filler slots count as padding."""
    from xlpo.data.batching import FILLER, collate_pairs

    slots = computed = 0
    for plan in plans:
        for micro in plan.micro_batches[0]:
            slots += collate_pairs(pairs, micro, pad_id, 1.0, share_prompt=share_prompt).rows.input_ids.numel()
            for i in micro:
                if i != FILLER:
                    pair = pairs[i]
                    computed += (1 if share_prompt else 2) * len(pair.prompt_ids) + len(pair.chosen_ids) \
                        + len(pair.rejected_ids)
    return {"token_slots": slots, "computed_tokens": computed, "padding_fraction": 1 - computed / slots}


def run_layout(name: str, paths: dict, work: Path, args, cache: Path, plans, index: int) -> dict:
    group, share = LAYOUTS[name]
    out = work / f"layout-{name}-{index}"
    run = _train(_config(paths, out, LAYOUT_LOSS, args, cache, group_by_length=group, share_prompt=share))
    shutil.rmtree(out)
    if not run["summary"]["reference"].startswith("cache"):
        raise SystemExit("the layout runs must load a warm reference cache, so that only training steps differ")
    steps = [s["step_seconds"] for s in run["steps"]]
    steady = steps[1:] or steps  # the first step pays one-off allocations: left out of the median
    pairs_trained = sum(p.real_examples for p in plans)
    return {"layout": name, "summary_layout": run["summary"]["layout"], "seconds": run["seconds"],
            "pairs_trained": pairs_trained, "pairs_per_second": pairs_trained / run["seconds"],
            "median_step_seconds": statistics.median(steady), "first_step_seconds": steps[0], "step_seconds": steps,
            "losses": [s["loss"] for s in run["steps"]]}


def summarize_layouts(runs: list[dict], tokens: dict[str, dict]) -> dict:
    variants = {}
    for name in LAYOUTS:
        mine = [r for r in runs if r["layout"] == name]
        variants[name] = {**tokens[name], "pairs_per_second": statistics.median(r["pairs_per_second"] for r in mine),
                          "median_step_seconds": statistics.median(r["median_step_seconds"] for r in mine),
                          "runs": mine}

    def speedup(fast: str, slow: str) -> dict:
        return {"pairs_per_second_ratio": variants[fast]["pairs_per_second"] / variants[slow]["pairs_per_second"],
                "step_seconds_ratio": variants[slow]["median_step_seconds"] / variants[fast]["median_step_seconds"]}

    # Same pairs in the same steps with and without sharing: the losses differ only by float rounding.
    shared = [loss for r in variants["grouped_shared"]["runs"] for loss in r["losses"]]
    two = [loss for r in variants["grouped_two_rows"]["runs"] for loss in r["losses"]]
    return {"variants": variants, "grouping": speedup("grouped_shared", "ungrouped_shared"),
            "prompt_sharing": speedup("grouped_shared", "grouped_two_rows"),
            "max_abs_loss_diff_shared_vs_two_rows": max(abs(a - b) for a, b in zip(shared, two))}


# --------------------------------------------------------------------------- driver

def _csv(text: str, kind=str) -> list:
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, epilog=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64, help="real MTPE pairs every run trains on (default 64)")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step (default 8)")
    parser.add_argument("--max-steps", type=int, default=None, help="steps per run (default: one epoch)")
    parser.add_argument("--betas", default="0.05,0.1,0.2,0.5", help="DPO betas of the sweep (default 0.05,0.1,0.2,0.5)")
    parser.add_argument("--others", default="ipo,dpo_nll",
                        help="more reference-based losses in the sweep, at their default hyper-parameters "
                             "(default ipo,dpo_nll)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"sweep modes (default {','.join(MODES)})")
    parser.add_argument("--repeats", type=int, default=2,
                        help="sweeps per mode; the mode order is reversed on every other repeat (default 2)")
    parser.add_argument("--layout-repeats", type=int, default=3,
                        help="runs per batch layout, the order rotating on every repeat (default 3)")
    parser.add_argument("--parts", default="sweep,layouts", help="sweep, layouts or both (default both)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for every run (default 1)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "reuse_and_padding.json"),
                        help="results JSON (default benchmarks/results/reuse_and_padding.json)")
    args = parser.parse_args(argv)
    args.modes, args.parts = _csv(args.modes), _csv(args.parts)
    unknown = [m for m in args.modes if m not in MODES] + [p for p in args.parts if p not in ("sweep", "layouts")]
    if unknown:
        parser.error(f"unknown mode or part: {', '.join(unknown)}")
    if "sweep" in args.parts and not args.modes:
        parser.error("--modes is empty")
    return args


def _set_threads(threads: int) -> None:
    # Before torch is imported, so that OpenMP and MKL start with this many threads for every run;
    # tokenizers' own thread pool is turned off so it cannot add threads to some runs.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch

    torch.set_num_threads(threads)


def main(argv=None) -> None:
    args = parse_args(argv)
    _set_threads(args.threads)
    # Checked before the minutes of preparation, but after the thread settings (it imports torch).
    args.specs = sweep_specs(_csv(args.betas, float), _csv(args.others)) if "sweep" in args.parts else []
    if "XLPO_SHARED_DATA" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
        os.environ["XLPO_SHARED_DATA"] = str(REPO.parent / "shared" / "data")  # vs_trl finds it from any cwd
    work = Path(tempfile.mkdtemp(prefix="xlpo-reuse-padding-"))
    try:
        result = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


def measure(args, work: Path) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    from xlpo.models import load_tokenizer
    from xlpo.train.trainer import prepare_pairs
    from xlpo.versions import library_versions

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # transformers' deprecation notices, printed by every train() call, would bury the table.
    warnings.filterwarnings("ignore", category=FutureWarning)
    tic = time.perf_counter()
    paths = vs_trl.prepare(work, ["a"], args.pairs)
    prepare_seconds = time.perf_counter() - tic

    # The pairs as the trainer tokenizes them: their lengths give the batch plans, hence the padding
    # and the number of live reference forwards.
    layout_cache = work / "ref-padding"
    configs = {group: _config(paths, work / "plan", LAYOUT_LOSS, args, layout_cache, group_by_length=group)
               for group in (True, False)}
    tokenizer = load_tokenizer(str(paths["a"]))
    pairs, _, _ = prepare_pairs(configs[True], tokenizer)
    lengths = [p.length for p in pairs]
    steps_per_run = args.max_steps or -(-len(pairs) // args.batch)
    plans = {group: step_plans(cfg, lengths, steps_per_run) for group, cfg in configs.items()}

    # Warm-up, not timed: imports and first-call costs of train(). It also fills the layout runs'
    # reference cache (the whole data, whatever the steps), so that those differ only in training.
    tic = time.perf_counter()
    _train(_config(paths, work / "warmup", LAYOUT_LOSS, args, layout_cache, max_steps=1))
    warmup_seconds = time.perf_counter() - tic

    result = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
              "versions": library_versions(), "threads": args.threads, "torch_threads": torch.get_num_threads(),
              "setting": "a: random Llama, 4 layers, hidden 256, BPE vocabulary of 8,192 trained on the data; "
                         "LoRA r 16 on all linear layers, fp32, plain text",
              "pairs": len(pairs), "batch_pairs": args.batch, "steps_per_run": steps_per_run,
              "pair_length_tokens": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)},
              "prepare_seconds": prepare_seconds, "warmup_seconds": warmup_seconds}

    if "sweep" in args.parts:
        specs = args.specs
        sweeps, order = [], []
        for repeat in range(args.repeats):
            modes = args.modes if repeat % 2 == 0 else args.modes[::-1]  # drift in machine load hits every mode alike
            for mode in modes:
                order.append(mode)
                sweeps.append(run_sweep(mode, specs, paths, work, args, plans[True], len(pairs)))
                print(f"  sweep {mode:8} {repeat + 1}/{args.repeats}: {sweeps[-1]['seconds']:.1f} s", flush=True)
        result["sweep"] = {"runs": [{"loss": s["name"], "params": s["params"]} for s in specs], "order": order,
                           "modes": summarize_sweep(sweeps, args.modes), "sweeps": sweeps}
        _print_sweep(result["sweep"], specs, args.repeats)

    if "layouts" in args.parts:
        names = list(LAYOUTS)
        tokens = {name: layout_of(pairs, tokenizer.pad_token_id, plans[LAYOUTS[name][0]], LAYOUTS[name][1])
                  for name in names}
        runs = []
        for repeat in range(args.layout_repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:  # rotate who goes first
                runs.append(run_layout(name, paths, work, args, layout_cache, plans[LAYOUTS[name][0]], repeat))
                print(f"  layout {name:16} {repeat + 1}/{args.layout_repeats}: {runs[-1]['seconds']:.1f} s", flush=True)
        result["layouts"] = {"loss": "dpo beta=0.1, reference cache warm", **summarize_layouts(runs, tokens)}
        _print_layouts(result["layouts"], args.layout_repeats)
    return result


def _print_sweep(sweep: dict, specs: list[dict], repeats: int) -> None:
    print(f"\nsweep of {len(specs)} runs ({', '.join(_label(s) for s in specs)}); median of {repeats} sweep(s) per mode")
    print(f"{'mode':8} {'ref passes':>10} {'sweep s':>8} {'x shared':>8} {'max |diff|':>10} {'match':>5}  each sweep (s)")
    for mode, row in sweep["modes"].items():
        each = ", ".join(f"{s:.1f}" for s in row["sweep_seconds"])
        print(f"{mode:8} {row['reference_passes']:10.2f} {row['median_sweep_seconds']:8.1f} "
              f"{row.get('seconds_ratio_to_shared', float('nan')):8.2f} {row['max_abs_diff_vs_shared']:10.1e} "
              f"{'yes' if row['losses_match'] else 'NO':>5}  {each}")


def _print_layouts(layouts: dict, repeats: int) -> None:
    print(f"\nbatch layouts: {layouts['loss']}; median of {repeats} run(s) each")
    print(f"{'layout':17} {'padding':>8} {'computed tokens':>15} {'pairs/s':>8} {'median step s':>13}")
    for name, row in layouts["variants"].items():
        print(f"{name:17} {row['padding_fraction']:8.1%} {row['computed_tokens']:15d} {row['pairs_per_second']:8.2f} "
              f"{row['median_step_seconds']:13.3f}")
    for effect in ("grouping", "prompt_sharing"):
        row = layouts[effect]
        print(f"{effect + ' speed-up':26} {row['pairs_per_second_ratio']:8.2f} x pairs/s, "
              f"{row['step_seconds_ratio']:.2f} x per step")
    print(f"max |loss difference| shared vs two rows: {layouts['max_abs_loss_diff_shared_vs_two_rows']:.1e}")


if __name__ == "__main__":
    main()
