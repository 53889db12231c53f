"""`report.md` and one self-contained `report.html`: the report's blocks and their two renderers.

The report is a list of sections (eval/report_sections.py says what they hold) made of neutral
blocks (paragraphs, tables, images, preformatted text); two renderers turn it into Markdown and
HTML. Every string that comes from the data (run names, language codes, paths, config values) is
escaped by the renderers, never by the callers: in HTML through `html.escape`, in Markdown through
`html.escape` plus `|` and backslash escaping in tables. The HTML inlines the PNG plots as base64
data URIs and loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlpo.fileio import write_text


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Image:
    name: str  # key in the plots mapping
    caption: str


@dataclass
class Pre:
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# renderers
# ---------------------------------------------------------------------------------------------

def _md(text: str) -> str:
    return html.escape(str(text), quote=False)


def _md_cell(text: str) -> str:
    return _md(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Mapping[str, Any], sections: Sequence[Section], plot_paths: Mapping[str, str]) -> str:
    out = ["# xlpo analysis report", ""]
    if results.get("config", {}).get("note"):
        out += [f"**{_md(results['config']['note'])}**", ""]
    out.append(_md(f"Runs: {', '.join(r['name'] for r in results['runs'])}. Machine-readable results: results.json."))
    out.append("")
    for sec in sections:
        out += [f"## {_md(sec.title)}", ""]
        for b in sec.blocks:
            if isinstance(b, Para):
                out += [_md(b.text), ""]
            elif isinstance(b, Table):
                if b.caption:
                    out += [f"**{_md(b.caption)}**", ""]
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append("|" + "|".join("---" for _ in b.headers) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                out.append("")
            elif isinstance(b, Image):
                if b.name in plot_paths:
                    out += [f"![{_md(b.caption)}]({plot_paths[b.name]})", "", f"*{_md(b.caption)}*", ""]
            elif isinstance(b, Pre):
                out += ["```", b.text.replace("```", "'''"), "```", ""]
    return "\n".join(out)


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0 auto;max-width:1150px;padding:16px 24px;
color:#222;line-height:1.45;font-size:14px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:30px}
table{border-collapse:collapse;margin:6px 0 16px;font-size:12.5px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f4f6}tr:nth-child(even) td{background:#fafafa}
caption{text-align:left;font-weight:600;padding:4px 0;caption-side:top}
figure{margin:8px 0 18px}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:12px;color:#555}
nav a{margin-right:12px}.muted{color:#666;font-size:12px}
.note{background:#fff4d6;border:1px solid #e8c96a;padding:6px 10px;font-weight:600}
.v-agrees{background:#e3f4e1!important}.v-contradicts{background:#fbe1e1!important}
.v-inconclusive,.v-not-established{background:#fdf3d8!important}.v-cannot-check,.v-by-construction{background:#eeeeee!important}
"""

_VERDICT_CLASS = {"agrees": "v-agrees", "contradicts": "v-contradicts", "inconclusive": "v-inconclusive",
                  "not established": "v-not-established", "by construction": "v-by-construction",
                  "cannot check": "v-cannot-check"}


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_html(results: Mapping[str, Any], sections: Sequence[Section], images: Mapping[str, bytes]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>xlpo analysis report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>xlpo analysis report</h1>",
             f'<p class="note">{_h(results["config"]["note"])}</p>' if results.get("config", {}).get("note") else "",
             f'<p class="muted">Runs: {_h(", ".join(r["name"] for r in results["runs"]))}. '
             "Machine-readable results: results.json beside this file.</p>",
             "<nav>" + "".join(f'<a href="#{_h(s.anchor)}">{_h(s.title)}</a>' for s in sections) + "</nav>"]
    for sec in sections:
        parts.append(f'<section id="{_h(sec.anchor)}"><h2>{_h(sec.title)}</h2>')
        for b in sec.blocks:
            if isinstance(b, Para):
                parts.append(f"<p>{_h(b.text)}</p>")
            elif isinstance(b, Table):
                verdict_col = b.headers.index("verdict") if "verdict" in b.headers else None
                rows = []
                for row in b.rows:
                    cells = []
                    for j, c in enumerate(row):
                        cls = _VERDICT_CLASS.get(c) if j == verdict_col else None
                        cells.append(f'<td class="{cls}">{_h(c)}</td>' if cls else f"<td>{_h(c)}</td>")
                    rows.append("<tr>" + "".join(cells) + "</tr>")
                cap = f"<caption>{_h(b.caption)}</caption>" if b.caption else ""
                parts.append(f"<table>{cap}<thead><tr>" + "".join(f"<th>{_h(h)}</th>" for h in b.headers)
                             + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
            elif isinstance(b, Image):
                data = images.get(b.name)
                if data:
                    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
                    parts.append(f'<figure><img src="{uri}" alt="{_h(b.caption)}">'
                                 f"<figcaption>{_h(b.caption)}</figcaption></figure>")
            elif isinstance(b, Pre):
                parts.append(f"<pre>{_h(b.text)}</pre>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_reports(sections: Sequence[Section], results: Mapping[str, Any], out_dir: str | Path,
                  plot_files: Mapping[str, Path]) -> tuple[Path, Path]:
    """Write report.md (plots linked as files) and report.html (plots inlined) into `out_dir`."""
    out = Path(out_dir)
    rel = {k: Path(v).resolve().relative_to(out.resolve()).as_posix() for k, v in plot_files.items()}
    images = {k: Path(v).read_bytes() for k, v in plot_files.items()}
    write_text(out / "report.md", render_markdown(results, sections, rel))
    write_text(out / "report.html", render_html(results, sections, images))
    return out / "report.md", out / "report.html"
