#!/usr/bin/env bash
# Peak memory (maximum resident set size, /usr/bin/time -v) of `clipdenoise image` on one large
# JPEG at several --max-pixels, against the bound the help and README give:
#   at most 0.45 GB per Mpixel of --max-pixels + 22 bytes per image pixel + 1.15 GB.
# Memory does not depend on the machine's load; the times printed do.
#   bash benchmarks/image-memory.sh                       # 6000x4000, 4000000 and 1000000
#   SIZE=3000x2000 MAX_PIXELS="1000000" bash benchmarks/image-memory.sh
# Needs a release build (cargo build --release -p clipdenoise-cli) and GNU time (package time).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${SIZE:-6000x4000}"
MAX_PIXELS="${MAX_PIXELS:-4000000 1000000}"
MODEL="${MODEL:-default}"
BIN=target/release/clipdenoise
[ -x /usr/bin/time ] || { echo "image-memory: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "image-memory: build first: cargo build --release -p clipdenoise-cli" >&2; exit 1; }
. scripts/env.sh
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
W="${SIZE%x*}"
H="${SIZE#*x}"
ffmpeg -nostdin -v error -f lavfi -i "testsrc2=s=${SIZE},noise=alls=25:allf=t" -frames:v 1 -q:v 3 "$TMP/big.jpg"
echo "image ${SIZE} ($(( W * H )) pixels), model ${MODEL}, $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-12s %12s %12s %10s\n' "max-pixels" "peak RSS GB" "bound GB" "wall s"
for mp in $MAX_PIXELS; do
  /usr/bin/time -v "$BIN" image "$TMP/big.jpg" -o "$TMP/out.png" -f --model "$MODEL" \
    --max-pixels "$mp" 2>"$TMP/time.txt" >/dev/null || { cat "$TMP/time.txt" >&2; exit 1; }
  kb=$(sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$TMP/time.txt")
  wall=$(sed -n 's/^\s*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$TMP/time.txt")
  # The tile is at most max-pixels (the whole image when it is smaller).
  tile=$(( mp > 0 && mp < W * H ? mp : W * H ))
  bound=$(awk -v t="$tile" -v p="$(( W * H ))" 'BEGIN { printf "%.2f", 0.45 * t / 1e6 + 22 * p / 1e9 + 1.15 }')
  printf '%-12s %12.2f %12s %10s\n' "$mp" "$(awk -v k="$kb" 'BEGIN { print k * 1024 / 1e9 }')" "$bound" "$wall"
done
