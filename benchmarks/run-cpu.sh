#!/usr/bin/env bash
# The CPU table of benchmarks/README.md: each row runs `clipdenoise bench` (the real worker
# stage) and, right after it in the same script, the PyTorch eager reference
# (tools/torch_reference.py) on the same weights file, size, batch and precision, and reports
# the ratio ours / PyTorch. Run through `make bench-cpu` (sets up the venv and the build).
#   FRAMES=N   frames per measurement (default 12)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
BIN=./target/release/clipdenoise
PY="$TORCH_VENV/bin/python"
FRAMES="${FRAMES:-12}"
OUT="benchmarks/results"
mkdir -p "$OUT"
LOG="$OUT/cpu-$(date +%Y%m%d-%H%M%S).jsonl"
echo "| model | size | batch | precision | ours fps | PyTorch eager fp32 fps | ratio | ours peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
row() { # model-arg size batch precision
  local model_args=($1) size=$2 batch=$3 prec=$4
  local ours file torch
  ours=$($BIN bench "${model_args[@]}" --size "$size" --batch-size "$batch" --precision "$prec" \
         --device cpu --frames "$FRAMES" --json)
  file=$(echo "$ours" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["model"])')
  case "$file" in *"(built in)"*) file=weights/clipdenoise-tiny.safetensors ;; esac
  torch=$("$PY" tools/torch_reference.py --model "$file" --size "$size" --batch-size "$batch" \
          --precision fp32 --frames "$FRAMES" --json)
  echo "{\"ours\": $ours, \"pytorch\": $torch}" >> "$LOG"
  "$PY" - "$ours" "$torch" <<'PYEOF'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"| {o['preset']} | {o['size']} | {o['batch_size']} | {o['precision']} | {o['fps']:.2f} | "
      f"{t['fps']:.2f} | {o['fps'] / t['fps']:.2f}x | {o['peak_rss_mb']:.0f} |")
PYEOF
}
row "--preset clip-rn50" 640x360 1 fp32
row "--preset clip-rn50" 640x360 4 fp32
row "--model default" 640x360 1 fp32
row "--model default" 640x360 4 fp32
row "--model default" 640x360 4 bf16
echo
echo "raw results: $LOG ($(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F))"
