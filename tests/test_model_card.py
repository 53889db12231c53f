"""Model cards of saved adapters and models (Hub format, escaped data), their evaluation section filled in by
`xlpo eval rewards`, and `xlpo push` against a mocked Hub API."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from xlpo.cli import main
from xlpo.errors import UserError
from xlpo.eval.rewards import ScoringRequest, score_run
from xlpo.model_card import END, START, front_matter, md, write_card
from xlpo.push import push
from xlpo.train.config import load_config
from xlpo.train.trainer import train

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"
EVIL_LANG = "x\n---\nlicense: evil\n<script>alert(1)</script> | *b* [l](http://e)"


def _train(out: Path, model_dir, data: Path, *overrides):
    return train(load_config(None, [f"model.name_or_path={model_dir}", f"data.train={data}", f"training.output_dir={out}",
                                    f"reference.cache_dir={out.parent / 'ref'}", "training.max_steps=2",
                                    "training.batch_size=4", "training.report_to=none", *overrides]))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    """A LoRA DPO run on data whose file name and one language code try to break out of YAML and Markdown."""
    root = tmp_path_factory.mktemp("card")
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    rows[0]["lang"] = EVIL_LANG
    data = root / "<img src=x onerror=alert(1)>_prefs.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return _train(root / "run", tiny_model_dir, data, "loss.name=dpo", "loss.beta=0.25").output_dir, data


def test_every_saved_adapter_has_a_hub_card_with_the_run_facts(lora_run):
    run, _ = lora_run
    card = (run / "adapter" / "README.md").read_text()
    meta = front_matter(run / "adapter" / "README.md")
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert {"xlpo", "dpo", "lora"} <= set(meta["tags"])
    assert meta["language"] == ["de", "en", "zh"]  # language codes only: the Hub's field takes nothing else
    assert set(meta) == {"language", "library_name", "pipeline_tag", "tags"}  # a local base: no base_model, license
    summary = json.loads((run / "train_summary.json").read_text())
    for fact in ("| loss | `dpo` |", "beta = 0.25", f"{summary['pairs']} pairs", "| steps | 2 (`training.max_steps`) |",
                 "4 pairs x 1 accumulation x 1 process(es)", "r 16, alpha 32", "- xlpo 0.1.0", "- peft ",
                 summary["data_fingerprint"], "the policy's base weights with its adapters disabled"):
        assert fact in card, fact
    assert f"{START}\nNot scored yet" in card


def test_data_derived_text_cannot_inject_markdown_html_or_metadata(lora_run):
    run, _ = lora_run
    card = (run / "adapter" / "README.md").read_text()
    body = card.split("\n---\n", 1)[1]
    assert "<script>" not in card and "<img" not in card and "&lt;img src=x onerror=alert(1)&gt;\\_prefs.jsonl" in body
    assert "\nlicense: evil" not in body and "license" not in front_matter(run / "adapter" / "README.md")
    line = next(row for row in body.splitlines() if row.startswith("| pairs per language |"))
    assert ", x --- license: evil &lt;script&gt;alert(1)&lt;/script&gt; \\| \\*b\\* \\[l\\](http://e) 1, " in line
    assert line.count(" | ") == 1 and line.endswith(" |")  # the language's '|' cannot open a table cell
    assert md("a|b *c* [d](e) <f> `g` _h_") == "a\\|b \\*c\\* \\[d\\](e) &lt;f&gt; \\`g\\` \\_h\\_"


def test_scoring_an_adapter_fills_in_its_cards_evaluation_section(lora_run, tmp_path):
    run, data = lora_run
    adapter = run / "adapter"
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    logs = []
    scored = score_run(ScoringRequest(data=str(FIXTURE), out_dir=str(tmp_path / "scores"), model=_base_of(run),
                                      adapter=str(adapter), batch_size=4), log=logs.append)
    accuracy = json.loads((scored / "accuracy.json").read_text())
    card = (adapter / "README.md").read_text()
    section = card.split(START)[1].split(END)[0]
    assert "Not scored yet" not in section and "### prefs\\_small.jsonl" in section
    for lang, row in accuracy.items():
        cell = f"{row['sum']['acc']:.3f} [{row['sum']['lo']:.3f}, {row['sum']['hi']:.3f}]"
        assert re.search(rf"\| {lang} \| {row['sum']['n']} \| {re.escape(cell)} \|", section), lang
    assert "implicit reward" in section and any("model card updated" in m for m in logs)
    # Scoring other data adds a table; scoring the same data again replaces its table.
    score_run(ScoringRequest(data=str(data), out_dir=str(tmp_path / "scores2"), model=_base_of(run),
                             adapter=str(adapter), batch_size=4))
    score_run(ScoringRequest(data=str(FIXTURE), out_dir=str(tmp_path / "scores3"), model=_base_of(run),
                             adapter=str(adapter), batch_size=4, reference=False))
    section = (adapter / "README.md").read_text().split(START)[1].split(END)[0]
    assert section.count("### ") == 2 and "### prefs\\_small.jsonl" in section and "reference: none" in section
    assert (adapter / "adapter_model.safetensors").read_bytes() == weights
    assert front_matter(adapter / "README.md")["library_name"] == "peft"  # the rest of the card untouched


def _base_of(run: Path) -> str:
    return yaml.safe_load((run / "config.yaml").read_text())["model"]["name_or_path"]


def test_a_full_fine_tune_gets_a_transformers_card_and_a_hub_base_model_is_linked(tmp_path, tiny_model_dir):
    run = _train(tmp_path / "full", tiny_model_dir, FIXTURE, "loss.name=simpo", "lora.enabled=false",
                 "training.max_steps=1").output_dir
    meta = front_matter(run / "model" / "README.md")
    assert meta["library_name"] == "transformers" and "lora" not in meta["tags"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    summary = json.loads((run / "train_summary.json").read_text())
    for name, base, license_ in [("embedded", "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
                                 ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", None)]:
        config["model"]["name_or_path"] = name
        write_card(tmp_path / name.replace("/", "_"), config, summary, {"xlpo": "0.1.0"})
        meta = front_matter(tmp_path / name.replace("/", "_") / "README.md")
        assert meta["base_model"] == base and meta.get("license") == license_
        assert f"base_model:finetune:{base}" in meta["tags"]


class FakeHub:
    """HfApi's two calls that `xlpo push` makes, recorded; no network."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return type("RepoUrl", (), {"url": f"https://huggingface.co/{repo_id}"})()

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        uploaded = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        self.calls.append(("files", uploaded))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


