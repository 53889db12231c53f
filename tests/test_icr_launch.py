"""ICR at scale on CPUs: each iteration's training under `accelerate launch` (2 gloo processes, the shipped
DDP launcher) equals the training in the driver's process, a launch killed midway resumes, and a bad
train_launch is a one-line error before anything loads.

Equal means, as in tests/test_distributed.py: the same pairs, per-step losses within 1e-5 and the same saved
adapter (atol 1e-5, rtol 1e-4); the global batch is the same (2 pairs: 1 per process, or 2 in one process). The launched run also samples and scores in 2 worker processes (sampling.processes):
its samples are the same texts and its scores the same within 1e-4 nats.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from test_icr_pipeline import _config as icr_pipeline_config
from test_icr_pipeline import policy_adapter  # noqa: F401 (a fixture)
from safetensors.torch import load_file

import xlpo.icr.launch as launch
from xlpo.errors import UserError
from xlpo.icr.config import load_icr_config
from xlpo.icr.pipeline import run_icr
from xlpo.icr.rundir import IterationDir
from xlpo.train.checkpoint import latest_checkpoint
from xlpo.train.run import TrainRun

IN_PROCESS = ["train.training.batch_size=2"]
LAUNCHED = ["train.training.batch_size=1", "train_launch.config=accelerate/ddp", "train_launch.num_processes=2",
            "sampling.processes=2"]


def _config(run_dir, tiny_model_dir, adapter, shared_data, *extra):
    """test_icr_pipeline's run, with 2 iterations of 6 pairs each (3 prompts x 2 languages) and 6 training steps,
    a checkpoint after each."""
    return icr_pipeline_config(run_dir, tiny_model_dir, adapter, shared_data, "iterations=2", "prompts.limit=3",
                               "stats.language_id=false", "train.training={epochs: 2, learning_rate: 1.0e-3, "
                               "warmup_ratio: 0.0, save_steps: 1, progress: false}", *extra)


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _adapter(run: TrainRun) -> dict[str, torch.Tensor]:
    return load_file(str(run.adapter / "adapter_model.safetensors"))


def _assert_trained_alike(run: TrainRun, like: TrainRun, atol: float = 1e-5) -> None:
    got, want = run.metrics(), like.metrics()
    assert [m["step"] for m in got] == [m["step"] for m in want] and got
    assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in want], abs=1e-5)
    a, b = _adapter(run), _adapter(like)
    assert a.keys() == b.keys()
    for name, tensor in b.items():
        torch.testing.assert_close(a[name], tensor, atol=atol, rtol=1e-4, msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, policy_adapter, shared_data):
    """The same two-iteration run with its training in this process and under a 2-process launch."""
    root = tmp_path_factory.mktemp("icr-launch")
    out, logs = {}, {}
    for name, extra in (("in-process", IN_PROCESS), ("launched", LAUNCHED)):
        config = _config(root / name, tiny_model_dir, policy_adapter, shared_data, *extra)
        logs[name] = []
        run_icr(config, log=logs[name].append)
        out[name] = config
    # The launched run's parts were made by 2 worker processes, its trainings by accelerate launch.
    assert sum("6 parts over 2 worker processes" in line for line in logs["launched"]) == 4  # sample, score x 2
    assert sum("(accelerate/ddp x 2)" in line for line in logs["launched"]) == 2
    assert not any("worker processes" in line or "accelerate/" in line for line in logs["in-process"])
    return root, out


@pytest.mark.distributed
def test_a_launched_training_stage_equals_the_in_process_one(runs):
    root, _ = runs
    for t in (1, 2):  # iteration 2 samples and scores with the policy the launch trained
        one, two = IterationDir(root / "in-process", t), IterationDir(root / "launched", t)
        assert _jsonl(two.samples) == _jsonl(one.samples)
        for a, b in zip(_jsonl(two.scores), _jsonl(one.scores), strict=True):
            assert a["id"] == b["id"]
            for kind, s in b["scores"].items():
                assert a["scores"][kind]["policy"] == pytest.approx(s["policy"], abs=1e-4)
                assert a["scores"][kind]["reference"] == pytest.approx(s["reference"], abs=1e-4)
        pairs = ["id", "chosen", "rejected"]
        assert [[p[k] for k in pairs] for p in _jsonl(two.pairs("crosslingual"))] == \
            [[p[k] for k in pairs] for p in _jsonl(one.pairs("crosslingual"))]
        _assert_trained_alike(TrainRun(two.train), TrainRun(one.train))
        assert launch.launch_config_file(TrainRun(two.train)).is_file()
        assert not launch.launch_config_file(TrainRun(one.train)).exists()


@pytest.mark.distributed
def test_a_launch_killed_midway_resumes_to_the_same_result(runs, monkeypatch):
    root, configs = runs
    killed = root / "killed"
    shutil.copytree(root / "launched", killed)  # the sampled, scored, paired iteration 1 of the launched run
    for stale in ("iter-2", "iter-1/train", "iter-1/stats.json"):
        shutil.rmtree(killed / stale) if (killed / stale).is_dir() else (killed / stale).unlink()
    config = configs["launched"].model_copy(update={"run_dir": str(killed), "iterations": 1})
    train = TrainRun(IterationDir(killed, 1).train)

    def kill_after_first_checkpoint(process, run):
        while latest_checkpoint(run.dir) is None:
            assert process.poll() is None, "the launch ended before its first checkpoint"
            time.sleep(0.02)
        for p in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
            p.kill()  # SIGKILL: no process gets to clean up
        return process.wait()

    monkeypatch.setattr(launch, "wait_for", kill_after_first_checkpoint)
    with pytest.raises(UserError, match="run again to resume"):
        run_icr(config, log=lambda line: None)
    assert train.resumable and not train.finished
    monkeypatch.undo()
    run_icr(config, log=lambda line: None)
    assert train.summary()["resumed_from_step"] >= 1
    _assert_trained_alike(train, TrainRun(IterationDir(root / "launched", 1).train), atol=1e-6)


# -- bad settings: one line, before anything loads ------------------------------------------------------------
def test_train_launch_settings_are_checked_when_the_config_loads(tmp_path):
    for overrides, expected in (
            (["train_launch.config=accelerate/nonesuch"], "train_launch.config: accelerate/nonesuch: no such config"),
            (["train_launch.num_processes=2"], "train_launch.num_processes > 1 needs train_launch.config"),
            (["train_launch.num_processes=0"], "train_launch.num_processes"),
            ([f"train_launch.config={tmp_path / 'x.yaml'}"], "config file not found")):
        with pytest.raises(UserError, match=expected) as info:
            load_icr_config("icr-cpu-smollm2", overrides)
        assert "\n" not in str(info.value)
    (tmp_path / "x.yaml").write_text("loss: {name: dpo}\n")
    with pytest.raises(UserError, match="not an accelerate config"):
        load_icr_config("icr-cpu-smollm2", [f"train_launch.config={tmp_path / 'x.yaml'}"])
    config = load_icr_config("icr-cpu-smollm2", ["train_launch.config=accelerate/ddp", "train_launch.num_processes=2"])
    assert config.train_launch.num_processes == 2


def _refused_before_anything(tmp_path, *overrides) -> str:
    config = load_icr_config("icr-cpu-smollm2", [f"run_dir={tmp_path / 'run'}", *overrides])
    with pytest.raises(UserError) as info:
        run_icr(config, log=lambda line: None)
    assert not (tmp_path / "run").exists() and "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without GPUs refuses")
def test_a_launcher_this_machine_cannot_run_is_refused_before_anything_loads(tmp_path):
    message = _refused_before_anything(tmp_path, "train_launch.config=accelerate/deepspeed-zero3",
                                       "train_launch.num_processes=2")
    assert message.startswith("train_launch.config:") and ("needs CUDA GPUs" in message or "not installed" in message)
    assert "needs CUDA GPUs" in _refused_before_anything(tmp_path, "train_launch.config=accelerate/fsdp2")


def test_the_driver_refuses_to_run_under_a_launcher(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "start it without accelerate launch" in _refused_before_anything(tmp_path)


def test_the_launch_command_runs_xlpo_train_under_the_shipped_launcher(tmp_path):
    config = load_icr_config("icr-cpu-smollm2", ["train_launch.config=accelerate/deepspeed-zero3",
                                                 "train_launch.num_processes=8", "train_launch.main_process_port=29555"])
    command = launch.launch_command(config.train_launch, tmp_path / "train-config.yaml", resume=True)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--config_file") + 1].endswith("configs/accelerate/deepspeed-zero3.yaml")
    assert command[command.index("--num_processes") + 1] == "8"
    assert command[command.index("--main_process_port") + 1] == "29555"
    assert command[-5:] == ["-m", "xlpo", "train", str(tmp_path / "train-config.yaml"), "--resume"]
    assert "--resume" not in launch.launch_command(config.train_launch, tmp_path / "c.yaml", resume=False)


def test_launcher_and_worker_count_may_change_in_a_run_directory_but_not_the_process_count(tmp_path):
    from xlpo.icr.rundir import check_run_dir

    base = [f"run_dir={tmp_path}", "train_launch.config=accelerate/ddp"]
    check_run_dir(load_icr_config("icr-cpu-smollm2", base), tmp_path)
    check_run_dir(load_icr_config("icr-cpu-smollm2", [*base[:1], "train_launch.config=accelerate/deepspeed-zero2",
                                                      "sampling.processes=4", "sampling.tensor_parallel_size=2"]), tmp_path)
    with pytest.raises(UserError, match="different train_launch.num_processes"):
        check_run_dir(load_icr_config("icr-cpu-smollm2", [*base, "train_launch.num_processes=2"]), tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["train_launch"]  # a run from before the setting existed trained in the driver's process
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_run_dir(load_icr_config("icr-cpu-smollm2", base[:1]), tmp_path)


# -- the paper's setup as shipped ----------------------------------------------------------------------------
def test_the_paper_setup_dry_runs_as_the_paper_ran(monkeypatch, capsys):
    from xlpo.cli import main
    from xlpo.icr.config import iteration_train_config
    from xlpo.model_spec import ModelSpec

    monkeypatch.setattr("sys.argv", ["xlpo", "icr", "run", "icr-paper-8gpu", "--dry-run"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    config = load_icr_config("icr-paper-8gpu")
    assert printed == config.model_dump(mode="json")
    assert config.policy.name_or_path == "princeton-nlp/Llama-3-Base-8B-SFT-DPO" and config.policy.adapter is None
    assert config.reference.name_or_path == "princeton-nlp/Llama-3-Base-8B-SFT"
    assert (config.reference.training, config.reference.reward) == ("previous", "initial")  # Algorithm 1, Eq. 9
    assert (config.sampling.backend, config.sampling.processes, config.sampling.n) == ("vllm", 8, 10)
    assert (config.train_launch.config, config.train_launch.num_processes) == ("accelerate/deepspeed-zero3", 8)
    train = iteration_train_config(config, policy=ModelSpec(config.policy.name_or_path), data="pairs.jsonl",
                                   output_dir="train", reference=ModelSpec(config.policy.name_or_path))
    assert not train.lora.enabled and train.training.learning_rate == 5e-7 and train.loss.name == "dpo_nll"
    assert train.training.batch_size * train.training.grad_accum * config.train_launch.num_processes == 16


@pytest.mark.distributed
def test_a_failing_worker_stops_the_stage_in_one_line(tmp_path, shared_data):
    from xlpo.icr.workers import run_workers
    from xlpo.model_spec import ModelSpec

    prompts = shared_data / "icr" / "ultrafeedback_binarized" / "subset" / "random_1000"
    config = load_icr_config("icr-cpu-smollm2", [f"run_dir={tmp_path}", f"prompts.dir={prompts}", "sampling.processes=2"])
    missing = ModelSpec(str(tmp_path / "no-such-model"))
    with pytest.raises(UserError, match=r"iteration 1 sample: worker process.* exited with codes? \[?2") as info:
        run_workers(config, IterationDir(tmp_path, 1), "sample", missing, missing, [("en", 0), ("es", 0)], 2,
                    log=lambda line: None)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "iter-1" / "parts" / "sample").glob("*.jsonl"))
