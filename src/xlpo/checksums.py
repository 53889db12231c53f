"""Checksums that make saved files verifiable: sizes and xxh3-128 digests, recorded once a file is complete.

A folder (a checkpoint, a saved adapter) gets a manifest, `xlpo_manifest.json`, written last: a
folder without one, or whose files differ from it, is not trusted. xxh3-128 is a non-cryptographic
hash: it catches truncated, damaged or missing files (not tampering) at ~10 GB/s per core, so it adds
little to saving a checkpoint of gigabytes (docs/training.md, "Checkpoints").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import xxhash

from xlpo.fileio import write_json

MANIFEST = "xlpo_manifest.json"
HASH = "xxh3_128"
_BLOCK = 16 << 20
_THREADS = 4  # files hashed at once by one process (each process of a sharded save hashes its own share)


def file_digest(path: str | Path) -> dict:
    """{"bytes": size, "xxh3_128": hex digest} of one file."""
    h = xxhash.xxh3_128()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
            size += len(block)
    return {"bytes": size, HASH: h.hexdigest()}


def bytes_digest(data: bytes) -> str:
    return xxhash.xxh3_128(data).hexdigest()


def file_names(root: str | Path, skip: Iterable[str] = ()) -> list[str]:
    """Every file under `root` (recursively, as sorted POSIX paths relative to it), except the manifest and `skip`."""
    root = Path(root)
    left_out = {MANIFEST, *skip}
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).as_posix() not in left_out)


def digests(root: str | Path, names: Iterable[str]) -> dict[str, dict]:
    """{name: digest} of the files `names` under `root`, hashed by a few threads (xxhash releases the GIL)."""
    names = list(names)
    with ThreadPoolExecutor(max_workers=max(1, min(_THREADS, len(names)))) as pool:
        return dict(zip(names, pool.map(file_digest, [Path(root) / name for name in names])))


def write_manifest(root: str | Path, files: dict[str, dict]) -> None:
    """Record `files` ({relative path: digest}) as the folder's manifest; write it last, once they are complete."""
    write_json(Path(root) / MANIFEST, {"hash": HASH, "files": dict(sorted(files.items()))})


def manifest_folder(root: str | Path, skip: Iterable[str] = ()) -> None:
    """Write the manifest of every file now in `root` (except `skip`)."""
    write_manifest(root, digests(root, file_names(root, skip)))


def read_manifest(root: str | Path) -> dict[str, dict] | str:
    """The manifest's {relative path: digest}, or why there is none to trust."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return f"no {MANIFEST} (the folder was not completed, or was written by an older xlpo)"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest["hash"] != HASH or not all(isinstance(d, dict) and {"bytes", HASH} <= set(d)
                                               for d in files.values()):
            raise ValueError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"{MANIFEST} is damaged"
    return files


def file_problem(path: Path, recorded: dict, name: str | None = None) -> str | None:
    """Why the file at `path` is not the one `recorded` ({"bytes", "xxh3_128"}), or None if it is."""
    name = name or path.name
    if not path.is_file():
        return f"{name} is missing"
    size = path.stat().st_size
    if size != recorded["bytes"]:
        return f"{name} has {size:,} bytes, {recorded['bytes']:,} when saved"
    if file_digest(path)[HASH] != recorded[HASH]:
        return f"{name} differs from what was saved (checksum)"
    return None


def files_problem(root: str | Path, files: dict[str, dict], names: Iterable[str] | None = None) -> str | None:
    """The first of `names` (default: all of `files`) under `root` that differs from `files`, as a reason."""
    for name in sorted(files) if names is None else names:
        problem = file_problem(Path(root) / name, files[name], name)
        if problem:
            return problem
    return None


def folder_problem(root: str | Path) -> str | None:
    """Why the folder `root` does not hold what its manifest records, or None when it is intact."""
    files = read_manifest(root)
    return files if isinstance(files, str) else files_problem(root, files)


def saved_folder_problem(root: str | Path) -> str | None:
    """`folder_problem` for a finished run's adapter/ or model/ folder, except that one without a manifest
    (saved by an xlpo from before manifests, or by another tool) is taken as it is."""
    return folder_problem(root) if (Path(root) / MANIFEST).is_file() else None
