# Sourced by the benchmark scripts that run GStreamer on a test clip, after they set their
# defaults: the environment (scripts/env.sh), SIZE split into W and H, a temporary folder TMP
# removed on exit (with its own GStreamer registry), and the clip maker.
. scripts/env.sh
W="${SIZE%x*}"
H="${SIZE#*x}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export GST_REGISTRY="$TMP/registry.bin"

# make_clip OUT W H FRAMES: the sample's camera noise (samples/bedroom-noisy.mp4) scaled to
# WxH at 30 frames/s, FRAMES frames, H.264 in MP4 (the CLI's default codec).
make_clip() {
  gst-launch-1.0 -q filesrc location=samples/bedroom-noisy.mp4 ! decodebin ! videoconvert \
    ! videoscale ! "video/x-raw,width=$2,height=$3" ! videorate ! video/x-raw,framerate=30/1 \
    ! identity eos-after="$(($4 + 1))" ! x264enc ! mp4mux ! filesink location="$1" >/dev/null
}
