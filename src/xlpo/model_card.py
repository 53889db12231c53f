"""Model cards: the README.md (Hub format, YAML front matter) of every adapter or model xlpo saves, and
its evaluation section, which scoring the adapter (`xlpo eval rewards`, the experiment) fills in.

Every text that comes from data or paths is escaped: YAML through the YAML writer, Markdown by `md`.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from pathlib import Path

import yaml
from huggingface_hub import ModelCardData

from xlpo.fileio import read_json, write_json, write_text

CARD = "README.md"
EVALUATIONS = "xlpo_evaluations.json"  # the scored results behind the card's evaluation section
START, END = "<!-- xlpo:evaluation:start -->", "<!-- xlpo:evaluation:end -->"
EMBEDDED = ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")  # what model.name_or_path=embedded is
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")  # what the Hub's `language` takes (ISO 639)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
DEFINITIONS = {"sum": "summed log-prob", "mean": "per-token log-prob", "implicit": "implicit reward (vs reference)"}


def md(value) -> str:
    """Data-derived text made inert in Markdown and HTML: one line, HTML escaped, Markdown marks backslashed."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return re.sub(r"([\\`*_\[\]|~#])", r"\\\1", text)


def is_xlpo_card(folder: str | Path) -> bool:
    path = Path(folder) / CARD
    return path.is_file() and START in path.read_text(encoding="utf-8")


def base_model(name_or_path: str) -> tuple[str | None, str | None]:
    """(Hub id, license) of a base model where known: the embedded model's, a Hub id as given, or the
    license in a local model folder's own card."""
    if name_or_path == "embedded":
        return EMBEDDED
    local = Path(name_or_path)
    if local.exists():
        meta = front_matter(local / CARD) if (local / CARD).is_file() else {}
        return None, meta.get("license") if isinstance(meta.get("license"), str) else None
    return (name_or_path, None) if HUB_ID.match(name_or_path) else (None, None)


def front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    try:
        meta = yaml.safe_load(match.group(1)) if match else {}
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def write_card(folder: str | Path, config: dict, summary: dict, versions: dict) -> Path:
    """README.md of a freshly saved adapter (config has lora.enabled) or model, from the run's facts."""
    folder = Path(folder)
    adapter = config["lora"]["enabled"] or bool(config["model"].get("adapter"))
    hub_id, license_ = base_model(config["model"]["name_or_path"])
    loss = config["loss"]["name"]
    tags = ["xlpo", "preference-optimization", loss] + (["lora", "peft"] if adapter else [])
    if hub_id:
        tags.append(f"base_model:{'adapter' if adapter else 'finetune'}:{hub_id}")
    data = ModelCardData(base_model=hub_id, library_name="peft" if adapter else "transformers", license=license_,
                         language=[lang for lang in summary.get("languages", []) if LANGUAGE_CODE.match(lang)] or None,
                         pipeline_tag="text-generation", tags=tags)
    body = "\n".join([
        f"# {md(Path(config['training']['output_dir']).name)}", "",
        f"{'A LoRA adapter for' if adapter else 'A fine-tuned'} {model_link(config['model']['name_or_path'], hub_id)}, "
        f"trained on preference pairs with the `{md(loss)}` loss by [xlpo](https://pypi.org/project/xlpo/) "
        f"{md(versions.get('xlpo', '?'))}.", "",
        "## Training", "", *training_table(config, summary), "",
        *final_metrics(summary.get("final_metrics") or {}),
        "## Evaluation", "", START, *evaluation_section([]), END, "",
        "## Use", "", *usage(adapter, hub_id), "",
        "## Framework versions", "",
        *[f"- {name} {md(versions[name])}" for name in ("xlpo", "torch", "transformers", "peft", "accelerate")
          if name in versions], ""])
    path = folder / CARD
    write_text(path, f"---\n{data.to_yaml()}\n---\n\n{body}")
    return path


def model_link(name_or_path: str, hub_id: str | None) -> str:
    if hub_id:
        return f"[{md(hub_id)}](https://huggingface.co/{hub_id})" + (" (xlpo's embedded model)" if name_or_path == "embedded" else "")
    return f"the local model `{md(Path(name_or_path).name)}`"


def training_table(config: dict, summary: dict) -> list[str]:
    t, lora, data, model = config["training"], config["lora"], config["data"], config["model"]
    params = {k: v for k, v in config["loss"].items() if k != "name"}
    by_lang = summary.get("pairs_by_language") or {}
    skipped = (summary.get("data") or {}).get("skipped", 0)
    processes = summary.get("num_processes", 1)
    rows = [
        ("loss", f"`{md(config['loss']['name'])}`"),
        ("loss hyper-parameters", ", ".join(f"{md(k)} = {md(v)}" for k, v in params.items()) or "none"),
        ("reference", reference_text(summary.get("reference_model"))),
        ("started from adapter", md(Path(model["adapter"]).name) if model.get("adapter") else None),
        ("data", f"{md(Path(str(data['train'])).name)}: {summary.get('pairs', '?')} pairs"
                 + (f" ({skipped} skipped as too long)" if skipped else "")),
        ("pairs per language", ", ".join(f"{md(k)} {v}" for k, v in by_lang.items()) or None),
        ("data fingerprint", f"`{md(summary['data_fingerprint'])}`" if summary.get("data_fingerprint") else None),
        ("formatting", f"chat format {md(data['chat_format'])}, max length {data['max_length']}, "
                       f"max prompt length {data['max_prompt_length']}, over-long pairs: {md(data['truncation'])}"),
        ("steps", f"{summary.get('steps', '?')} " + ("(`training.max_steps`)" if t.get("max_steps") else f"({t['epochs']} epoch(s))")),
        ("batch", f"{t['batch_size']} pairs x {t['grad_accum']} accumulation x {processes} process(es) = "
                  f"{t['batch_size'] * t['grad_accum'] * processes} pairs per step"),
        ("optimizer", f"{md(t['optimizer'])}, learning rate {t['learning_rate']:g}, {md(t['lr_scheduler'])} schedule, "
                      f"warm-up {t['warmup_ratio']:g}, weight decay {t['weight_decay']:g}, "
                      + (f"gradient norm clipped at {t['max_grad_norm']:g}" if t["max_grad_norm"] else "no clipping")),
        ("LoRA", f"r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']:g}, targets {md(lora['target_modules'])}"
                 if lora["enabled"] else "off (all weights trained)"),
        ("precision", md(model["dtype"])),
        ("seed", str(t["seed"])),
        ("training time", f"{summary['seconds']:.0f} s" if "seconds" in summary else None),
    ]
    return ["| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows if v is not None]]


def reference_text(reference: dict | None) -> str:
    """'embedded: the policy's base weights with its adapters disabled' (None: the loss uses no reference)."""
    if not reference:
        return "none (the loss needs none)"
    name = Path(str(reference["name_or_path"])).name if Path(str(reference["name_or_path"])).exists() \
        else reference["name_or_path"]
    adapter = f" + adapter {md(Path(reference['adapter']).name)}" if reference.get("adapter") else ""
    return f"{md(name)}{adapter}: {md(reference.get('loaded_as', ''))}"


def final_metrics(final: dict) -> list[str]:
    if "loss" not in final:
        return []
    return [f"Last training step: loss {final['loss']:.4f}, reward accuracy "
            f"{final.get('rewards/accuracies', float('nan')):.3f} (on that step's batch; see Evaluation for held-out "
            "pairs).", ""]


def usage(adapter: bool, hub_id: str | None) -> list[str]:
    base = hub_id or "path/to/base-model"
    if not adapter:
        return ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                'model = AutoModelForCausalLM.from_pretrained("path/or/repo-of-this-model")',
                'tokenizer = AutoTokenizer.from_pretrained("path/or/repo-of-this-model")', "```"]
    return ["```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'base = AutoModelForCausalLM.from_pretrained("{base}")',
            'model = PeftModel.from_pretrained(base, "path/or/repo-of-this-adapter")',
            'tokenizer = AutoTokenizer.from_pretrained("path/or/repo-of-this-adapter")', "```"]


def evaluation_section(evaluations: list[dict]) -> list[str]:
    if not evaluations:
        return ["Not scored yet: `xlpo eval rewards DATA --adapter THIS_FOLDER --out DIR` fills this section in."]
    lines = ["Reward accuracy: the share of pairs whose chosen answer the model scores above the rejected one, "
             "with 95% bootstrap intervals over pairs (`xlpo eval rewards`)."]
    for ev in evaluations:
        table = ev["accuracy"]
        present = [d for d in DEFINITIONS if any(d in row for row in table.values())]
        lines += ["", f"### {md(Path(ev['data']).name)} ({ev['scored_at']}; reference: {md(ev.get('reference') or 'none')})",
                  "", "| language | pairs | " + " | ".join(DEFINITIONS[d] for d in present) + " |",
                  "|---|---:|" + "---:|" * len(present)]
        for lang, row in table.items():
            n = next((row[d]["n"] for d in present if d in row), 0)
            cells = [_accuracy_cell(row.get(d)) for d in present]
            lines.append(f"| {md(lang)} | {n} | " + " | ".join(cells) + " |")
    return lines


def _accuracy_cell(value: dict | None) -> str:
    if value is None:
        return "-"
    if value.get("lo") is None:
        return f"{value['acc']:.3f}"
    return f"{value['acc']:.3f} [{value['lo']:.3f}, {value['hi']:.3f}]"


def record_evaluation(folder: str | Path, scoring: dict, accuracy: dict) -> bool:
    """Add (or replace: same data, same tokenization) a scoring of `folder` to its card's evaluation
    section; False, changing nothing, when the folder has no card written by xlpo."""
    folder = Path(folder)
    if not is_xlpo_card(folder):
        return False
    path = folder / EVALUATIONS
    evaluations = [e for e in (read_json(path) if path.is_file() else [])
                   if e.get("data_fingerprint") != scoring["data_fingerprint"]]
    evaluations.append({"data": scoring["data"], "data_fingerprint": scoring["data_fingerprint"],
                        "reference": scoring.get("reference"), "accuracy": accuracy,
                        "scored_at": datetime.now(timezone.utc).strftime("%Y-%m-%d")})
    write_json(path, evaluations)
    card = (folder / CARD).read_text(encoding="utf-8")
    head, rest = card.split(START, 1)
    tail = rest.split(END, 1)[1]
    write_text(folder / CARD, head + "\n".join([START, *evaluation_section(evaluations), END]) + tail)
    return True
