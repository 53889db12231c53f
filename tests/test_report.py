"""report.html / report.md: self-contained, every data-derived string escaped, every section and plot present."""

from __future__ import annotations

import json
import re

from test_analysis import make_synthetic_runs

from xlpo.eval.analysis.driver import analyze
from xlpo.eval.report import Para, Section, Table, render_html, render_markdown

EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _inject(root):
    """Rename language "de" to EVIL, prefix every id with EVIL, in the scores and the data file."""
    for path in [*root.glob("runs/*/scores.jsonl"), root / "train.jsonl"]:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        for r in rows:
            r["id"] = EVIL + r["id"]
            if r["lang"] == "de":
                r["lang"] = EVIL
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_report_escapes_injected_strings(tmp_path):
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de", "vi", "zh"), per_lang=15, steps=6, sweep=False,
                                  name_override={"simpo": EVIL + " $x^2$ | pipe"})
    _inject(tmp_path)
    res = analyze(dirs, tmp_path / "out", n_boot=30, note=EVIL)
    assert EVIL in res["accuracy"]["dpo-s42"]  # the language really went through
    assert EVIL + " $x^2$ | pipe" in {g["label"] for g in res["groups"]}  # and the group label
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert ESCAPED in page
    assert page.count(ESCAPED) >= 10  # note, run name and language code in many tables
    assert f'<p class="note">{ESCAPED}</p>' in page
    # self-contained: no external resources, every image inlined
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    imgs = re.findall(r'<img src="([^"]+)"', page)
    assert imgs and all(i.startswith("data:image/png;base64,") for i in imgs)
    assert len(imgs) == len(res["plots"]) == 6 and "alpha" not in res["plots"]  # no sweep: no alpha plot
    for anchor in ("headline", "setup", "seeds", "paper", "accuracy", "kde", "shift", "training", "alpha",
                   "tokenization"):
        assert f'<section id="{anchor}">' in page
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "<script" not in md.lower() and ESCAPED in md
    assert "\\| pipe" in md  # a pipe in a table cell does not split the cell


def test_renderers_escape_every_block():
    sections = [Section("s", EVIL, [Para(EVIL), Table([EVIL, "verdict"], [[EVIL, "agrees"], ["x", EVIL],
                                                                          ["y", "not established"]], EVIL)])]
    results = {"runs": [{"name": EVIL}]}
    page = render_html(results, sections, {})
    assert "<script" not in page.lower() and page.count(ESCAPED) == 8  # runs line, nav, h2, para, caption, header, 2 cells
    assert '<td class="v-agrees">agrees</td>' in page
    assert '<td class="v-not-established">not established</td>' in page
    md = render_markdown(results, sections, {})
    assert "<script" not in md.lower()


def test_report_without_optional_inputs(tmp_path):
    """Two runs, no training logs, no data file: the report says what is missing instead of failing."""
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de", "it"), per_lang=10, steps=3, sweep=False)
    for d in dirs:
        meta = json.loads((d / "scoring.json").read_text())
        meta.update(train_dir=None, data=None)
        (d / "scoring.json").write_text(json.dumps(meta))
    keep = [d for d in dirs if d.name.startswith(("dpo-", "capo-"))]
    res = analyze(keep, tmp_path / "out", n_boot=20)
    assert res["bleu"]["file"] is None and res["correlation"]["grid"]["r"] is None
    assert set(res["plots"]) == {"accuracy", "kde", "shift", "tokenization"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "No training logs" in md and "No alpha sweep" in md
    verdicts = {v["verdict"] for v in res["against_paper"]}
    assert "cannot check" in verdicts
