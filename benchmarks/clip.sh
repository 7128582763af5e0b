# Sourced by the benchmark scripts: the test clip they all denoise.
# make_clip OUT W H FRAMES: the sample's camera noise (samples/bedroom-noisy.mp4) scaled to
# WxH at 30 frames/s, FRAMES frames, H.264 in MP4 (the CLI's default codec).
make_clip() {
  gst-launch-1.0 -q filesrc location=samples/bedroom-noisy.mp4 ! decodebin ! videoconvert \
    ! videoscale ! "video/x-raw,width=$2,height=$3" ! videorate ! video/x-raw,framerate=30/1 \
    ! identity eos-after="$(($4 + 1))" ! x264enc ! mp4mux ! filesink location="$1" >/dev/null
}
