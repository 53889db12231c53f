"""`xlpo serve`: an OpenAI-compatible chat-completions server (FastAPI on uvicorn) over a model and an
optional LoRA adapter, with requests batched into shared `generate` calls.
"""