def test_push_uploads_the_adapter_folder_with_the_token_from_the_environment(lora_run, monkeypatch):
    run, _ = lora_run
    monkeypatch.setenv("HF_TOKEN", "hf_pushSENTINEL123")
    hub = FakeHub()
    pushed = push(run, "someone/capo-test", private=True, api=hub)
    (_, repo, create), (_, _, upload), (_, files) = hub.calls
    assert repo == "someone/capo-test" and create["private"] is True and create["token"] == "hf_pushSENTINEL123"
    assert upload["folder_path"] == str(run / "adapter") and upload["token"] == "hf_pushSENTINEL123"
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(files)
    assert pushed.url.endswith("/commit/abc") and not pushed.card_written
    assert all(b"hf_pushSENTINEL123" not in p.read_bytes() for p in run.rglob("*") if p.is_file())


def test_push_writes_the_card_of_a_run_saved_before_cards(lora_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "old"
    shutil.copytree(lora_run[0], run)
    (run / "adapter" / "README.md").write_text("---\nlibrary_name: peft\n---\n# Model Card for Model ID\n")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    pushed = push(run / "adapter", "someone/old", api=FakeHub())  # the folder itself works too
    assert pushed.card_written and START in (run / "adapter" / "README.md").read_text()


def test_push_refuses_without_a_token_a_bad_repo_id_or_a_run_without_weights(lora_run, tmp_path, monkeypatch):
    run, _ = lora_run
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(UserError, match="no Hugging Face token: set HF_TOKEN in the environment"):
        push(run, "someone/x", api=FakeHub())
    with pytest.raises(UserError, match=f"{tmp_path}: no saved adapter or model"):
        push(tmp_path, "someone/x", api=FakeHub())
    with pytest.raises(UserError, match="repo id 'a/b/c'"):
        push(run, "a/b/c", api=FakeHub())


class RefusingHub(FakeHub):
    def __init__(self, error):
        super().__init__()
        self.error = error

    def create_repo(self, repo_id, **kwargs):
        raise self.error


def test_a_refused_or_failed_upload_is_one_line_without_the_token(lora_run, monkeypatch):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    run, _ = lora_run
    monkeypatch.setenv("HF_TOKEN", "hf_leakSENTINEL")
    response = httpx2.Response(401, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
    refused = HfHubHTTPError("401 Client Error: Unauthorized (Authorization: Bearer hf_leakSENTINEL)\nmore", response=response)
    with pytest.raises(UserError) as info:
        push(run, "someone/x", api=RefusingHub(refused))
    assert str(info.value) == ("push to someone/x: 401 Client Error: Unauthorized (Authorization: Bearer ***) "
                               "(the token was refused: check it)")
    with pytest.raises(UserError, match="push to someone/x: no route"):
        push(run, "someone/x", api=RefusingHub(httpx2.ConnectError("no route to host")))


def test_push_command_errors_are_one_line_with_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(sys, "argv", ["xlpo", "push", str(tmp_path), "someone/x"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"xlpo: error: {tmp_path}: no saved adapter or model")
    assert list(tmp_path.iterdir()) == []
