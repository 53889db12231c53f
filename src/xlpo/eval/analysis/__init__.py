"""Per-language analysis of scored runs: the CAPO paper's Figures 4-7 and 9 with intervals over seeds and pairs.

Modules, each importing only those listed before it: `accuracy` (rows, reward accuracy), `kde`,
`correlation`, `runs` (scored runs on disk), `groups` (seeds as replicates), `compare` (method
differences over seeds and pairs), `findings` (typed step results), `paper` (the claims),
`results` (results.json) and `driver` (`analyze`, end to end). docs/analysis.md has the definitions.
"""
