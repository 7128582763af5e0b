//! Decoded frames keep their colours (issue 23): the harnesses' YUV to RGB conversion
//! (`eval-video`'s clip decode, the training pool's round trip, through `gst_frames`) against
//! FFmpeg's exact conversion of the same file, on clean clips FFmpeg makes here. GStreamer
//! 1.22's `videoconvert`, which the harnesses used before, is 0.5-3.8 levels dark on them.
#![cfg(feature = "gst")]

mod support;

use std::path::Path;

use assert_cmd::Command;
use support::child::{clipdenoise, RunExt};
use support::pipeline::gst_run;

const TINY: &str = "../tests/fixtures/tiny-w8/official_state_dict.safetensors";
const W: usize = 320;
const H: usize = 240;
const FRAMES: usize = 2;
/// Largest |mean difference| per channel, in levels of 255, from FFmpeg's decode.
const TOLERANCE: f64 = 0.3;

/// A clean lossless H.264 clip of FFmpeg's testsrc2 (sharp saturated colours and gradients)
/// in 4:2:0 with `tags` (FFmpeg's colour options).
fn make_clip(path: &Path, tags: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={W}x{H}:rate=30"))
        .args([
            "-frames:v",
            "4",
            "-c:v",
            "libx264",
            "-qp",
            "0",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(tags)
        .arg(path)
        .run();
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mean per channel of packed RGB bytes.
fn means(rgb: &[u8]) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for px in rgb.chunks_exact(3) {
        for c in 0..3 {
            sum[c] += px[c] as f64;
        }
    }
    let n = (rgb.len() / 3) as f64;
    sum.map(|s| s / n)
}

/// FFmpeg's RGB of the first frames, converted exactly (`accurate_rnd+full_chroma_int`; its
/// default fast path is itself about 1 level dark on natural images) with the file's
/// colorimetry.
fn ffmpeg_rgb(path: &Path) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-frames:v", &FRAMES.to_string()])
        .args(["-sws_flags", "accurate_rnd+full_chroma_int+bitexact"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .run();
    assert!(out.status.success(), "ffmpeg decode");
    assert_eq!(out.stdout.len(), FRAMES * W * H * 3);
    out.stdout
}

/// The clean frames `clipdenoise eval-video` decoded (its `--dump`), as packed RGB.
fn eval_video_rgb(clip: &Path, dump: &Path) -> Vec<u8> {
    let out = clipdenoise()
        .arg("eval-video")
        .arg(clip)
        .args([
            "--frames",
            &FRAMES.to_string(),
            "--crf",
            "0",
            "--preset",
            "ultrafast",
        ])
        .args(["--model", TINY, "--json", "--dump"])
        .arg(dump)
        .run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stem = clip.file_stem().unwrap();
    let mut rgb = Vec::new();
    for i in 0..FRAMES {
        let png = dump.join(stem).join("clean").join(format!("{i:04}.png"));
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (W as u32, H as u32));
        rgb.extend_from_slice(img.as_raw());
    }
    rgb
}

/// GStreamer's own `videoconvert` to RGB of the first frames.
fn videoconvert_rgb(clip: &Path, raw: &Path) -> Vec<u8> {
    gst_run(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \
         identity eos-after={FRAMES} ! filesink location={}",
        clip.display(),
        raw.display()
    ));
    std::fs::read(raw).unwrap()
}

fn max_diff(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|c| (a[c] - b[c]).abs()).fold(0.0, f64::max)
}

#[test]
fn decoded_clips_keep_ffmpegs_colours_where_videoconvert_darkens() {
    let dir = tempfile::tempdir().unwrap();
    for (name, tags) in [
        // Untagged: BT.601 limited range for both FFmpeg and GStreamer at this size.
        ("untagged", &[][..]),
        (
            "bt709",
            &[
                "-colorspace",
                "bt709",
                "-color_primaries",
                "bt709",
                "-color_trc",
                "bt709",
            ][..],
        ),
        (
            "full-range",
            &["-color_range", "pc", "-colorspace", "bt470bg"][..],
        ),
    ] {
        let clip = dir.path().join(format!("{name}.mp4"));
        make_clip(&clip, tags);
        let reference = means(&ffmpeg_rgb(&clip));
        let ours = means(&eval_video_rgb(&clip, &dir.path().join("dump")));
        let gst = means(&videoconvert_rgb(
            &clip,
            &dir.path().join(format!("{name}.rgb")),
        ));
        eprintln!("{name}: FFmpeg {reference:.3?}, eval-video {ours:.3?}, videoconvert {gst:.3?}");
        assert!(
            max_diff(ours, reference) <= TOLERANCE,
            "{name}: eval-video decoded mean R/G/B {ours:.3?}, FFmpeg {reference:.3?}"
        );
        // The check tells the two conversions apart: videoconvert's is outside it.
        assert!(
            max_diff(gst, reference) > TOLERANCE,
            "{name}: videoconvert {gst:.3?} within {TOLERANCE} of FFmpeg {reference:.3?} \
             (GStreamer fixed? then the harnesses could use it again)"
        );
    }
}
