"""M-IFEval: rule-checked instruction following in English, Spanish, French and Japanese.

`run_mifeval` generates with the candidate and reports strict/loose prompt- and instruction-level accuracy
per language; `table` formats those results for the CLI.
"""

from xlpo.bench.mifeval.run import BENCHMARK, LANGUAGES, run_mifeval, table

__all__ = ["BENCHMARK", "LANGUAGES", "run_mifeval", "table"]
