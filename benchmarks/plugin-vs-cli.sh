#!/usr/bin/env bash
# The element under a plain `gst-launch-1.0` (no OMP_WAIT_POLICY, no preloaded allocator: what
# a GStreamer user runs) against `clipdenoise video` (the CLI: jemalloc, passive OpenMP) on the
# same clip, model, batch and codec, in one script; prints both rates and plugin / CLI.
# Issue 14's target: ratio >= 0.9.
#   SIZE=WxH    frame size of the test clip (default 640x360)
#   FRAMES=N    frames in the clip (default 60)
#   RUNS=N      alternate runs of each (default 2; the best of each is kept)
#   BATCH=N     batch-size for both (default: the element's default)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${SIZE:-640x360}"
FRAMES="${FRAMES:-60}"
RUNS="${RUNS:-2}"
# shellcheck source=benchmarks/clip.sh
. benchmarks/clip.sh
BIN=$PWD/target/release/clipdenoise
PLUGINS=$PWD/target/release

make_clip "$TMP/in.mp4" "$W" "$H" "$FRAMES"

batch_cli=()
batch_el=""
if [ -n "${BATCH:-}" ]; then
  batch_cli=(--batch-size "$BATCH")
  batch_el="batch-size=$BATCH"
fi

now() { date +%s.%N; }
cli() {
  local t0
  t0=$(now)
  env -u OMP_WAIT_POLICY "$BIN" video "$TMP/in.mp4" "$TMP/cli.mkv" --force --codec ffv1 \
    --no-audio "${batch_cli[@]}" >/dev/null 2>&1
  echo "$(now) - $t0" | bc -l
}
plugin() {
  local t0
  t0=$(now)
  # shellcheck disable=SC2086 # batch_el is one word or none
  env -u OMP_WAIT_POLICY GST_PLUGIN_PATH="$PLUGINS" gst-launch-1.0 -q \
    filesrc location="$TMP/in.mp4" ! decodebin ! videoconvert ! clipdenoise $batch_el \
    ! videoconvert ! avenc_ffv1 ! matroskamux ! filesink location="$TMP/plugin.mkv" >/dev/null
  echo "$(now) - $t0" | bc -l
}

best_cli=""
best_plugin=""
for _ in $(seq "$RUNS"); do
  c=$(cli)
  p=$(plugin)
  echo "run: cli ${c}s, plugin ${p}s" >&2
  if [ -z "$best_cli" ] || [ "$(echo "$c < $best_cli" | bc -l)" = 1 ]; then best_cli=$c; fi
  if [ -z "$best_plugin" ] || [ "$(echo "$p < $best_plugin" | bc -l)" = 1 ]; then best_plugin=$p; fi
done
frames=$(gst-discoverer-1.0 "$TMP/in.mp4" >/dev/null 2>&1 && echo "$FRAMES")
printf '| %s | %s frames | CLI %.2f fps | plugin %.2f fps | plugin / CLI %.2f |\n' \
  "$SIZE" "$frames" "$(echo "$FRAMES / $best_cli" | bc -l)" \
  "$(echo "$FRAMES / $best_plugin" | bc -l)" "$(echo "$best_cli / $best_plugin" | bc -l)"
