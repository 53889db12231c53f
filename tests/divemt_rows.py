"""Hand-written DivEMT-layout rows for the MTPE construction tests, written to a temporary folder at test time.

Not DivEMT data: invented sentences in the layout of DivEMT's `warmup.tsv` (a subset of its columns,
`lang_id` twice as upstream, pandas-style quoting), built to hold the edge cases the tests need:
3 long sources shared by ita and tur, 1 short source, 2 translated-from-scratch (`ht`) rows, 1
post-edit equal to its MT and 1 duplicate (source, MT, post-edit) triple in ita. Tests on the real
DivEMT files read them from ../shared/data at run time (tests/test_mtpe.py, `shared_data`).
"""

from __future__ import annotations

import csv
from pathlib import Path

HEADER = ['unit_id', 'flores_id', 'item_id', 'subject_id', 'lang_id', 'task_type', 'translation_type', 'hter',
          'src_text', 'mt_text', 'tgt_text', 'lang_id']

ROWS = [
    ['fixture-ita-1-pe1-1', '1', 'fixture-1', 'ita_t1', 'ita', 'pe1', 'pe', '23.5',
     'The old lighthouse on the northern cliff was repaired after the storm last winter.',
     'Il vecchio faro sulla scogliera nord è stato riparato dopo la tempesta lo scorso inverno.',
     'Il vecchio faro sulla scogliera settentrionale è stato riparato dopo la tempesta dello scorso inverno.',
     'ita'],
    ['fixture-ita-2-pe2-1', '1', 'fixture-1', 'ita_t2', 'ita', 'pe2', 'pe', '0.0',
     'The old lighthouse on the northern cliff was repaired after the storm last winter.',
     "Il vecchio faro sulla scogliera nord fu riparato dopo la tempesta dell'inverno scorso.",
     "Il vecchio faro sulla scogliera nord fu riparato dopo la tempesta dell'inverno scorso.",
     'ita'],
    ['fixture-ita-3-pe2-1', '1', 'fixture-1', 'ita_t3', 'ita', 'pe2', 'pe', '6.667',
     'The old lighthouse on the northern cliff was repaired after the storm last winter.',
     "Il vecchio faro sulla scogliera nord fu riparato dopo la tempesta dell'inverno scorso.",
     "Il vecchio faro sulla scogliera a nord fu riparato dopo la tempesta dell'inverno scorso.",
     'ita'],
    ['fixture-ita-1-pe1-2', '2', 'fixture-2', 'ita_t1', 'ita', 'pe1', 'pe', '7.143',
     'The guide said "stay on the marked path" before the group entered the dense forest.',
     'La guida ha detto "rimanere sul sentiero segnato" prima che il gruppo entrasse nella fitta foresta.',
     'La guida ha detto "restate sul sentiero segnato" prima che il gruppo entrasse nella fitta foresta.',
     'ita'],
    ['fixture-ita-2-pe2-2', '2', 'fixture-2', 'ita_t2', 'ita', 'pe2', 'pe', '7.143',
     'The guide said "stay on the marked path" before the group entered the dense forest.',
     'La guida ha detto "rimanere sul sentiero segnato" prima che il gruppo entrasse nella fitta foresta.',
     'La guida ha detto "restate sul sentiero segnato" prima che il gruppo entrasse nella fitta foresta.',
     'ita'],
    ['fixture-ita-1-pe1-3', '3', 'fixture-3', 'ita_t1', 'ita', 'pe1', 'pe', '40.0',
     'Farmers in the valley switched to drought-resistant crops after three dry summers.',
     'Gli agricoltori della valle sono passati a colture resistenti alla siccità dopo tre estati secche.',
     'Dopo tre estati secche, gli agricoltori della valle sono passati a colture resistenti alla siccità.',
     'ita'],
    ['fixture-ita-1-pe1-4', '4', 'fixture-4', 'ita_t1', 'ita', 'pe1', 'pe', '50.0',
     'Short source sentence here.',
     'Breve frase sorgente qui.',
     'Una breve frase sorgente.',
     'ita'],
    ['fixture-ita-3-ht-1', '1', 'fixture-1', 'ita_t3', 'ita', 'ht', 'ht', '',
     'The old lighthouse on the northern cliff was repaired after the storm last winter.',
     '',
     'Il vecchio faro sulla scogliera nord venne riparato dopo la tempesta dello scorso inverno.',
     'ita'],
    ['fixture-tur-1-pe1-1', '1', 'fixture-1', 'tur_t1', 'tur', 'pe1', 'pe', '25.0',
     'The old lighthouse on the northern cliff was repaired after the storm last winter.',
     'Kuzey uçurumundaki eski deniz feneri geçen kış fırtınadan sonra onarıldı.',
     'Kuzey yamacındaki eski deniz feneri geçen kışki fırtınadan sonra onarıldı.',
     'tur'],
    ['fixture-tur-1-pe1-2', '2', 'fixture-2', 'tur_t1', 'tur', 'pe1', 'pe', '20.0',
     'The guide said "stay on the marked path" before the group entered the dense forest.',
     'Rehber, grup yoğun ormana girmeden önce "işaretli yolda kalın" dedi.',
     'Rehber, grup sık ormana girmeden önce "işaretli patikada kalın" dedi.',
     'tur'],
    ['fixture-tur-1-pe1-3', '3', 'fixture-3', 'tur_t1', 'tur', 'pe1', 'pe', '18.182',
     'Farmers in the valley switched to drought-resistant crops after three dry summers.',
     'Vadideki çiftçiler üç kurak yazın ardından kuraklığa dayanıklı ürünlere geçti.',
     'Vadideki çiftçiler, üç kurak yazın ardından kuraklığa dayanıklı ürünlere geçtiler.',
     'tur'],
    ['fixture-tur-2-ht-2', '2', 'fixture-2', 'tur_t2', 'tur', 'ht', 'ht', '',
     'The guide said "stay on the marked path" before the group entered the dense forest.',
     '',
     'Rehber, grup sık ormana girmeden önce "işaretli patikadan ayrılmayın" dedi.',
     'tur'],
]


def write_divemt_fixture(folder: Path, rows: list[list[str]] | None = None) -> Path:
    """`folder`/warmup.tsv holding `rows` (default: HEADER and ROWS), tab-separated and quoted only where
    needed, as pandas writes it; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "warmup.tsv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows if rows is not None else [HEADER, *ROWS])
    return folder
