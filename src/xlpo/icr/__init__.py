"""Implicit Cross-Lingual Rewarding (ICR, arXiv 2503.04647) as a resumable pipeline.

sample -> score (implicit cross-lingual reward) -> fit the length penalty -> pairs -> train,
iterated; see docs/icr.md.
"""
