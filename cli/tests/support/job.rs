//! What the segmented-job tests share: running `plan`/`segment`/`join` and reading what they
//! wrote back as users play it (ffmpeg's per-frame MD5 and timestamps, ffprobe's streams; playback through support::playable),
//! each external program under the watchdog.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::child::{clipdenoise, RunExt};
use super::watchdog;

/// The demo clip (480x270, 30 fps, 75 frames; samples/README.md).
pub fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/bedroom-noisy.mp4")
}

/// Run the binary with `args`; returns (exit ok, stderr).
pub fn cli(args: &[&str]) -> (bool, String) {
    let out = clipdenoise().args(args).run();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    (out.status.success(), err)
}

/// Run the binary, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = clipdenoise().args(args).run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run the binary, which must fail with one line on stderr containing `want`.
pub fn fails(args: &[&str], want: &str) -> String {
    let (success, err) = cli(args);
    assert!(!success, "{args:?} should fail; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line expected, got: {err}");
    assert!(err.contains(want), "{args:?}: expected '{want}' in: {err}");
    err
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = watchdog::output(cmd, what);
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Each decoded frame of `path`'s first video stream: (timestamp, MD5 of its pixels), by
/// ffmpeg's framemd5 muxer (in the stream's own pixel format).
pub fn frame_md5s(path: &Path) -> Vec<(String, String)> {
    let mut c = Command::new("ffmpeg");
    c.args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"]);
    let out = run(&mut c, "ffmpeg framemd5");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f[2].to_string(), f[5].to_string())
        })
        .collect()
}

/// Decoded frames of `path` as 8-bit RGB, ffmpeg decoding (for PSNR).
pub fn frames_rgb(path: &Path) -> Vec<Vec<u8>> {
    let (w, h) = size(path);
    let mut c = Command::new("ffmpeg");
    c.args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]);
    let out = run(&mut c, "ffmpeg rawvideo");
    out.stdout.chunks(w * h * 3).map(|c| c.to_vec()).collect()
}

fn probe(path: &Path, args: &[&str]) -> String {
    let mut c = Command::new("ffprobe");
    c.args(["-v", "error"]).args(args).arg(path);
    String::from_utf8_lossy(&run(&mut c, "ffprobe").stdout)
        .trim()
        .to_string()
}

fn size(path: &Path) -> (usize, usize) {
    let s = probe(
        path,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ],
    );
    let v: Vec<usize> = s.split(',').map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

/// The codec of each stream ("h264", "aac", ...).
pub fn streams(path: &Path) -> Vec<String> {
    probe(
        path,
        &["-show_entries", "stream=codec_name", "-of", "csv=p=0"],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// The demo clip re-encoded as cameras and editors write video: x264 with B-frames (its
/// default) and a keyframe every 12 frames, 75 frames (2.5 s), with `audio` seconds of AAC (a
/// 440 Hz tone) if any, into `path` (the container from its extension). `indexed` false:
/// Matroska written to a pipe, so without its index (Cues), as streaming recorders leave it.
pub fn keyframed_clip(path: &Path, indexed: bool, audio: Option<f64>) {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(sample());
    if let Some(a) = audio {
        c.args(["-f", "lavfi", "-t", &a.to_string(), "-i"])
            .arg("sine=frequency=440:sample_rate=48000")
            .args(["-map", "0:v", "-map", "1:a", "-c:a", "aac"]);
    }
    c.args([
        "-c:v", "libx264", "-g", "12", "-bf", "3", "-pix_fmt", "yuv420p",
    ]);
    if indexed {
        c.arg(path);
        run(&mut c, "ffmpeg (a keyframed clip)");
    } else {
        c.args(["-f", "matroska", "-"]);
        let out = run(&mut c, "ffmpeg (an index-less clip)");
        std::fs::write(path, out.stdout).unwrap();
    }
}

/// A stream's first packet time and its end (the last packet's time plus its duration), in
/// seconds, by ffprobe; `stream` as ffprobe selects it ("a:0").
pub fn span(path: &Path, stream: &str) -> (f64, f64) {
    let text = probe(
        path,
        &[
            "-select_streams",
            stream,
            "-show_entries",
            "packet=pts_time,duration_time",
            "-of",
            "csv=p=0",
        ],
    );
    let (mut first, mut end) = (f64::INFINITY, f64::NEG_INFINITY);
    for l in text.lines() {
        let v: Vec<f64> = l.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        if let [pts, dur] = v[..] {
            first = first.min(pts);
            end = end.max(pts + dur);
        }
    }
    assert!(
        first.is_finite(),
        "{}: no packets in {stream}",
        path.display()
    );
    (first, end)
}

/// PSNR (dB) between two equally long lists of equally sized 8-bit frames, over all of them.
pub fn psnr(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut se, mut n) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            let d = *p as f64 - *q as f64;
            se += d * d;
        }
        n += x.len() as f64;
    }
    10.0 * (255.0f64 * 255.0 / (se / n).max(1e-12)).log10()
}

