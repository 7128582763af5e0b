#!/usr/bin/env bash
# The temporal stage's cost through the element (issue 22), in one run: per-frame
# (temporal=0), causal (the default temporal=0.5) and offline (temporal=0.5 lookahead=2), each
# in fp32 and the default precision (auto), on videotestsrc at 640x360, configurations
# interleaved round by round. Each time is a run of N frames minus a run of 1 frame of the
# same configuration (model load, warm-up and precision=auto's timing cancel out), the best
# of the rounds, elapsed and CPU time; ratios against per-frame in the same precision.
#   SIZE=WxH   frame size (default 640x360)
#   FRAMES=N   frames per run (default 120)
#   RUNS=N     rounds (default 2)
#   MODES="per-frame causal offline"  PRECISIONS="fp32 auto"  a subset (per-frame is always
#              run: the ratios need it)
#   BASELINE=DIR  also a baseline build's plugin (a folder holding its libgstclipdenoise.so
#              and libgstclipdenoise_element.so, e.g. a copy of main's target/release),
#              interleaved with this one's run by run; its rows are marked `baseline`
# Issue 22's targets at 640x360 on 2 cores: causal >= 12 frames/s in fp32; offline <= 1.5x
# the per-frame cost.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
size="${SIZE:-640x360}"; frames="${FRAMES:-120}"; runs="${RUNS:-2}"
w="${size%x*}"; h="${size#*x}"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $(date -u +%FT%TZ)"
nice -n 5 cargo build --release -q -p gst-plugin-clipdenoise
regs=$(mktemp -d)
trap 'rm -rf "$regs"' EXIT
# This build's plugin copied aside, so that a rebuild while the benchmark runs does not swap it.
mkdir "$regs/this"
cp target/release/libgstclipdenoise.so target/release/libgstclipdenoise_element.so "$regs/this/"
builds=("this:$regs/this")
if [[ -n "${BASELINE:-}" ]]; then
  builds+=("baseline:$(realpath "$BASELINE")")
fi
for b in "${builds[@]}"; do
  GST_PLUGIN_PATH="${b#*:}" GST_REGISTRY="$regs/${b%%:*}.bin" gst-inspect-1.0 clipdenoise >/dev/null
done

modes=()
for m in "per-frame:temporal=0" "causal:temporal=0.5" "offline:temporal=0.5 lookahead=2"; do
  name="${m%%:*}"
  if [[ "$name" == per-frame || " ${MODES:-causal offline} " == *" $name "* ]]; then
    modes+=("$m")
  fi
done
read -r -a precisions <<<"${PRECISIONS:-fp32 auto}"
declare -A best bestcpu

# "wall cpu": seconds gst-launch-1.0 takes for `n` frames through clipdenoise with `opts`
# (the plugin of the build `b`, name:folder),
# elapsed and on the CPU (user + system: steadier than the elapsed time on a loaded machine,
# but the model's two threads count twice where the temporal stage's one counts once).
seconds() {
  local n="$1" opts="$2" b="$3" out
  out=$(mktemp)
  # shellcheck disable=SC2086
  GST_PLUGIN_PATH="${b#*:}" GST_REGISTRY="$regs/${b%%:*}.bin" \
    /usr/bin/time -f '%e %U %S' -o "$out" timeout 600 gst-launch-1.0 -q videotestsrc \
    num-buffers="$n" pattern=ball ! "video/x-raw,width=$w,height=$h,framerate=15/1" \
    ! clipdenoise $opts ! fakesink
  awk '{ print $1, $2 + $3 }' "$out"
  rm -f "$out"
}

for r in $(seq "$runs"); do
  for p in "${precisions[@]}"; do
    for m in "${modes[@]}"; do
      for b in "${builds[@]}"; do
        name="${m%%:*}"; opts="precision=$p ${m#*:}"; build="${b%%:*}"
        read -r one_wall one_cpu < <(seconds 1 "$opts" "$b")
        read -r all_wall all_cpu < <(seconds "$frames" "$opts" "$b")
        per=$(echo "($all_wall - $one_wall) / ($frames - 1)" | bc -l)
        cpu=$(echo "($all_cpu - $one_cpu) / ($frames - 1)" | bc -l)
        printf 'round %d %-8s %-5s %-9s %6.2f s (cpu %6.2f) for %d frames, %5.2f s (cpu %5.2f) for 1: %6.1f ms/frame, cpu %6.1f\n' \
          "$r" "$build" "$p" "$name" "$all_wall" "$all_cpu" "$frames" "$one_wall" "$one_cpu" \
          "$(echo "$per * 1000" | bc -l)" "$(echo "$cpu * 1000" | bc -l)"
        key="$build/$p/$name"
        if [[ -z "${best[$key]:-}" ]] || (( $(echo "$per < ${best[$key]}" | bc -l) )); then
          best[$key]="$per"
        fi
        if [[ -z "${bestcpu[$key]:-}" ]] || (( $(echo "$cpu < ${bestcpu[$key]}" | bc -l) )); then
          bestcpu[$key]="$cpu"
        fi
      done
    done
  done
done

echo
echo "$size, $frames frames, best of $runs rounds (load after: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '| build | precision | mode | ms/frame | frames/s | / per-frame | temporal ms/frame | cpu ms/frame | cpu / per-frame |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for b in "${builds[@]}"; do
  build="${b%%:*}"
  for p in "${precisions[@]}"; do
    base="${best[$build/$p/per-frame]}"; basecpu="${bestcpu[$build/$p/per-frame]}"
    for m in "${modes[@]}"; do
      name="${m%%:*}"; per="${best[$build/$p/$name]}"; cpu="${bestcpu[$build/$p/$name]}"
      printf '| %s | %s | %s | %.1f | %.2f | %.2fx | %.1f | %.1f | %.2fx |\n' "$build" "$p" "$name" \
        "$(echo "$per * 1000" | bc -l)" "$(echo "1 / $per" | bc -l)" \
        "$(echo "$per / $base" | bc -l)" "$(echo "($per - $base) * 1000" | bc -l)" \
        "$(echo "$cpu * 1000" | bc -l)" "$(echo "$cpu / $basecpu" | bc -l)"
    done
  done
done
