#!/usr/bin/env bash
# The CPU table of benchmarks/README.md: each row runs `clipdenoise bench` (the real worker
# stage) and, right after it in the same script, the PyTorch eager reference
# (tools/torch_reference.py) on the same weights file, size, batch and precision, and reports
# the ratio ours / PyTorch. Run through `make bench-cpu` (sets up the venv and the build).
#   FRAMES=N   frames per clip-rn50 measurement (default 12; the default model gets 5x as many,
#              since one of its frames takes about a tenth of the time)
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
row() { # model-args size batch precision frames [extra bench flags]
  local model_args=($1) size=$2 batch=$3 prec=$4 frames=$5 extra=(${6:-})
  local ours file torch
  ours=$($BIN bench "${model_args[@]}" --size "$size" --batch-size "$batch" --precision "$prec" \
         --device cpu --frames "$frames" "${extra[@]}" --json)
  file=$(echo "$ours" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["model"])')
  case "$file" in *"(built in)"*) file=weights/clipdenoise-tiny.safetensors ;; esac
  torch=$("$PY" tools/torch_reference.py --model "$file" --size "$size" --batch-size "$batch" \
          --precision fp32 --frames "$frames" --json)
  echo "{\"ours\": $ours, \"pytorch\": $torch}" >> "$LOG"
  "$PY" - "$ours" "$torch" <<'PYEOF'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
layout = "" if o["channels_last"] else " NCHW"
print(f"| {o['preset']} | {o['size']} | {o['batch_size']} | {o['precision']}{layout} | {o['fps']:.2f} | "
      f"{t['fps']:.2f} | {o['fps'] / t['fps']:.2f}x | {o['peak_rss_mb']:.0f} |")
PYEOF
}
SMALL=$((FRAMES * 5))
row "--preset clip-rn50" 640x360 1 fp32 "$FRAMES"
row "--preset clip-rn50" 640x360 4 fp32 "$FRAMES"
row "--model default" 640x360 1 fp32 "$SMALL"
row "--model default" 640x360 4 fp32 "$SMALL"
row "--model default" 640x360 4 bf16 "$SMALL"
# The channels_last lever: the same row in contiguous NCHW.
row "--model default" 640x360 4 fp32 "$SMALL" --contiguous
echo
echo "raw results: $LOG ($(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F))"
