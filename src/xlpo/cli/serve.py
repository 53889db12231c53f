"""`xlpo serve`: an OpenAI-compatible chat-completions server over a model and optional adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xlpo.cli.command import app, quiet_libraries, user_errors


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
    max_queue: Annotated[int, typer.Option(
        "--max-queue", min=1, help="Requests that may wait for a batch; more are answered 503 with Retry-After.")] = 64,
    max_batch_tokens: Annotated[Optional[int], typer.Option(
        "--max-batch-tokens", min=1, help="Cache positions (rows x (longest prompt + largest max_tokens)) one batch "
                                          "may hold; default the model's context length.")] = None,
    request_timeout: Annotated[float, typer.Option(
        "--request-timeout", min=0.001, help="Seconds a request may take from arrival to its last token; then 504.")] = 600,
    max_body_mb: Annotated[float, typer.Option(
        "--max-body-mb", min=0.001, help="Largest request body in MiB; larger ones are answered 413.")] = 4,
) -> None:
    """Serve POST /v1/chat/completions (streamed or not) and GET /v1/models until interrupted (Ctrl-C).

    Requests that cannot fit (prompt tokens + max_tokens over the model's context) are answered 400 with
    the numbers, as the OpenAI API does; a streaming client that leaves stops its generation."""
    # Imported here, not at the top: they load torch and transformers, which `xlpo --help` must not.
    from xlpo.serve.run import Scheduling, serve as run_server
    from xlpo.serve.service import Limits

    quiet_libraries()
    run_server(model, adapter, host=host, port=port, served_name=served_name, dtype=dtype, api_key_env=api_key_env,
               trust_remote_code=trust_remote_code,
               scheduling=Scheduling(batch_size, batch_wait_ms / 1000, max_queue, max_batch_tokens),
               limits=Limits(max_tokens=max_tokens_limit, request_timeout=request_timeout),
               max_body_bytes=int(max_body_mb * 1024 * 1024), echo=lambda line: typer.echo(line, err=True))
