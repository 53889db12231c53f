"""The `xlpo` command as users meet it: every command's bad input is one line and exit 2 with
nothing written; help and config errors do not load torch; shipped configs work from a wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xlpo.cli import main
from xlpo.config import first_comment, shipped_configs

REPO = Path(__file__).resolve().parents[1]
CONFIG_COMMANDS = {"train": ["train"], "icr": ["icr", "run"], "experiment": ["experiment", "capo-mtpe"]}
SHIPPED_NAMES = ("capo-cpu-smollm2", "capo-paper-gpu", "icr-cpu-smollm2")


def xlpo(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`xlpo ARGS` in-process through `main()`, the function the console script runs: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["xlpo", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A current directory holding only the bad inputs, so that anything written shows."""
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text("training:\n  epochs: 2\n  seed: 1: 2\n")
    Path("list.yaml").write_text("- a\n- b\n")
    Path("bad.jsonl").write_text('{"prompt": "a"}\nnot json\n')
    Path("pairs.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    return tmp_path


def assert_one_line_error(workdir: Path, result: tuple[int, str, str], expected: str) -> None:
    before = {"bad.yaml", "list.yaml", "bad.jsonl", "pairs.jsonl"}
    code, out, err = result
    assert code == 2, (code, out, err)
    assert err.startswith("xlpo: error: ") and err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in out + err and out == ""
    assert files_under(workdir) == before, "a failed command wrote files"


# --------------------------------------------------------------------------- commands that take a config


UNKNOWN = {"train": ("training.lerning_rate=1", "training.lerning_rate: unknown key (did you mean 'learning_rate'?)"),
           "icr": ("sampling.temprature=1", "sampling.temprature: unknown key (did you mean 'temperature'?)"),
           "experiment": ("data.per_splt=1", "data.per_splt: unknown key (did you mean 'per_split'?)")}
BAD_VALUE = {"train": ("training.batch_size=0", "training.batch_size: Input should be greater than 0"),
             "icr": ("sampling.n=1", "sampling.n: Input should be greater than or equal to 2"),
             "experiment": ("eval.batch_size=0", "eval.batch_size: Input should be greater than 0")}
NOT_A_SECTION = {"train": "training.epochs", "icr": "run_dir", "experiment": "out_dir"}


@pytest.mark.parametrize("kind", CONFIG_COMMANDS)
@pytest.mark.parametrize("case", ["missing file", "missing name", "unknown shipped name", "bad YAML", "not a mapping",
                                  "unknown key", "bad value", "no key=value", "empty key part", "not a section"])
def test_config_commands_bad_input(workdir, monkeypatch, capsys, kind, case):
    config = {"missing file": ["./missing.yaml"], "missing name": ["missing.yaml"],
              "unknown shipped name": ["capo-paper-cpu"], "bad YAML": ["bad.yaml"], "not a mapping": ["list.yaml"],
              "unknown key": [UNKNOWN[kind][0]], "bad value": [BAD_VALUE[kind][0]],
              "no key=value": [shipped_name(kind), "iterations"],
              "empty key part": ["training..epochs=2"],
              "not a section": [f"{NOT_A_SECTION[kind]}=2", f"{NOT_A_SECTION[kind]}.x=1"]}[case]
    expected = {"missing file": "missing.yaml: config file not found",
                "missing name": "missing.yaml: no such config file, nor a shipped config (shipped: capo-cpu-smollm2, ",
                "unknown shipped name": "capo-paper-cpu: no such config file, nor a shipped config (shipped: ",
                "bad YAML": "bad.yaml:3: invalid YAML", "not a mapping": "list.yaml: expected a mapping",
                "unknown key": UNKNOWN[kind][1], "bad value": BAD_VALUE[kind][1],
                "no key=value": "override 'iterations': expected key=value", "empty key part": "empty key part",
                "not a section": f"'{NOT_A_SECTION[kind].split('.')[-1]}' is not a section"}[case]
    if kind == "icr" and case in ("unknown key", "bad value"):
        config = ["init.pairs=mtpe", *config]  # otherwise the missing initial policy is reported first
    assert_one_line_error(workdir, xlpo(monkeypatch, capsys, *CONFIG_COMMANDS[kind], *config), expected)


def shipped_name(kind: str) -> str:
    return {"train": "capo-cpu-smollm2", "icr": "icr-cpu-smollm2", "experiment": "capo-mtpe-cpu"}[kind]


@pytest.mark.parametrize("kind", CONFIG_COMMANDS)
def test_config_commands_take_a_shipped_name(workdir, monkeypatch, capsys, kind):
    code, out, err = xlpo(monkeypatch, capsys, *CONFIG_COMMANDS[kind], shipped_name(kind), "--dry-run")
    assert code == 0 and err == "", err
    assert out.startswith(("model:", "run_dir:", "out_dir:"))


# --------------------------------------------------------------------------- every other command


@pytest.mark.parametrize("args,expected", [
    (["tran"], "No such command 'tran'. Did you mean 'train'? (see 'xlpo --help')"),
    (["train", "--resum"], "No such option: --resum"),
    (["data", "mtpe", "--per-split", "abc", "--out", "o"], "Invalid value for '--per-split'"),
    (["data", "mtpe"], "Missing option '--out'. (see 'xlpo data mtpe --help')"),
    (["data", "mtpe", "--out", "o", "--directions", "en-xx"], "unknown direction 'en-xx'"),
    (["data", "mtpe", "--out", "o", "--divemt", "./nowhere"], "nowhere: no such directory"),
    (["data", "stats", "missing.jsonl"], "missing.jsonl: file not found"),
    (["data", "stats", "bad.jsonl"], "bad.jsonl:1: missing field 'chosen'"),
    (["eval", "rewards", "pairs.jsonl"], "Missing option '--out'"),
    (["eval", "rewards", "pairs.jsonl", "--out", "o", "--chat-format", "chatml"], "expected tokenizer, zephyr or none"),
    (["eval", "rewards", "pairs.jsonl", "--out", "o", "--batch-size", "many"], "Invalid value for '--batch-size'"),
    (["analyze", "missing", "--out", "o"], "missing: not a directory"),
    (["analyze", "missing"], "Missing option '--out'"),
    (["bench", "mtbench", "--data", "missing", "--out", "o"], "needs a judge"),
    (["bench", "mifeval", "--data", "missing", "--out", "o", "--endpoint", "http://127.0.0.1:9/v1",
      "--endpoint-model", "m"], "file not found"),
    (["bench", "xlsum", "--source", "missing", "--out", "o", "--endpoint", "http://127.0.0.1:9/v1",
      "--endpoint-model", "m"], "missing: no such folder"),
    (["bench", "winrate", "missing", "missing", "--out", "o"], "needs a judge"),
    (["serve", "--port", "70000"], "Invalid value for '--port'"),
    (["serve", "--api-key-env", "XLPO_TEST_UNSET_KEY"], "XLPO_TEST_UNSET_KEY: that environment variable is not set"),
    (["icr", "stats", "missing"], "missing: no config.yaml; not an ICR run directory"),
    (["configs", "show", "nope"], "nope: no such shipped config; shipped: capo-cpu-smollm2, "),
    (["configs", "path", "nope"], "nope: no such shipped config; shipped: "),
])
def test_every_command_bad_input(workdir, monkeypatch, capsys, args, expected):
    monkeypatch.delenv("XLPO_TEST_UNSET_KEY", raising=False)
    assert_one_line_error(workdir, xlpo(monkeypatch, capsys, *args), expected)


def test_eval_rewards_missing_and_malformed_data(workdir, monkeypatch, capsys, tiny_model_dir):
    model = ["--model", str(tiny_model_dir), "--out", "o"]
    assert_one_line_error(workdir, xlpo(monkeypatch, capsys, "eval", "rewards", "missing.jsonl", *model),
                          "missing.jsonl: no such file or directory")
    assert_one_line_error(workdir, xlpo(monkeypatch, capsys, "eval", "rewards", "bad.jsonl", *model),
                          "bad.jsonl:1: missing field 'chosen'")


# --------------------------------------------------------------------------- xlpo configs


def test_configs_lists_shows_and_locates(monkeypatch, capsys):
    code, out, _ = xlpo(monkeypatch, capsys, "configs")
    assert code == 0
    for name, path in shipped_configs().items():
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert first_comment(path)[:20] in line
    code, out, _ = xlpo(monkeypatch, capsys, "configs", "show", "capo-paper-gpu")
    assert code == 0 and out == shipped_configs()["capo-paper-gpu"].read_text()
    code, out, _ = xlpo(monkeypatch, capsys, "configs", "path", "icr-paper-gpu.yaml")
    assert code == 0 and out == f"{shipped_configs()['icr-paper-gpu']}\n"


@pytest.mark.parametrize("args,keys", [
    (["icr", "run", "--help"], ["sampling.temperature = 0.9", "reward.alpha_stop = 1.0", "iterations = 2"]),
    (["experiment", "capo-mtpe", "--help"], ["data.per_split = 10", "eval.batch_size = 8", "alpha_sweep = []",
                                             "methods = [{'name': 'dpo'"]),
])
def test_help_of_icr_and_experiment_lists_their_options(monkeypatch, capsys, args, keys):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = xlpo(monkeypatch, capsys, *args)
    assert code == 0
    for key in keys:
        assert key in out, key


# --------------------------------------------------------------------------- what help and config errors import


def test_python_dash_m_xlpo_is_the_xlpo_command(tmp_path):
    """`python -m xlpo` (xlpo/__main__.py, what `accelerate launch -m xlpo` runs) answers as the console script."""
    proc = subprocess.run([sys.executable, "-m", "xlpo", "--version"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("xlpo "), (proc.stdout, proc.stderr)


def test_help_and_config_errors_do_not_import_torch(tmp_path):
    runs = [["--help"], ["train", "--help"], ["icr", "run", "--help"], ["experiment", "capo-mtpe", "--help"],
            ["configs"], ["train", "training.lerning_rate=1"], ["train", "capo-paper-gpu", "loss.alpah=1"],
            ["icr", "run", "sampling.n=1"], ["experiment", "capo-mtpe", "data.per_splt=1"],
            ["train", "capo-cpu-smollm2", "--dry-run"], ["experiment", "capo-mtpe", "capo-mtpe-cpu", "--dry-run"],
            *([*command, "--help"] for command in (["data", "mtpe"], ["data", "stats"], ["eval", "rewards"], ["analyze"],
                                                   ["bench", "mtbench"], ["bench", "xlsum"], ["bench", "winrate"],
                                                   ["bench", "mifeval"], ["serve"], ["icr", "stats"], ["configs", "show"]))]
    code = ("import json, sys\nfrom xlpo.cli import main\nloaded = []\n"
            f"for args in {runs!r}:\n"
            "    sys.argv = ['xlpo', *args]\n"
            "    try:\n        main()\n    except SystemExit:\n        pass\n"
            "    loaded.append([m for m in ('torch', 'transformers') if m in sys.modules])\n"
            "print(json.dumps(loaded), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    loaded = json.loads(proc.stderr.strip().splitlines()[-1])
    assert loaded == [[]] * len(runs), dict(zip(map(" ".join, runs), loaded))


# --------------------------------------------------------------------------- installed from a wheel


@pytest.mark.e2e
def test_shipped_configs_from_a_wheel_installed_outside_the_checkout(tmp_path):
    # Build from a copy of the sources (setuptools writes build/ beside them), with one extra nested
    # config to show that subfolders (accelerate/...) are packaged too.
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    nested = source / "src" / "xlpo" / "configs" / "accelerate" / "test-only.yaml"
    nested.parent.mkdir(exist_ok=True)
    nested.write_text("# A nested config for this test.\ndistributed_type: NO\n")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "wheel"),
                    str(source)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "wheel").glob("xlpo-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS="200")

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "xlpo", *args], capture_output=True, text=True, cwd=elsewhere,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    listed = run("configs")
    for name in (*SHIPPED_NAMES, "accelerate/test-only"):
        assert name in listed
    assert "A nested config for this test." in listed
    path = Path(run("configs", "path", "accelerate/test-only").strip())
    assert path.is_relative_to(site) and path.is_file()
    assert Path(run("configs", "path", "capo-paper-gpu").strip()).is_relative_to(site)
    assert "loss:\n  name: capo" in run("train", "capo-cpu-smollm2", "--dry-run")
