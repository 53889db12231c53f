"""Resumable checkpoints: Accelerate state (weights, optimizer, scheduler, RNG) plus a small JSON.

Each checkpoint directory is written beside its final name and renamed, so a killed run never
leaves a half-written checkpoint for `--resume` to pick up.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from xlpo.errors import UserError
from xlpo.fileio import atomic_dir, read_json, write_json
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


def latest_checkpoint(output_dir: Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, keep: int) -> Path:
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
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(staging / STATE_FILE, state)
        with atomic_dir(target) as tmp:
            tmp.rmdir()
            staging.rename(tmp)
        for old in sorted((Path(output_dir) / "checkpoints").glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def load_checkpoint(accelerator, path: Path, expect: dict) -> dict:
    state = read_json(Path(path) / STATE_FILE)
    for key, value in expect.items():
        if state.get(key) != value:
            raise UserError(f"--resume: checkpoint {path} was made with a different {key}; "
                            f"start a new output_dir or rerun with the same settings")
    accelerator.load_state(str(path), **_model_kwargs(accelerator, saving=False))
    return state


def _model_kwargs(accelerator, saving: bool) -> dict:
    """Frozen weights are left out of a checkpoint and not expected back; DeepSpeed names that its own way."""
    if is_deepspeed(accelerator):
        return {"exclude_frozen_parameters": True} if saving else {"load_module_strict": False}
    return {} if saving else {"strict": False}
