#!/usr/bin/env bash
# The experiment runner side by side (docs/experiment.md, "Workers"): the same 4 trainings (DPO and CAPO,
# two seeds, 10 steps each) and 5 scorings (80 pairs each) of the embedded model, run as 1 process x 2
# torch threads and as 2 worker processes x 1 thread. Prints each wall time and the per-stage times.
# Usage: bash benchmarks/runner_workers.sh [WORKDIR]   (about 15 minutes on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
XLPO=${XLPO:-.venv/bin/xlpo}
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cat > "$work/mini.yaml" <<'YAML'
data: {per_split: {train: 40, validation: 10, evaluation: 40}, directions: [en-de, en-zh], seed: 42}
train:
  model: {name_or_path: embedded, dtype: float32}
  lora: {r: 16, alpha: 32, dropout: 0.05}
  data: {chat_format: tokenizer, max_length: 384, max_prompt_length: 256}
  training: {epochs: 1, batch_size: 4, grad_accum: 2, learning_rate: 1.5e-3, lr_scheduler: cosine,
             warmup_ratio: 0.1, seed: 42, save_steps: 5, progress: false}
methods:
  - {name: dpo, loss: {name: dpo, beta: 0.1}}
  - {name: capo, loss: {name: capo, beta: 0.1, alpha: 2.0, rrm: paper}}
capo_inverse: false
seeds: [1, 2]
YAML
for setting in "1 2" "2 1"; do
  set -- $setting
  out="$work/out-$1x$2"
  rm -rf "$out" "$work/ref-$1x$2"
  start=$(date +%s.%N)
  "$XLPO" experiment capo-mtpe "$work/mini.yaml" out_dir="$out" runner.workers=$1 runner.threads=$2 \
      train.reference.cache_dir="$work/ref-$1x$2" > "$work/log-$1x$2.txt" 2>&1
  end=$(date +%s.%N)
  echo "workers $1 x threads $2: $(echo "$end - $start" | bc) s wall (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  grep -E "done at" "$work/log-$1x$2.txt" | sed 's/^/    /'
done
