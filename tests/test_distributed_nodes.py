"""Several nodes, simulated by two `torchrun --nnodes 2` agents of one process each on this machine.

Each node is given its own reference cache directory or output directory where the test needs a
filesystem that the nodes do not share.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from launching import finish, free_port, start
from xlpo.train.config import load_config
from xlpo.train.trainer import train

pytestmark = pytest.mark.distributed

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"


def _common(model_dir) -> list[str]:
    return [f"model.name_or_path={model_dir}", f"data.train={FIXTURE}", "loss.name=dpo", "lora.dropout=0",
            "training.progress=false", "training.learning_rate=1e-3", "training.warmup_ratio=0",
            "training.max_steps=2"]


def _two_nodes(per_node: list[list[str]], timeout: float = 300) -> list[tuple[int | None, str]]:
    torchrun = Path(sys.executable).with_name("torchrun")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [start([str(torchrun), "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",
                    "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "xlpo", "train", *overrides], env)
             for rank, overrides in enumerate(per_node)]
    return [finish(node, timeout) for node in nodes]


def test_reference_cache_on_one_node_only_neither_hangs_nor_changes_the_result(tmp_path, tiny_model_dir):
    """Issue 13, finding 7: the node that finds the cached reference must not skip the collective the other enters."""
    common = _common(tiny_model_dir)
    one = train(load_config(None, [*common, "training.batch_size=4", f"reference.cache_dir={tmp_path / 'ref0'}",
                                   f"training.output_dir={tmp_path / 'one'}"]))
    assert len(list((tmp_path / "ref0").glob("*.safetensors"))) == 1  # node 0 holds the entry, node 1 does not
    results = _two_nodes([[*common, "training.batch_size=2", f"reference.cache_dir={tmp_path / f'ref{rank}'}",
                           f"training.output_dir={tmp_path / 'two'}"] for rank in range(2)])
    for code, output in results:
        assert code == 0, output[-4000:]
    assert len(list((tmp_path / "ref1").glob("*.safetensors"))) == 1  # each node now has it
    two = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    for name, tensor in load_file(str(one.output_dir / "adapter" / "adapter_model.safetensors")).items():
        torch.testing.assert_close(two[name], tensor, atol=1e-6, rtol=1e-5)
    assert json.loads((tmp_path / "two" / "train_summary.json").read_text())["num_processes"] == 2


def test_output_directory_not_shared_by_the_nodes_is_a_clear_error(tmp_path, tiny_model_dir):
    """Issue 13, finding 7: checkpoints are staged by every process and renamed by one; resume reads them on
    every node. That needs one shared output directory, checked before anything is written."""
    results = _two_nodes([[*_common(tiny_model_dir), "training.batch_size=2", f"reference.cache_dir={tmp_path / 'ref'}",
                           f"training.output_dir={tmp_path / f'out{rank}'}"] for rank in range(2)])
    for code, output in results:
        assert code is not None and code != 0, output[-4000:]  # torchrun reports the worker's exit 2 as 1
        assert "xlpo: error: training.output_dir" in output and "shared by all 2 processes" in output, output[-4000:]
    assert not (tmp_path / "out0" / "config.yaml").exists()
