"""Resumable request stages: keyed chat requests answered by one backend and kept in a JSONL file.

A rerun reuses every answered item whose request is unchanged and whose backend is the same system,
retries failed ones, and answers new ones, saving after each chunk so that a killed run loses at most
one chunk. Benchmarks and ICR's judge run every model call through `run_requests`; a stage where every
request failed stops the run instead of passing for a result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from xlpo.clients.chat import ChatBackend, ChatReply, ChatRequest, request_key
from xlpo.errors import RequestsFailed
from xlpo.fileio import iter_jsonl, write_jsonl
from xlpo.progress import Progress


def run_requests(path: str | Path, backend: ChatBackend, requests: Sequence[tuple[str, ChatRequest]],
                 label: str = "requests", chunk_size: int = 16, echo: Callable[[str], None] | None = print,
                 ) -> dict[str, ChatReply]:
    """Answer `requests` (key, request) with `backend`, resuming from `path`; replies by key.

    Keys must be unique. Rows in `path`: key, request, request_hash, text, error, backend (and
    top_logprobs when asked). A row is reused only if the same backend answered it: switching the
    model or judge on an existing folder asks again instead of mixing two systems' answers.
    """
    path = Path(path)
    keys = [key for key, _ in requests]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{label}: duplicate request keys")
    hashes = {key: request_key(req.to_dict()) for key, req in requests}
    described = backend.describe()
    rows: dict[str, dict] = {}
    if path.exists():
        for _, row in iter_jsonl(path):
            if (row.get("key") in hashes and row.get("request_hash") == hashes[row["key"]]
                    and row.get("text") is not None and same_backend(row.get("backend"), described)):
                rows[row["key"]] = row
    todo = [(key, req) for key, req in requests if key not in rows]
    if echo and rows:
        echo(f"{label}: reusing {len(rows)} of {len(requests)} answers from {path}")
    with Progress(label, len(requests), "answers", start=len(rows), enabled=bool(todo)) as progress:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            replies = backend.complete_many([req for _, req in chunk], progress=progress.advance)
            for (key, req), reply in zip(chunk, replies):
                rows[key] = {"key": key, "request": req.to_dict(), "request_hash": hashes[key], "text": reply.text,
                             "error": reply.error, "cached": reply.cached, "backend": described}
                if reply.top_logprobs is not None:
                    rows[key]["top_logprobs"] = reply.top_logprobs
            write_jsonl(path, [rows[k] for k in keys if k in rows])
            progress.reach(len(rows))
    if not todo:
        write_jsonl(path, [rows[k] for k in keys])  # drop rows of requests no longer asked
    _say_failures(label, [rows[k] for k in keys if rows[k]["text"] is None], len(keys), path, echo)
    return {key: ChatReply(text=rows[key]["text"], error=rows[key]["error"], cached=rows[key].get("cached", False),
                           top_logprobs=rows[key].get("top_logprobs"))
            for key in keys}


def _say_failures(label: str, failed: list[dict], total: int, path: Path, echo: Callable[[str], None] | None) -> None:
    """Failures never pass for success: a stage where every request failed stops the run (RequestsFailed,
    exit 1); some failed, and a line says how many (the results count them too)."""
    if not failed:
        return
    example = failed[0].get("error") or "no reply"
    if len(failed) == total:
        raise RequestsFailed(f"{label}: all {total} requests failed (first: {example}); they are kept in {path} "
                             "and a rerun asks them again")
    if echo:
        echo(f"{label}: {len(failed)} of {total} requests failed (first: {example}); a rerun asks them again")


# Settings that change how a backend works, not what answers: a rerun with another batch size or
# another name for the key variable still reuses the answers already obtained.
_NOT_IDENTITY = ("batch_size", "api_key_env")


def same_backend(old: dict | None, new: dict) -> bool:
    """Whether a stored row's backend description names the same system as `new`."""
    if not isinstance(old, dict):
        return False
    return ({k: v for k, v in old.items() if k not in _NOT_IDENTITY}
            == {k: v for k, v in new.items() if k not in _NOT_IDENTITY})
