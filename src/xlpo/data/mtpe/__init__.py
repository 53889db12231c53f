"""CAPO's preference pairs from machine-translation post-editing (MTPE) data.

The prompt asks to translate an English source, the chosen response is the human post-edit and
the rejected one the raw machine translation (CAPO, arXiv 2511.07691, section 3.3). Sources:

- DivEMT (en-ar, en-it, en-nl, en-tr, en-uk, en-vi): `main.tsv` or `warmup.tsv` in a local folder
  (the Hub's file layout), or `GroNLP/divemt` on the Hugging Face Hub.
- MLQE-PE (en-de, en-zh): the upstream `post-editing/` and `direct-assessments/` folders, or
  `wmt/wmt20_mlqe_task2` on the Hub (the same post-editing data, WMT20 QE task 2).

Construction (the paper's, plus the rules it leaves open; see docs/data.md):
sources longer than 50 characters; pairs whose MT equals the post-edit dropped unless asked;
exact duplicates dropped; each distinct English source assigned to exactly one of train /
validation / evaluation (across all directions and datasets), up to `per_split` pairs per direction
and split, seeded; a direction short of data gives what it has and the shortfall is reported.
Everything is deterministic: ids are content hashes and re-runs write byte-identical files.

Modules (everything public is re-exported here, so `from xlpo.data.mtpe import ...` is unchanged):

- `common`: constants, `make_prompt`, source ids, `Triple` / `Loaded`, option parsing, data
  locations, the low-level file readers and `_load_hub` (one split of a Hub dataset).
- `divemt`: DivEMT's TSV files and Hub rows into triples.
- `mlqe_pe`: MLQE-PE's post-editing and direct-assessment files and Hub rows into triples.
- `build`: filtering, split assignment, the manifest, writing (`build_mtpe`, `write_mtpe`, `make_mtpe`).
"""

from __future__ import annotations

from xlpo.data.mtpe.build import (
    MtpeBuild,
    assign_splits,
    build_mtpe,
    filter_triples,
    make_mtpe,
    write_mtpe,
)
from xlpo.data.mtpe.common import (
    DEFAULT_MIN_SOURCE_CHARS,
    DEFAULT_PER_SPLIT,
    DEFAULT_SEED,
    DIRECTIONS,
    DIVEMT,
    DIVEMT_CONFIGS,
    DIVEMT_HUB,
    DIVEMT_LANG_IDS,
    DROP_REASONS,
    LANGUAGE_NAMES,
    MLQE_PE,
    MLQE_PE_HUB,
    MLQE_SPLITS,
    PROMPT_TEMPLATE,
    SPLITS,
    SRC_LANG,
    Loaded,
    Triple,
    default_data_dir,
    make_prompt,
    parse_directions,
    resolve_source,
    source_id,
    source_key,
)
from xlpo.data.mtpe.common import _load_hub as _load_hub
from xlpo.data.mtpe.divemt import (
    divemt_rows_to_triples,
    load_divemt_hub,
    read_divemt_dir,
)
from xlpo.data.mtpe.mlqe_pe import (
    load_mlqe_pe_hub,
    mlqe_da_path,
    mlqe_pe_paths,
    mlqe_pe_rows_to_triples,
    read_mlqe_pe_dir,
)

# `_load_hub` is re-exported too (not in __all__): tests patch mtpe._load_hub and the Hub loaders look it up here.
__all__ = [
    "DEFAULT_MIN_SOURCE_CHARS",
    "DEFAULT_PER_SPLIT",
    "DEFAULT_SEED",
    "DIRECTIONS",
    "DIVEMT",
    "DIVEMT_CONFIGS",
    "DIVEMT_HUB",
    "DIVEMT_LANG_IDS",
    "DROP_REASONS",
    "LANGUAGE_NAMES",
    "MLQE_PE",
    "MLQE_PE_HUB",
    "MLQE_SPLITS",
    "PROMPT_TEMPLATE",
    "SPLITS",
    "SRC_LANG",
    "Loaded",
    "MtpeBuild",
    "Triple",
    "assign_splits",
    "build_mtpe",
    "default_data_dir",
    "divemt_rows_to_triples",
    "filter_triples",
    "load_divemt_hub",
    "load_mlqe_pe_hub",
    "make_mtpe",
    "make_prompt",
    "mlqe_da_path",
    "mlqe_pe_paths",
    "mlqe_pe_rows_to_triples",
    "parse_directions",
    "read_divemt_dir",
    "read_mlqe_pe_dir",
    "resolve_source",
    "source_id",
    "source_key",
    "write_mtpe",
]
