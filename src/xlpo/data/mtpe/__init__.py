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

Modules (import from them directly):

- `common`: constants, `make_prompt`, source ids, `Triple` / `Loaded`, option parsing, data
  locations, the low-level file readers and `load_hub_split` (one split of a Hub dataset).
- `divemt`: DivEMT's TSV files and Hub rows into triples.
- `mlqe_pe`: MLQE-PE's post-editing and direct-assessment files and Hub rows into triples.
- `build`: filtering, split assignment, the manifest, writing (`build_mtpe`, `write_mtpe`, `make_mtpe`).
"""
