#!/usr/bin/env bash
# The one command for a lent GPU machine (docs/performance.md, "GPU"): install the wheels carried in
# .whl/ (made by benchmarks/gpu_prepare.sh), then run benchmarks/gpu_check.py with the tokenizer
# carried in .gpu/tokenizer; its JSON files, the log and the GPU's name go to $OUT.
# Extra arguments go to gpu_check.py (e.g. --sections training,speed --budget 240 for a rerun).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# No network there: fail at once instead of waiting on the Hub.
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" 2>&1
python3 benchmarks/gpu_check.py --tokenizer .gpu/tokenizer --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
