"""Building and writing the splits: filtering, the seeded split assignment, the manifest, the files.

`build_mtpe` resolves where each dataset comes from, reads it (`divemt`, `mlqe_pe`), drops unusable
pairs (`filter_triples`), gives each distinct English source to one of train / validation /
evaluation (`assign_splits`) and describes the result in a manifest; `write_mtpe` writes the JSONL
files and manifest.json, and `make_mtpe` does both.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlpo import __version__
from xlpo.data.mtpe.common import (
    DEFAULT_MIN_SOURCE_CHARS,
    DEFAULT_PER_SPLIT,
    DEFAULT_SEED,
    DIRECTIONS,
    DIVEMT,
    DIVEMT_CONFIGS,
    DROP_REASONS,
    MLQE_PE,
    MLQE_SPLITS,
    PROMPT_TEMPLATE,
    SPLITS,
    SRC_LANG,
    Loaded,
    Triple,
    parse_mlqe_splits,
    split_sizes,
    sha1_hex,
    parse_directions,
    resolve_source,
    source_key,
)
from xlpo.data.mtpe.divemt import load_divemt_hub, read_divemt_dir
from xlpo.data.mtpe.mlqe_pe import load_mlqe_pe_hub, read_mlqe_pe_dir
from xlpo.errors import UserError
from xlpo.fileio import write_json, write_text
from xlpo.versions import package_version

# --------------------------------------------------------------------------------------------
# Filtering and splitting


def filter_triples(triples: Iterable[Triple], min_source_chars: int = DEFAULT_MIN_SOURCE_CHARS,
                   keep_identical: bool = False) -> tuple[list[Triple], Counter]:
    """Keep usable pairs; count the others by (direction, reason), first failing reason only."""
    kept: list[Triple] = []
    dropped: Counter = Counter()
    seen: set[str] = set()
    for t in triples:
        if len(t.source) <= min_source_chars:
            reason = "source_too_short"
        elif t.mt == t.pe and not keep_identical:
            reason = "identical_mt_pe"
        elif t.id in seen:
            reason = "duplicate_pair"
        else:
            seen.add(t.id)
            kept.append(t)
            continue
        dropped[(t.direction, reason)] += 1
    return kept, dropped


def _rank(seed: int, key: str) -> str:
    return sha1_hex(f"{seed}\x1f{key}")


def assign_splits(pairs: Iterable[Triple], directions: Iterable[str], per_split: Mapping[str, int],
                  seed: int = DEFAULT_SEED) -> dict[str, dict[str, list[Triple]]]:
    """Give each distinct source to one split, then take up to `per_split[split]` pairs per direction.

    Sources are visited in a seeded hash order (independent of file order). A source goes to the
    split whose directions of that source are least filled (relative to what is asked), among the
    splits where one of its directions still needs pairs; ties go to train, then validation, then
    evaluation. A source shared by several directions (DivEMT's sentences, some MLQE-PE ones) thus
    lands in the same split for all of them, and a direction short of data is shared out evenly.
    Where a split's pool overshoots (a source with several post-edits), a seeded choice keeps
    `per_split` pairs; the rest of that source stays unused, never moved to another split.
    """
    directions = list(directions)
    by_source: dict[str, dict[str, list[Triple]]] = defaultdict(lambda: defaultdict(list))
    for t in pairs:
        by_source[source_key(t.source)][t.direction].append(t)
    filled = {s: Counter() for s in SPLITS}
    pools: dict[str, dict[str, list[Triple]]] = {s: defaultdict(list) for s in SPLITS}
    for key in sorted(by_source, key=lambda k: _rank(seed, k)):
        groups = by_source[key]
        best, best_score = None, None
        for split in SPLITS:
            need = per_split[split]
            if need <= 0 or all(filled[split][d] >= need for d in groups):
                continue
            score = sum(min(filled[split][d] / need, 1.0) for d in groups) / len(groups)
            if best_score is None or score < best_score:
                best, best_score = split, score
        if best is None:
            continue
        for d, items in groups.items():
            if filled[best][d] < per_split[best]:
                pools[best][d].extend(items)
                filled[best][d] += len(items)
    order = {d: i for i, d in enumerate(DIRECTIONS)}
    result: dict[str, dict[str, list[Triple]]] = {}
    for split in SPLITS:
        result[split] = {}
        for d in directions:
            chosen = sorted(pools[split].get(d, []), key=lambda t: _rank(seed, t.id))[: per_split[split]]
            result[split][d] = sorted(chosen, key=lambda t: (order[t.direction], t.id))
    return result


# --------------------------------------------------------------------------------------------
# Building and writing


@dataclass
class MtpeBuild:
    """The three splits (rows in xlpo's preference format) and the manifest describing them."""

    splits: dict[str, list[dict[str, Any]]]
    manifest: dict[str, Any]

    def summary_lines(self) -> list[str]:
        """One line per shortfall and note, for people."""
        lines = []
        for s in self.manifest["shortfalls"]:
            lines.append(f"{s['direction']} {s['split']}: {s['written']} of {s['requested']} pairs "
                         f"({s['direction']} has {s['usable_pairs']} usable pairs from {s['usable_sources']} "
                         f"distinct sources in all)")
        lines.extend(self.manifest["notes"])
        return lines


def _detokenizer_info(directions: Iterable[str]) -> dict[str, str]:
    version = package_version("sacremoses")
    info = {}
    for d in directions:
        if DIRECTIONS[d] != MLQE_PE:
            info.setdefault(d.split("-")[1], "none (DivEMT is untokenized; whitespace normalised)")
            continue
        info.setdefault(SRC_LANG, f"sacremoses {version} MosesDetokenizer(lang='en'), used where the "
                                  f"direct-assessment TSV's untokenized source does not match")
        lang = d.split("-")[1]
        info[lang] = ("xlpo.data.detok.join_cjk_segments" if lang in ("zh", "ja")
                      else f"sacremoses {version} MosesDetokenizer(lang='{lang}')")
    return info


def build_mtpe(directions: str | Iterable[str] | None = None, *, divemt: str | Path | None = None,
               mlqe_pe: str | Path | None = None, per_split: int | Mapping[str, int] = DEFAULT_PER_SPLIT,
               seed: int = DEFAULT_SEED, min_source_chars: int = DEFAULT_MIN_SOURCE_CHARS,
               keep_identical: bool = False, divemt_config: str = "auto",
               mlqe_splits: str | Iterable[str] = MLQE_SPLITS) -> MtpeBuild:
    """Build CAPO's MTPE preference splits in memory (see `write_mtpe` / `make_mtpe` to write them).

    `divemt` / `mlqe_pe`: a local folder in the upstream layout, "hub" (or "hub:owner/name") for the
    Hugging Face Hub, or None for $XLPO_SHARED_DATA/<name> or ../shared/data/<name>.
    """
    directions = parse_directions(directions)
    sizes = split_sizes(per_split)
    splits_used = parse_mlqe_splits(mlqe_splits)
    if divemt_config not in DIVEMT_CONFIGS:
        raise UserError(f"unknown DivEMT config '{divemt_config}': expected one of {', '.join(DIVEMT_CONFIGS)}")
    datasets_needed = [ds for ds in (DIVEMT, MLQE_PE) if any(DIRECTIONS[d] == ds for d in directions)]

    loaded = Loaded()
    config: dict[str, Any] = {"directions": directions, "per_split": sizes, "seed": seed,
                              "min_source_chars": min_source_chars, "keep_identical": keep_identical}
    if DIVEMT in datasets_needed:
        kind, where = resolve_source(divemt, DIVEMT)
        if kind == "local":
            read_divemt_dir(where, directions, divemt_config, loaded)
            config[DIVEMT] = {"from": "local", "file": loaded.inputs[-1]["file"]}
        else:
            load_divemt_hub(directions, str(where), divemt_config, loaded)
            config[DIVEMT] = {"from": "hub", "repo": str(where), "config": loaded.inputs[-1]["config"]}
    if MLQE_PE in datasets_needed:
        kind, where = resolve_source(mlqe_pe, MLQE_PE)
        if kind == "local":
            read_mlqe_pe_dir(where, directions, splits_used, loaded)
        else:
            load_mlqe_pe_hub(directions, str(where), splits_used, loaded)
        config[MLQE_PE] = {"from": kind, "splits": splits_used, **({"repo": str(where)} if kind == "hub" else {})}

    pairs, dropped = filter_triples(loaded.triples, min_source_chars, keep_identical)
    dropped.update(loaded.skipped)
    assigned = assign_splits(pairs, directions, sizes, seed)

    usable_pairs = Counter(t.direction for t in pairs)
    usable_sources = {d: len({source_key(t.source) for t in pairs if t.direction == d}) for d in directions}
    read_rows = Counter(t.direction for t in loaded.triples)
    counts = {s: {d: len(assigned[s][d]) for d in directions} for s in SPLITS}
    shortfalls = [
        {"direction": d, "split": s, "requested": sizes[s], "written": counts[s][d],
         "usable_pairs": usable_pairs[d], "usable_sources": usable_sources[d]}
        for d in directions for s in SPLITS if counts[s][d] < sizes[s]
    ]
    manifest = {
        "kind": "xlpo-mtpe-preferences",
        "xlpo_version": __version__,
        "config": config,
        "prompt_template": PROMPT_TEMPLATE,
        "detokenizers": _detokenizer_info(directions),
        "counts": counts,
        "totals": {s: sum(counts[s].values()) for s in SPLITS},
        "available": {d: {"rows_read": read_rows[d] + sum(n for (dd, _), n in loaded.skipped.items() if dd == d),
                          "usable_pairs": usable_pairs[d], "usable_sources": usable_sources[d]}
                      for d in directions},
        "dropped": {d: {r: dropped[(d, r)] for r in DROP_REASONS} for d in directions},
        "dropped_total": {r: sum(dropped[(d, r)] for d in directions) for r in DROP_REASONS},
        "drop_reasons": DROP_REASONS,
        "shortfalls": shortfalls,
        "source_text": {d: dict(sorted(c.items())) for d, c in sorted(loaded.source_text.items())},
        "inputs": loaded.inputs,
        "notes": loaded.notes,
    }
    rows = {s: [t.to_row() for d in directions for t in assigned[s][d]] for s in SPLITS}
    return MtpeBuild(splits=rows, manifest=manifest)


def _jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_mtpe(build: MtpeBuild, out_dir: str | Path) -> dict[str, Path]:
    """Write train/validation/evaluation JSONL and manifest.json (each file atomically, manifest last)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    paths: dict[str, Path] = {}
    files: dict[str, Any] = {}
    for split in SPLITS:
        text = _jsonl_text(build.splits[split])
        path = out_dir / f"{split}.jsonl"
        write_text(path, text)
        paths[split] = path
        files[split] = {"path": path.name, "rows": len(build.splits[split]),
                        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    build.manifest["files"] = files
    paths["manifest"] = out_dir / "manifest.json"
    write_json(paths["manifest"], build.manifest)
    return paths


def make_mtpe(out_dir: str | Path, directions: str | Iterable[str] | None = None, **kwargs: Any
              ) -> tuple[MtpeBuild, dict[str, Path]]:
    """Build and write the MTPE preference splits into `out_dir`; returns the build and the paths."""
    build = build_mtpe(directions, **kwargs)
    return build, write_mtpe(build, out_dir)
