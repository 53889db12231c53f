"""`xlpo serve` as a Python API: check the inputs, load the model, wire engine, service and server.

Everything that can be checked without the model (the adapter folder, the API key variable, the
port, the limits) is checked before the model loads, so a mistake costs a second, not a model load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from xlpo.errors import UserError
from xlpo.generation import make_generator
from xlpo.models import check_adapter
from xlpo.serve.app import MAX_BODY_BYTES, Server, api_key_from, bind_socket, build_app, is_loopback
from xlpo.serve.engine import BatchingEngine
from xlpo.serve.generation import BatchGenerator
from xlpo.serve.service import ChatService, Limits, PromptLength


@dataclass(frozen=True)
class Scheduling:
    batch_size: int = 8  # most rows (requests x n) generated together
    max_wait: float = 0.02  # seconds a request waits for others to share its call
    max_queue: int = 64  # requests waiting beyond the running batch; more are answered 503
    max_batch_tokens: int | None = None  # cache positions per batch; None: the context length


def context_length(model, tokenizer) -> int | None:
    """Prompt + completion tokens the model takes: its config's max_position_embeddings, else the
    tokenizer's model_max_length when that is a real number (transformers uses ~1e30 for unknown)."""
    length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(length, int) and length > 0:
        return length
    length = getattr(tokenizer, "model_max_length", None)
    return length if isinstance(length, int) and 0 < length < 10**8 else None


def build_service(generator, served_name: str, scheduling: Scheduling = Scheduling(),
                  limits: Limits = Limits()) -> ChatService:
    """The service over a loaded Hugging Face generator: its engine running, its prompts measured and
    held to the model's context length (unless `limits` names one)."""
    model, tokenizer = generator.model, generator.tokenizer
    context = limits.context_length or context_length(model, tokenizer)
    # One batch holds at most one whole context by default: the cache (and memory) a batch can take is
    # bounded by what one request may ask for anyway.
    batch_tokens = scheduling.max_batch_tokens or context
    engine = BatchingEngine(BatchGenerator(model, tokenizer), scheduling.batch_size, scheduling.max_wait,
                            scheduling.max_queue, batch_tokens)
    limits = replace(limits, context_length=context, max_batch_tokens=batch_tokens)
    return ChatService(engine, served_name, limits, PromptLength(tokenizer))


def serve(model: str = "embedded", adapter: Path | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          served_name: str | None = None, dtype: str = "auto", api_key_env: str | None = None,
          trust_remote_code: bool = False, scheduling: Scheduling = Scheduling(), limits: Limits = Limits(),
          max_body_bytes: int = MAX_BODY_BYTES, echo: Callable[[str], None] = print) -> None:
    """Serve `model` (+ `adapter`) until interrupted (Ctrl-C)."""
    if adapter is not None:
        check_adapter(adapter)
    api_key = api_key_from(api_key_env)
    if scheduling.max_queue < 1 or max_body_bytes < 1 or limits.request_timeout <= 0:
        raise UserError("--max-queue, --max-body-mb and --request-timeout must be positive")
    sock = bind_socket(host, port)
    name = served_name or (adapter.resolve().name if adapter else Path(model).name)
    try:
        generator = make_generator(model, str(adapter) if adapter else None, dtype, "hf", trust_remote_code)
    except BaseException:
        sock.close()
        raise
    service = build_service(generator, name, scheduling, limits)
    server = Server(build_app(service, api_key, max_body_bytes), sock, log_level="info")
    bound_host, bound_port = server.server_address
    if not is_loopback(host):
        echo(f"xlpo serve: warning: listening on {host}, reachable from other machines"
             + ("" if api_key_env else " without an API key"))
    echo(f"xlpo serve: '{name}' at http://{bound_host}:{bound_port}/v1 (context "
         f"{service.limits.context_length or 'unchecked'} tokens, batches of {scheduling.batch_size}, "
         f"queue {scheduling.max_queue}; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # uvicorn stops gracefully on Ctrl-C, then passes the signal on
        pass
    finally:
        server.server_close()
        service.engine.close()
