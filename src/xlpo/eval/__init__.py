"""Evaluation: per-example scoring of preference pairs and per-language metrics."""
