"""Start a multi-process test run so that a hang ends in a timeout with every process stopped, not in orphans.

torchrun's agent starts each worker in a session of its own, so stopping the agent's process group
is not enough: the workers are collected while the agent still runs, and stopped one by one.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], env: dict) -> subprocess.Popen:
    # Output goes to a file, not a pipe: a worker left behind cannot keep the reader waiting.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    process.log = log
    return process


def finish(process: subprocess.Popen, timeout: float) -> tuple[int | None, str]:
    """(exit code, output); on timeout every process of the run is stopped and the code is None."""
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        workers = _descendants(process.pid)  # while the agent still runs: it is their parent
        process.kill()
        for worker in workers:
            _kill(worker)
        process.wait()
        code = None
    process.log.seek(0)
    output = process.log.read()
    process.log.close()
    return code, output


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill(p: psutil.Process) -> None:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass
