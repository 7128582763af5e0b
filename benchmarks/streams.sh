#!/usr/bin/env bash
# Many streams, one model (issue 14): total throughput and peak memory of N streams through N
# clipdenoise elements in one gst-launch-1.0, against 1 stream, in one script; with the
# elements sharing one model (share-model=true, the default) and each loading its own.
# Each stream decodes the same clip (the sample's camera noise, scaled, H.264).
#   SIZE=WxH    frame size (default 640x360)
#   FRAMES=N    frames per stream (default 40)
#   STREAMS=N   streams of the many-stream run (default 4)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${SIZE:-640x360}"
FRAMES="${FRAMES:-40}"
STREAMS="${STREAMS:-4}"
# shellcheck source=benchmarks/clip.sh
. benchmarks/clip.sh
export GST_PLUGIN_PATH=$PWD/target/release

make_clip "$TMP/in.mp4" "$W" "$H" "$FRAMES"

# run N SHARE: prints "seconds peak_kib"
run() {
  local n=$1 share=$2 desc=""
  for _ in $(seq "$n"); do
    desc="$desc filesrc location=$TMP/in.mp4 ! decodebin ! videoconvert ! clipdenoise share-model=$share ! fakesink sync=false"
  done
  local t0 t1
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # desc is a pipeline description, split on purpose
  /usr/bin/time -f "%M" -o "$TMP/rss" env -u OMP_WAIT_POLICY gst-launch-1.0 -q $desc >/dev/null
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc -l) $(cat "$TMP/rss")"
}

echo "| streams | share-model | total fps | vs 1 stream | peak RSS MiB | vs 1 stream |"
echo "|---|---|---|---|---|---|"
for share in true false; do
  read -r t1 m1 < <(run 1 "$share")
  read -r tn mn < <(run "$STREAMS" "$share")
  f1=$(echo "$FRAMES / $t1" | bc -l)
  fn=$(echo "$STREAMS * $FRAMES / $tn" | bc -l)
  printf '| 1 | %s | %.2f | 1.00 | %d | 1.00 |\n' "$share" "$f1" "$((m1 / 1024))"
  printf '| %s | %s | %.2f | %.2f | %d | %.2f |\n' "$STREAMS" "$share" "$fn" \
    "$(echo "$fn / $f1" | bc -l)" "$((mn / 1024))" "$(echo "$mn / $m1" | bc -l)"
done
