#!/usr/bin/env bash
# What cutting a job into segments costs: a SEGMENTS-segment job run on this one machine
# (`plan`, every `segment` one after another, `join`; warm-up frames, model loads and each
# segment's decoding from its keyframe included) against one `clipdenoise video` pass of the
# same clip with the same settings (default model, its temporal default, H.264, PRECISION:
# fp32 by default, what `plan` fixes for `--precision auto`; `video` alone would choose bf16
# on a CPU with AMX, which is not the same work), in the same run. ROUNDS rounds, the order alternating (one pass first in odd rounds, the job first in
# even ones) so that a load that changes meanwhile weighs on both; each round prints its
# times, the job's parts and the load (uptime), the end the ratio of the summed times; and
# the same for the CPU time (user + system) of the processes, which a machine loaded by
# others changes far less than the elapsed time.
#   bash benchmarks/job-segments.sh                  # SIZE=320x180 FRAMES=2400 SEGMENTS=4 ROUNDS=2
#   FRAMES=600 ROUNDS=1 bash benchmarks/job-segments.sh   # short mode (about a quarter of the time)
#   B=/path/to/clipdenoise bash benchmarks/job-segments.sh  # another build of the binary
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-320x180}
FRAMES=${FRAMES:-2400}
SEGMENTS=${SEGMENTS:-4}
ROUNDS=${ROUNDS:-2}
PRECISION=${PRECISION:-fp32}
. benchmarks/clip.sh
B=${B:-target/release/clipdenoise}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# The sample looped to FRAMES frames at WxH, a keyframe every 2 s.
ffmpeg -v error -nostdin -stream_loop -1 -i samples/bedroom-noisy.mp4 -vf "scale=$W:$H" \
  -frames:v "$FRAMES" -c:v libx264 -g 60 -pix_fmt yuv420p "$TMP/in.mp4"
now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
load() { uptime | sed 's/.*load average: //'; }
# cpu_s: CPU seconds (user + system) of this shell's finished children so far (`times` in
# this shell: a subshell has its own children).
cpu() {
  times >"$TMP/times"
  cpu_s=$(tail -n 1 "$TMP/times" | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, t, "m"); n += t[1] * 60 + t[2] } printf "%.2f", n }')
}

single() {
  local t0 c0
  t0=$(now)
  cpu
  c0=$cpu_s
  $B video "$TMP/in.mp4" "$TMP/single.mp4" -f --precision "$PRECISION" >/dev/null 2>&1
  single_s=$(secs "$t0" "$(now)")
  cpu
  single_cpu=$(secs "$c0" "$cpu_s")
}

job() {
  local t0 t1 parts="" i ts c0
  rm -rf "$TMP/job" "$TMP/joined.mp4"
  t0=$(now)
  cpu
  c0=$cpu_s
  $B plan "$TMP/in.mp4" -o "$TMP/job" --segments "$SEGMENTS" --precision "$PRECISION" >/dev/null 2>&1
  t1=$(now)
  parts="plan $(secs "$t0" "$t1")"
  for ((i = 0; i < SEGMENTS; i++)); do
    ts=$(now)
    $B segment "$TMP/job" "$i" 2>"$TMP/seg.err" >/dev/null
    parts="$parts, seg $i $(secs "$ts" "$(now)") (from frame $(grep -o 'decoded from frame [0-9]*' "$TMP/seg.err" | grep -o '[0-9]*$'))"
  done
  ts=$(now)
  $B join "$TMP/job" "$TMP/joined.mp4" >/dev/null 2>&1
  parts="$parts, join $(secs "$ts" "$(now)")"
  job_s=$(secs "$t0" "$(now)")
  cpu
  job_cpu=$(secs "$c0" "$cpu_s")
  job_parts=$parts
}

sum_single=0
sum_job=0
cpu_single=0
cpu_job=0
for ((r = 1; r <= ROUNDS; r++)); do
  before=$(load)
  if ((r % 2)); then
    single
    job
  else
    job
    single
  fi
  echo "round $r: one pass $single_s s, job $job_s s ($job_parts), ratio $(awk -v a="$single_s" -v b="$job_s" 'BEGIN { printf "%.3f", b / a }'); CPU time one pass $single_cpu s, job $job_cpu s, ratio $(awk -v a="$single_cpu" -v b="$job_cpu" 'BEGIN { printf "%.3f", b / a }'); load $before -> $(load)"
  sum_single=$(awk -v a="$sum_single" -v b="$single_s" 'BEGIN { print a + b }')
  sum_job=$(awk -v a="$sum_job" -v b="$job_s" 'BEGIN { print a + b }')
  cpu_single=$(awk -v a="$cpu_single" -v b="$single_cpu" 'BEGIN { print a + b }')
  cpu_job=$(awk -v a="$cpu_job" -v b="$job_cpu" 'BEGIN { print a + b }')
done
warmup=$(grep -o '"warmup": [0-9]*' "$TMP/job/plan.json" | grep -o '[0-9]*$')
echo "clip: ${W}x${H}, $FRAMES frames; $SEGMENTS segments, $warmup warm-up frames each; $PRECISION; $ROUNDS rounds"
echo "one pass (clipdenoise video): $sum_single s in all; job on one machine (plan + $SEGMENTS segments + join): $sum_job s"
awk -v a="$sum_single" -v b="$sum_job" 'BEGIN { printf "ratio job / one pass: %.3fx\n", b / a }'
echo "CPU time (user + system): one pass $cpu_single s, job $cpu_job s"
awk -v a="$cpu_single" -v b="$cpu_job" 'BEGIN { printf "CPU ratio job / one pass: %.3fx\n", b / a }'
echo "uptime: $(uptime)"
