"""ICR's training stage in processes of its own: `accelerate launch --config_file C -m xlpo train FILE`.

The ICR driver stays one process and must not itself run under a launcher. For an iteration whose
`train_launch.config` is set, it writes that iteration's training config beside the run folder
(`iter-<t>/train-config.yaml`), launches `xlpo train` on it with the shipped (or given) accelerate
config, waits, and goes on from the run folder (`TrainRun`). A launch killed midway leaves its
checkpoints: the next `xlpo icr run` launches again with `--resume`, as `xlpo train --resume` does.
Everything that can be checked is checked before any model loads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import psutil
import torch
import yaml

import xlpo
from xlpo.errors import UserError
from xlpo.fileio import write_text
from xlpo.icr.config import ICRConfig, TrainLaunchSection, launcher_file
from xlpo.train.config import TrainConfig
from xlpo.train.run import TrainRun

_LAUNCHED = ("WORLD_SIZE", "LOCAL_RANK")  # set by torchrun / accelerate launch in every process they start
_NEEDS_GPUS = {"DEEPSPEED": "DeepSpeed", "FSDP": "FSDP"}


def check_launch(config: ICRConfig) -> None:
    """Refuse, in one line and before anything loads, a driver started under a launcher and a train_launch
    this machine cannot run (DeepSpeed not installed, a sharded launcher without GPUs, too few GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ:
        raise UserError("xlpo icr run runs as one process and launches its training itself (train_launch): "
                        "start it without accelerate launch or torchrun")
    launch = config.train_launch
    if launch.config is None:
        return
    path = launcher_file(launch.config)
    kind = str(yaml.safe_load(path.read_text(encoding="utf-8"))["distributed_type"]).upper()
    if find_spec("accelerate") is None:
        raise UserError("train_launch.config: accelerate is not installed (pip install accelerate)")
    if kind == "DEEPSPEED" and find_spec("deepspeed") is None:
        raise UserError(f"train_launch.config: {path.name} trains with DeepSpeed, which is not installed (pip install deepspeed)")
    gpus = torch.cuda.device_count()
    if kind in _NEEDS_GPUS and gpus == 0:
        raise UserError(f"train_launch.config: {_NEEDS_GPUS[kind]} ({path.name}) needs CUDA GPUs and none is visible; "
                        "on CPUs use accelerate/ddp")
    if gpus and launch.num_processes > gpus:
        raise UserError(f"train_launch.num_processes={launch.num_processes} but {gpus} GPU(s) are visible")


def launch_config_file(run: TrainRun) -> Path:
    """Where the driver writes the training config it launches: beside the run folder (iter-<t>/train-config.yaml)."""
    return run.dir.with_name(f"{run.dir.name}-config.yaml")


def launch_command(launch: TrainLaunchSection, config_path: Path, resume: bool) -> list[str]:
    """`accelerate launch` (of this Python) with the launcher config, on this node, running `xlpo train`."""
    port = launch.main_process_port or _free_port()
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launcher_file(launch.config)),
            "--num_processes", str(launch.num_processes), "--num_machines", "1", "--machine_rank", "0",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "-m", "xlpo", "train", str(config_path), *(["--resume"] if resume else [])]


def child_environment() -> dict[str, str]:
    """This environment, with this xlpo first on the path, so the launched processes run the driver's code."""
    source = str(Path(xlpo.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": source + (os.pathsep + path if path else "")}


def launch_training(train_cfg: TrainConfig, launch: TrainLaunchSection, resume: bool) -> None:
    """Run one training under `accelerate launch` and wait for it; a launch that fails or is killed is a
    one-line error (its own output is above it), and running again resumes from its last checkpoint."""
    run = TrainRun(train_cfg.training.output_dir)
    config_path = launch_config_file(run)
    write_text(config_path, yaml.safe_dump(train_cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    command = launch_command(launch, config_path, resume)
    process = subprocess.Popen(command, env=child_environment())
    try:
        code = wait_for(process, run)
    except BaseException:  # the driver stops (Ctrl-C, an error): its launch stops with it
        stop(process)
        raise
    if code != 0 or not run.finished:
        raise UserError(f"{run.dir}: the launched training ({launch.config}, {launch.num_processes} processes) "
                        f"exited with code {code} without finishing (its output is above); run again to resume "
                        "from its last checkpoint")


def wait_for(process: subprocess.Popen, run: TrainRun) -> int:
    """The launch's exit code once it ends (tests stop a launch midway here)."""
    return process.wait()


def stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    """Stop a launch and every process it started: torchrun's workers run in sessions of their own, so they
    are collected while the launcher still runs, asked to stop, and killed after `grace` seconds."""
    try:
        workers = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    process.terminate()
    for worker in workers:
        try:
            worker.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(workers, timeout=grace)
    for worker in alive:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
