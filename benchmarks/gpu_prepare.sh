#!/usr/bin/env bash
# Prepare benchmarks/gpu_check.py for a GPU machine that has no network (docs/performance.md, "GPU"):
# the wheels its Python lacks (pydantic, datasets, trl and what they need; versions from
# constraints.txt) into .whl/, and the SmolLM2 tokenizer (~3.5 MB) into .gpu/tokenizer/. Both
# folders are ignored by git (added to info/exclude here) and travel by naming them in `carry`.
# Run it in this checkout, on a machine that reaches PyPI, with the project's .venv built.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
for path in /.whl/ /.gpu/; do
    grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >> "$exclude"
done
PY=${PYTHON:-.venv/bin/python}
pin() { grep -i "^$1==" constraints.txt | head -1; }
rm -rf .whl .gpu && mkdir -p .whl .gpu
# --no-deps: the GPU image already has torch, transformers, peft, accelerate, pyarrow, pandas,
# fsspec, xxhash, huggingface-hub...; these are the ones it lacks (docs/performance.md lists them).
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $(pin pydantic) $(pin pydantic_core) $(pin annotated-types) $(pin typing-inspection) \
    $(pin datasets) $(pin dill) $(pin multiprocess) $(pin trl)
"$PY" -c "from xlpo.models import load_tokenizer; load_tokenizer('embedded').save_pretrained('.gpu/tokenizer')"
ls .whl
du -sh .whl .gpu
