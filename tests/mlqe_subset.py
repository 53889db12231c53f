"""A few real MLQE-PE rows in the upstream layout, cut from ../shared/data at test time (never tracked).

The rows are chosen for what they exercise: en-de train 1-6, dev 1-3, test20 1-3; en-zh train 1-4,
dev 732 (a spacing-only edit, so MT == post-edit), 1, 2; test20 531, 1, 2. The direct-assessment
TSVs keep the same rows (their `index` column shows the original position); en-zh test20 gets no
TSV on purpose, so that its sources are detokenized instead.
"""

from __future__ import annotations

from pathlib import Path

# (post-editing folder, file prefix, direct-assessment TSV or None) -> 1-based line numbers
ROWS = {
    ("train/en-de-train", "train", "train/en-de-train/train.ende.df.short.tsv"): [1, 2, 3, 4, 5, 6],
    ("dev/en-de-dev", "dev", "dev/en-de-dev/dev.ende.df.short.tsv"): [1, 2, 3],
    ("test/en-de-test20", "test20", "test/en-de/test20.ende.df.short.tsv"): [1, 2, 3],
    ("train/en-zh-train", "train", "train/en-zh-train/train.enzh.df.short.tsv"): [1, 2, 3, 4],
    ("dev/en-zh-dev", "dev", "dev/en-zh-dev/dev.enzh.df.short.tsv"): [732, 1, 2],
    ("test/en-zh-test20", "test20", None): [531, 1, 2],
}


def build_mlqe_subset(mlqe_pe: Path, dest: Path) -> Path:
    """Write the chosen rows of the MLQE-PE copy at `mlqe_pe` into `dest`, byte for byte."""
    for (folder, prefix, assessments), numbers in ROWS.items():
        for ext in ("src", "mt", "pe", "hter"):
            _copy_lines(mlqe_pe / "post-editing" / folder / f"{prefix}.{ext}",
                        dest / "post-editing" / folder / f"{prefix}.{ext}", numbers)
        if assessments:  # line 1 is the header, data row n is line n + 1
            _copy_lines(mlqe_pe / "direct-assessments" / assessments, dest / "direct-assessments" / assessments,
                        [1, *(n + 1 for n in numbers)])
    return dest


def _copy_lines(source: Path, target: Path, numbers: list[int]) -> None:
    lines = source.read_bytes().split(b"\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(lines[n - 1] + b"\n" for n in numbers))
