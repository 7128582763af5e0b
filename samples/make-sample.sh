#!/usr/bin/env bash
# Rebuild samples/bedroom-noisy.mp4: the first 2.5 s of the SAM 2 bedroom clip (Apache-2.0,
# see samples/README.md), scaled to 480x270, with synthetic camera-like Poisson-Gaussian noise,
# encoded as H.264. Needs gst-launch-1.0 (gstreamer1.0-tools, -plugins-base/good/ugly, -libav)
# and python3 with numpy (the project's torch venv has it).
#   samples/make-sample.sh [SOURCE_MP4] [OUTPUT_MP4]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${1:-$here/../../shared/data/video-sam2-bedroom/bedroom.mp4}"
out="${2:-$here/bedroom-noisy.mp4}"
python="${PYTHON:-${TORCH_VENV:-/opt/torch-2.11.0-venv}/bin/python}"
command -v "$python" >/dev/null || python=python3

W=480 H=270 FRAMES=75 FPS=30
# Noise, in linear light (x_lin = x_srgb^2.2): y = clip(x_lin + n * sqrt(SHOT * x_lin + READ^2))
# with n ~ N(0, 1) i.i.d. per pixel and channel, back to sRGB (y^(1/2.2)), rounded to 8 bit.
# The same model as `clipdenoise::noise::camera(x, SHOT, READ)`.
SHOT=0.02 READ=0.02 SEED=20240617

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. Decode and scale (Lanczos); a few frames more than FRAMES (numpy keeps the first FRAMES).
gst-launch-1.0 -q filesrc location="$src" ! qtdemux ! h264parse ! avdec_h264 ! \
  videoconvert ! videoscale method=lanczos ! \
  "video/x-raw,format=RGB,width=$W,height=$H,pixel-aspect-ratio=1/1" ! \
  identity eos-after=$((FRAMES + 5)) ! filesink location="$tmp/clean.rgb"

# 2. Noise (numpy, seeded).
"$python" - "$tmp/clean.rgb" "$tmp/noisy.rgb" $W $H $FRAMES $SEED $SHOT $READ <<'PY'
import sys
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
w, h, frames, seed = (int(a) for a in sys.argv[3:7])
shot, read = float(sys.argv[7]), float(sys.argv[8])
x = np.fromfile(src, dtype=np.uint8).reshape(-1, h, w, 3)[:frames].astype(np.float64) / 255.0
rng = np.random.default_rng(seed)
lin = x ** 2.2
y = np.clip(lin + rng.standard_normal(lin.shape) * np.sqrt(shot * lin + read * read), 0.0, 1.0)
y = np.round(y ** (1.0 / 2.2) * 255.0).astype(np.uint8)
y.tofile(dst)
print(f"{y.shape[0]} frames {w}x{h}, shot {shot}, read {read}, seed {seed}", file=sys.stderr)
PY

# 3. Encode: H.264 High, yuv420p, constant quality 31 (pass=qual), 30 fps, moov first;
#    psy-tune=grain keeps the noise as noise (without it x264 smears it into blotches).
gst-launch-1.0 -q filesrc location="$tmp/noisy.rgb" ! \
  rawvideoparse format=rgb width=$W height=$H framerate=$FPS/1 ! videoconvert ! \
  video/x-raw,format=I420 ! \
  x264enc pass=qual quantizer=31 speed-preset=slow psy-tune=grain key-int-max=$FPS threads=2 ! \
  video/x-h264,profile=high ! h264parse ! mp4mux faststart=true ! filesink location="$out"
ls -l "$out"
