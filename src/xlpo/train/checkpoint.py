"""Resumable checkpoints: Accelerate state (weights, optimizer, scheduler, RNG) plus a small JSON,
made verifiable by a manifest of sizes and checksums; `--resume` takes the newest intact one.

Each checkpoint directory is written beside its final name, completed by its manifest and renamed,
so a killed run never leaves a half-written checkpoint; one damaged later is found and skipped.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from accelerate.utils import broadcast_object_list, gather_object

from xlpo.checksums import (MANIFEST, bytes_digest, digests, file_names, files_problem, folder_problem, read_manifest,
                             write_manifest)
from xlpo.errors import UserError
from xlpo.fileio import atomic_dir, read_json, write_json
from xlpo.models import adapter_hash
from xlpo.train.distributed import is_deepspeed

STATE_FILE = "xlpo_state.json"


def register(accelerator, scheduler) -> Callable[[], None]:
    """Make checkpoints hold the scheduler too, and only trainable weights; returns the undo.

    Only trainable weights: a LoRA checkpoint of an 8B model is megabytes, not 16 GB. The frozen
    weights come from the base model when a run resumes (loaded non-strictly). DeepSpeed writes its
    own files (see `_model_kwargs`); FSDP2 writes every weight, sharded. The undo lets the
    accelerator forget the run, so that it keeps no optimizer (nor, through it, weights) alive.
    """

    def keep_trainable(models, weights, output_dir):
        for model, state in zip(models, weights):
            trainable = {name for name, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
            for key in [k for k in state if k not in trainable]:
                del state[key]

    accelerator.register_for_checkpointing(scheduler)
    handle = accelerator.register_save_state_pre_hook(keep_trainable)

    def unregister() -> None:
        handle.remove()
        # accelerate has no public call to forget a checkpointed object (free_memory keeps them).
        accelerator._custom_objects[:] = [o for o in accelerator._custom_objects if o is not scheduler]

    return unregister


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:07d}"


def _checkpoints(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    return sorted(p for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint folder, not verified (each is renamed into place once complete); `resume_point`
    is the one that checks it."""
    found = _checkpoints(output_dir)
    return found[-1] if found else None


def expected_state(config, data_fingerprint: str, num_processes: int) -> dict:
    """What a checkpoint must have been made with to resume this run: the config (less the settings that
    change no result, and less where the run folder, its data file, its adapters and the reference cache
    are: a moved run resumes), the tokenized data's fingerprint and the number of processes."""
    resumable = config.model_dump(mode="json")
    resumable["training"] = {k: v for k, v in resumable["training"].items()
                             if k not in ("output_dir", "save_steps", "keep_checkpoints", "progress", "logging_steps",
                                          "report_to")}
    resumable["data"] = {k: v for k, v in resumable["data"].items() if k != "train"}  # its content: the fingerprint
    resumable["reference"] = {k: v for k, v in resumable["reference"].items() if k != "cache_dir"}
    for section in ("model", "reference"):
        for key in ("name_or_path", "adapter"):
            resumable[section][key] = _identity(resumable[section][key], adapter=key == "adapter")
    return {"config": resumable, "data_fingerprint": data_fingerprint, "num_processes": num_processes}