/// Write `path`, an executable stand-in for `clipdenoise` that the schedulers' tests run as
/// `path segment JOB [I]` (I: the argument, else $SLURM_ARRAY_TASK_ID): it runs the binary
/// under test, except that segment `index`'s first attempt is SIGKILLed once it has started
/// writing (its temporary file is there); `JOB/killed-once` marks that it was.
pub fn kill_once_wrapper(path: &Path, index: u64) {
    let real = assert_cmd::cargo::cargo_bin("clipdenoise");
    let script = r#"#!/bin/sh
REAL=@BIN@
JOB=$2
I=${3:-$SLURM_ARRAY_TASK_ID}
if [ "$I" = @I@ ] && mkdir "$JOB/killed-once" 2>/dev/null; then
    "$REAL" "$@" & pid=$!
    n=0
    until ls -a "$JOB/segments" | grep -q '^\.seg-@SEG@.*part' || [ $n -ge 3000 ]; do
        sleep 0.02; n=$((n + 1))
    done
    kill -KILL $pid
    wait $pid
    exit 137
fi
exec "$REAL" "$@"
"#
    .replace("@BIN@", path_str(&real))
    .replace("@I@", &index.to_string())
    .replace("@SEG@", &format!("{index:05}"));
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The segments' (start, end) from plan.json.
pub fn segments(job: &Path) -> Vec<(u64, u64)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.join("plan.json")).unwrap()).unwrap();
    v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap()))
        .collect()
}

/// Assert two files decode to the same frames with the same timestamps, naming the first
/// frame that differs and checking both sides of every seam explicitly.
pub fn assert_same_frames(joined: &Path, single: &Path, seams: &[(u64, u64)]) {
    let a = frame_md5s(joined);
    let b = frame_md5s(single);
    assert_eq!(a.len(), b.len(), "frame counts differ");
    for &(start, _) in seams.iter().skip(1) {
        for i in [start - 1, start] {
            assert_eq!(a[i as usize], b[i as usize], "frame {i} at a seam differs");
        }
    }
    if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
        panic!("frame {i} differs: {:?} vs {:?}", a[i], b[i]);
    }
}

/// A job checked against one pass: `plan` of `src` into `job` with `segments` segments and
/// `settings` (options `plan` and `video` share); `run` does the rest (the segments and the
/// join into `joined`, through the engine under test); then `joined` must play as 75 frames
/// ([`super::playable::assert_playable`]: FFmpeg and GStreamer), and it must equal one `clipdenoise
/// video` pass at the same settings (the plan's precision, fp32) frame for frame and
/// timestamp for timestamp, on both sides of every seam. Returns the segments' (start, end).
pub fn assert_job_is_one_pass(
    src: &Path,
    job: &Path,
    segments: usize,
    settings: &[&str],
    joined: &Path,
    run: impl FnOnce(&Path, &Path),
) -> Vec<(u64, u64)> {
    let (src, job_s, n) = (path(src), path(job), segments.to_string());
    let mut plan = vec!["plan", src, "-o", job_s, "--segments", &n];
    plan.extend(settings);
    ok(&plan);
    run(job, joined);
    let single = job.with_extension("single.mkv");
    let mut video = vec!["video", src, path(&single), "--precision", "fp32"];
    video.extend(settings);
    ok(&video);
    super::playable::assert_playable(joined, 75);
    let seams = self::segments(job);
    assert_eq!(seams.len(), segments);
    assert_same_frames(joined, &single, &seams);
    seams
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
