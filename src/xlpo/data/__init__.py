"""Data stages: preference records, tokenization and batching, and builders of preference sets (MTPE)."""
