"""Clients of chat models: the one `ChatBackend` interface, its two kinds (a model loaded here, an
OpenAI-compatible endpoint through the official `openai` SDK), and resumable request stages.

Benchmarks (`xlpo.bench`) and ICR's judge (`xlpo.icr.stats`) talk to models only through this package.
"""
