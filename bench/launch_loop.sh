#!/usr/bin/env bash
# Repeat one 2-process accelerate launch and count the runs that fail (issue 32's flaky ZeRO-3 launch):
#   bash bench/launch_loop.sh [N=30] [CONFIG=zero3]
# Each failed run's stderr is kept in $OUT/fail-K.log (default OUT: runs/launch_loop). Needs no GPU.
set -u
n=${1:-30}; config=${2:-zero3}; out=${OUT:-runs/launch_loop}
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$out"
py=.venv/bin/python; acc=.venv/bin/accelerate
[ -x "$acc" ] || { echo "launch_loop: no .venv (run make install first)"; exit 2; }
model="$out/model"
[ -d "$model" ] || HF_HUB_OFFLINE=1 $py src/train.py recipes/tiny/sft.yaml --max_steps 1 --output_dir "$model" \
  --report_to none > "$out/model.log" 2>&1 || { echo "launch_loop: could not build the model (see $out/model.log)"; exit 2; }
fails=0
for k in $(seq 1 "$n"); do
  start=$(date +%s)
  if HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src $acc launch --config_file "accelerate_configs/$config.yaml" \
      --num_processes 2 --mixed_precision no src/train.py recipes/tiny/sft.yaml --model_name_or_path "$model" \
      --output_dir "$out/run" --max_steps 4 --logging_steps 1 \
      --per_device_train_batch_size 8 --ddp_find_unused_parameters false > "$out/last.log" 2>&1; then
    status=ok
  else
    status="FAILED (exit $?)"; fails=$((fails + 1)); cp "$out/last.log" "$out/fail-$k.log"
  fi
  rm -rf "$out/run"
  echo "run $k/$n: $status, $(( $(date +%s) - start )) s; failures so far: $fails"
done
echo "$config: $fails of $n launches failed"
