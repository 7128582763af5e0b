#!/usr/bin/env bash
# Rebuild samples/bedroom-noisy.mp4: the first 2.5 s (75 frames) of the SAM 2 bedroom clip
# (Apache-2.0, see samples/README.md), scaled to 480x270, filmed by the phone-like camera of
# `clipdenoise eval-video` (Poisson-Gaussian raw noise at shot gain 0.004, Bayer demosaic,
# white balance, colour matrix, gamma and tone curve, chroma noise reduction; seed 0), then
# encoded with x264 at CRF 23 (speed preset medium, a keyframe every 30 frames) into MP4.
# Since eval-video codes frames with sides rounded up to multiples of 16 (reproducible
# encodes), a rebuilt sample is 480x272, its last two rows repeated; the committed one was
# made before that, at 480x270.
# Needs the release build (make build) and GStreamer's plugins (good, ugly, libav).
#   samples/make-sample.sh [SOURCE_MP4] [OUTPUT_MP4]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${1:-$here/../../shared/data/video-sam2-bedroom/bedroom.mp4}"
out="${2:-$here/bedroom-noisy.mp4}"
bin="${CLIPDENOISE:-$here/../target/release/clipdenoise}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" eval-video "$src" --width 480 --frames 75 --crf 23 --shot 0.004 --seed 0 \
  --keep-encoded "$tmp"
cp "$tmp/$(basename "${src%.*}")-crf23.mp4" "$out"
echo "wrote $out"
