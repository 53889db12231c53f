"""`xlpo serve`: an OpenAI-compatible chat-completions server over a model and optional adapter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from xlpo.cli import app, quiet_libraries, user_errors
from xlpo.errors import UserError


@app.command()
@user_errors
def serve(
    model: Annotated[str, typer.Option("--model", help="Model: 'embedded', a local folder or a Hub id.")] = "embedded",
    adapter: Annotated[Optional[Path], typer.Option("--adapter", help="LoRA adapter folder (e.g. RUN/adapter).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback exposes the model.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port; 0 picks a free one.")] = 8000,
    served_name: Annotated[Optional[str], typer.Option(
        "--served-name", help="Model name clients send; default: the adapter's or model's folder name.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")] = "auto",
    api_key_env: Annotated[Optional[str], typer.Option(
        "--api-key-env", help="Require 'Authorization: Bearer KEY' with KEY read from this environment variable.")] = None,
    max_tokens_limit: Annotated[int, typer.Option("--max-tokens-limit", min=1, help="Largest max_tokens accepted.")] = 4096,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Run the model repo's own code.")] = False,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Most sequences (requests x n) generated together in one call.")] = 8,
    batch_wait_ms: Annotated[float, typer.Option(
        "--batch-wait-ms", min=0, help="How long a waiting request waits for others to share its call.")] = 20,
) -> None:
    """Serve POST /v1/chat/completions (streamed or not) and GET /v1/models until interrupted (Ctrl-C)."""
    # Imported here, not at the top: they load torch and transformers, which `xlpo --help` must not.
    from xlpo.serve.engine import BatchingEngine
    from xlpo.serve.generation import BatchGenerator
    from xlpo.serve.app import ChatService, is_loopback, make_server
    from xlpo.generation import make_generator, render_prompt

    if api_key_env and not os.environ.get(api_key_env):  # checked before the model loads
        raise UserError(f"--api-key-env {api_key_env}: that environment variable is not set")
    quiet_libraries()
    name = served_name or (adapter.resolve().name if adapter else Path(model).name)
    generator = make_generator(model, str(adapter) if adapter else None, dtype, "hf", trust_remote_code)
    engine = BatchingEngine(BatchGenerator(generator.model, generator.tokenizer), batch_size, batch_wait_ms / 1000)
    service = ChatService(engine, name, max_tokens_limit,
                          render=lambda messages: render_prompt(generator.tokenizer, messages))
    server = make_server(service, host, port, api_key_env)
    bound_host, bound_port = server.server_address[:2]
    if not is_loopback(host):
        typer.echo(f"xlpo serve: warning: listening on {host}, reachable from other machines"
                   + ("" if api_key_env else " without an API key"), err=True)
    typer.echo(f"xlpo serve: '{name}' at http://{bound_host}:{bound_port}/v1 (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.close()
