"""X-AlpacaEval (ICR paper, Tables 2, 6, 10-13): judged win rate and length-controlled win rate per language.

The candidate answers the 805 AlpacaEval instructions in each language; a judge compares each answer
with a baseline's using AlpacaEval 2.0's pairwise protocol (`judge`); `xlpo.bench.lc_winrate` turns
the annotations into WR and AlpacaEval 2.0's LC with 95% intervals (`lc_files`: the gamed-baseline
annotations that LC needs). Layout and options: docs/benchmarks.md.
"""

from xlpo.bench.xalpacaeval.data import LANGUAGES, PAPER_LANGUAGES, Instruction, load_instructions, read_answers
from xlpo.bench.xalpacaeval.judge import judge_messages, judge_request, preference_for_second
from xlpo.bench.xalpacaeval.run import ORDERS, plan_judgments, run_xalpacaeval, table

__all__ = ["LANGUAGES", "ORDERS", "PAPER_LANGUAGES", "Instruction", "judge_messages", "judge_request",
           "load_instructions", "plan_judgments", "preference_for_second", "read_answers", "run_xalpacaeval", "table"]
