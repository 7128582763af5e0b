#!/usr/bin/env bash
# What cutting a job into segments costs: a SEGMENTS-segment job run on this one machine
# (`plan`, every `segment` one after another, `join`; warm-up frames, model loads and the
# decoding of each segment's prefix included) against one `clipdenoise video` pass of the
# same clip with the same settings (default model, temporal 0.5, H.264), in the same run.
#   benchmarks/job-segments.sh          # SIZE=320x180 FRAMES=2400 SEGMENTS=4 (80 s at 30 fps)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-320x180}
FRAMES=${FRAMES:-2400}
SEGMENTS=${SEGMENTS:-4}
. benchmarks/clip.sh
B=target/release/clipdenoise
# The sample looped to FRAMES frames at WxH, a keyframe every 2 s.
ffmpeg -v error -nostdin -stream_loop -1 -i samples/bedroom-noisy.mp4 -vf "scale=$W:$H" \
  -frames:v "$FRAMES" -c:v libx264 -g 60 -pix_fmt yuv420p "$TMP/in.mp4"
now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

t0=$(now)
$B video "$TMP/in.mp4" "$TMP/single.mp4" >/dev/null 2>&1
t1=$(now)
$B plan "$TMP/in.mp4" -o "$TMP/job" --segments "$SEGMENTS" >/dev/null 2>&1
for ((i = 0; i < SEGMENTS; i++)); do
  $B segment "$TMP/job" "$i" >/dev/null 2>&1
done
$B join "$TMP/job" "$TMP/joined.mp4" >/dev/null 2>&1
t2=$(now)

warmup=$(grep -o '"warmup": [0-9]*' "$TMP/job/plan.json" | grep -o '[0-9]*$')
single=$(secs "$t0" "$t1")
job=$(secs "$t1" "$t2")
echo "clip: ${W}x${H}, $FRAMES frames; $SEGMENTS segments, $warmup warm-up frames each"
echo "one pass (clipdenoise video): $single s"
echo "job on one machine (plan + $SEGMENTS segments + join): $job s"
awk -v a="$single" -v b="$job" 'BEGIN { printf "ratio job / one pass: %.3fx\n", b / a }'
