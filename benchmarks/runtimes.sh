#!/usr/bin/env bash
# Ours against PyTorch eager, ONNX Runtime and OpenVINO on the same weights and work per frame,
# in one run (benchmarks/runtimes.py; the table in benchmarks/README.md). ONNX Runtime and
# OpenVINO come from PyPI into a venv of their own, made here once (BENCH_VENV, default
# /opt/clipdenoise-bench-venv), so the torch venv the build links stays as it is.
#   SIZES=640x360,1920x1080 PRECISIONS=fp32,bf16 ROUNDS=3 FRAMES=30 bash benchmarks/runtimes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
BENCH_VENV="${BENCH_VENV:-/opt/clipdenoise-bench-venv}"
if ! "$BENCH_VENV/bin/python" -c 'import onnxruntime, openvino, onnx, numpy' 2>/dev/null; then
  echo "runtimes: installing onnxruntime, openvino and onnx into $BENCH_VENV (once)" >&2
  python3 -m venv "$BENCH_VENV"
  "$BENCH_VENV/bin/pip" install -q onnxruntime openvino onnx numpy
fi
[ -x target/release/clipdenoise ] || cargo build --release -p clipdenoise-cli
mkdir -p benchmarks/results
LOG="benchmarks/results/runtimes-$(date +%Y%m%d-%H%M%S).jsonl"
"$TORCH_VENV/bin/python" benchmarks/runtimes.py --bench-venv "$BENCH_VENV" \
  --sizes "${SIZES:-640x360,1920x1080}" --precisions "${PRECISIONS:-fp32,bf16}" \
  --rounds "${ROUNDS:-3}" --frames "${FRAMES:-30}" --log "$LOG"
echo "raw results: $LOG ($(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u '+%F %H:%M UTC'))"