def _identity(path: str | None, adapter: bool) -> str | None:
    """A model or adapter folder by what it holds rather than where it is: a folder xlpo saved by its
    manifest, another adapter by its content; anything else (a Hub id, a base model) by its name."""
    if path and Path(path, MANIFEST).is_file():
        return "xlpo-saved:" + bytes_digest(Path(path, MANIFEST).read_bytes())
    if path and adapter:
        return "adapter:" + adapter_hash(path)
    return path


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write checkpoint `step` (collective): Accelerate's state, `state`, and, last, the manifest of it all."""
    target = checkpoint_dir(output_dir, step)
    if accelerator.is_main_process:
        target.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    # Every process writes its RNG state into the same directory, so stage it at a fixed temp name.
    staging = target.with_name(f".{target.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True, **_model_kwargs(accelerator, saving=True))
    if accelerator.is_main_process:
        write_json(staging / STATE_FILE, state)
    accelerator.wait_for_everyone()
    files = _digests(accelerator, staging)
    if accelerator.is_main_process:
        write_manifest(staging, files)
        with atomic_dir(target) as tmp:
            tmp.rmdir()
            staging.rename(tmp)
        # Later steps than this one are left from an earlier run of this folder: they never resume this one.
        done = _checkpoints(output_dir)
        for old in [p for p in done if p.name > target.name] + [p for p in done if p.name <= target.name][:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def _digests(accelerator, root: Path) -> dict[str, dict]:
    """Checksums of every file under `root`, each process hashing a share (collective; the manifest
    of a sharded 8B checkpoint is then not one process reading it all)."""
    names = [file_names(root) if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(names)
    mine = names[0][accelerator.process_index::accelerator.num_processes]
    shares = gather_object([digests(root, mine)])
    return {name: digest for share in shares for name, digest in share.items()}


def _problem(accelerator, path: Path) -> str | None:
    """Why checkpoint `path` is not what was saved, or None when it is intact (collective: a share of the
    files per process)."""
    files = read_manifest(path)
    if isinstance(files, str):
        return files
    mine = sorted(files)[accelerator.process_index::accelerator.num_processes]
    problems = gather_object([files_problem(path, files, mine)])
    return next((p for p in problems if p), None)


def resume_point(accelerator, output_dir: Path, expect: dict) -> tuple[Path, dict] | None:
    """The newest intact checkpoint in `output_dir` and its state; says which it takes and why it skipped
    newer ones. None when there is no checkpoint at all; a UserError when none is intact or the newest
    intact one was made with other settings than `expect`. Collective."""
    say = print if accelerator.is_main_process else (lambda *_: None)
    found = _checkpoints(output_dir)
    skipped = []
    for path in reversed(found):
        problem = _problem(accelerator, path)
        if problem is None:
            break
        skipped.append(f"{path.name} ({problem})")
    else:
        if found:
            raise UserError(f"--resume: no intact checkpoint in {Path(output_dir) / 'checkpoints'}: "
                            f"{'; '.join(skipped)}; start again without --resume")
        say(f"xlpo: --resume: no checkpoint in {Path(output_dir) / 'checkpoints'}, starting from step 0")
        return None
    state = read_json(path / STATE_FILE)
    for key, value in expect.items():
        if state.get(key) != value:
            raise UserError(f"--resume: checkpoint {path} was made with a different {key}; "
                            f"start a new output_dir or rerun with the same settings")
    for line in skipped:
        say(f"xlpo: --resume: skipping {line}")
    say(f"xlpo: --resume: continuing from {path} (step {state['step']}"
        + (", the newest intact checkpoint)" if skipped else ")"))
    return path, state


def discard_damaged(output_dir: Path, log: Callable[[str], None]) -> bool:
    """Remove the checkpoints of `output_dir` that are not what was saved, saying why (one process: for the
    pipelines that train on, where `--resume` would stop); returns whether any checkpoint is left to resume."""
    for path in _checkpoints(output_dir):
        problem = folder_problem(path)
        if problem:
            log(f"  {path}: {problem}: removed")
            shutil.rmtree(path)
    return bool(_checkpoints(output_dir))


def load_checkpoint(accelerator, path: Path) -> None:
    accelerator.load_state(str(path), **_model_kwargs(accelerator, saving=False))


def _model_kwargs(accelerator, saving: bool) -> dict:
    """Frozen weights are left out of a checkpoint and not expected back; DeepSpeed names that its own way."""
    if is_deepspeed(accelerator):
        return {"exclude_frozen_parameters": True} if saving else {"load_module_strict": False}
    return {} if saving else {"strict": False}
