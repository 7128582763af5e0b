#!/usr/bin/env bash
# A live source through the element at several rates next to the element's offline rate, in
# one run (issue 26): prints a table of frames delivered to a syncing sink, late, thinned,
# latencies and delivered / possible (possible = min(source rate, offline rate)).
# Issue 26's targets at 640x360 on 2 cores: >= 0.90 at every rate, 0 late.
#   SIZE=WxH     frame size (default 640x360)
#   RATES=a,b,.. source frame rates (default 10,15,30,60)
#   DURATION=N   seconds of live source per rate (default 10)
#   MODEL=M      the element's model (default: the built-in default)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $(date -u +%FT%TZ)" >&2
nice -n 5 cargo build --release -q -p gst-plugin-clipdenoise --example live_rate
./target/release/examples/live_rate --size "${SIZE:-640x360}" --rates "${RATES:-10,15,30,60}" \
  --seconds "${DURATION:-10}" --model "${MODEL:-default}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
