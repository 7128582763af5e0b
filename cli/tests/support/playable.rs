//! A video file the CLI wrote, checked as users play it: with FFmpeg (`ffprobe -count_frames`,
//! a full `ffmpeg -f null` decode of every stream without an error line, the first video packet a keyframe,
//! no packet marked to be discarded, no frame before 0) and with GStreamer (decodebin decodes
//! the same number of frames).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gst::prelude::*;

use super::pipeline::{init, wait_eos};
use super::watchdog;

/// What the players saw.
#[derive(Debug)]
pub struct Played {
    /// Video frames decoded (FFmpeg and GStreamer agree on it).
    pub frames: usize,
    /// The video packets' presentation times in seconds, in presentation order.
    pub pts: Vec<f64>,
    /// The end of the last frame (its time plus its duration), in seconds.
    pub end: f64,
    /// The audio packets' (stream a:0) presentation times in seconds, in file order.
    pub audio_pts: Vec<f64>,
}

fn ffprobe(path: &Path, args: &[&str]) -> String {
    let mut c = Command::new("ffprobe");
    c.args(["-v", "error"]).args(args).arg(path);
    let out = watchdog::output(&mut c, "ffprobe");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "ffprobe {args:?} {}: {err}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn packets(path: &Path, stream: &str) -> Vec<serde_json::Value> {
    let json = ffprobe(
        path,
        &[
            "-select_streams",
            stream,
            "-show_entries",
            "packet=pts_time,duration_time,flags",
            "-of",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["packets"].as_array().cloned().unwrap_or_default()
}

fn secs(v: &serde_json::Value) -> Option<f64> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// Check that `path` plays: exactly `frames` video frames through FFmpeg's decoder and
/// GStreamer's, no decoder error, a keyframe first. Fails the test naming what is wrong.
pub fn assert_playable(path: &Path, frames: usize) -> Played {
    let name = path.display();
    // A full decode of every stream, as `ffmpeg -i OUT ...` plays it: no error line (text
    // subtitles decoded too, and written as ASS, which the null output takes).
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0", "-c:s", "ass", "-f", "null", "-"]);
    let out = watchdog::output(&mut c, "ffmpeg -f null");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "{name}: ffmpeg cannot decode it cleanly: {err}"
    );
    let counted = ffprobe(
        path,
        &[
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "default=nokey=1:noprint_wrappers=1",
        ],
    );
    let counted: usize = counted
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}: ffprobe counted {counted:?}"));
    assert_eq!(counted, frames, "{name}: frames FFmpeg decodes");
    let video = packets(path, "v:0");
    assert_eq!(video.len(), frames, "{name}: video packets");
    let first = video[0]["flags"].as_str().unwrap_or("");
    assert!(
        first.starts_with('K'),
        "{name}: the first video packet is not a keyframe (flags {first})"
    );
    assert!(
        video
            .iter()
            .all(|p| !p["flags"].as_str().unwrap_or("").contains('D')),
        "{name}: packets marked to be discarded"
    );
    let mut pts: Vec<f64> = video
        .iter()
        .map(|p| secs(&p["pts_time"]).unwrap_or_else(|| panic!("{name}: a packet without pts")))
        .collect();
    pts.sort_by(f64::total_cmp);
    assert!(
        pts[0] >= -1e-6,
        "{name}: the first frame is at {} s",
        pts[0]
    );
    let last = video
        .iter()
        .max_by(|a, b| {
            secs(&a["pts_time"])
                .unwrap()
                .total_cmp(&secs(&b["pts_time"]).unwrap())
        })
        .unwrap();
    let end = pts[pts.len() - 1] + secs(&last["duration_time"]).unwrap_or(0.0);
    let audio_pts = packets(path, "a:0")
        .iter()
        .filter_map(|p| secs(&p["pts_time"]))
        .collect();
    assert_eq!(
        gst_decoded_frames(path),
        frames,
        "{name}: frames GStreamer decodes"
    );
    Played {
        frames,
        pts,
        end,
        audio_pts,
    }
}

/// Video frames decodebin decodes from `path` (every other stream decoded and dropped).
pub fn gst_decoded_frames(path: &Path) -> usize {
    init();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path.to_str().unwrap())
        .build()
        .unwrap();
    let dec = gst::ElementFactory::make("decodebin").build().unwrap();
    pipeline.add_many([&src, &dec]).unwrap();
    src.link(&dec).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let weak = pipeline.downgrade();
    let n = count.clone();
    dec.connect_pad_added(move |_, pad| {
        let pipeline = weak.upgrade().unwrap();
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .unwrap();
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        if caps
            .structure(0)
            .is_some_and(|s| s.name().starts_with("video/"))
        {
            let n = n.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                n.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    wait_eos(&pipeline, &format!("decoding {}", path.display()));
    pipeline.set_state(gst::State::Null).unwrap();
    count.load(Ordering::Relaxed)
}

/// The packets of the first audio stream as FFmpeg reads them: (size, MD5) in order, to
/// compare a copy with its source.
pub fn audio_packets(path: &Path) -> Vec<String> {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-c", "copy", "-f", "framemd5", "-"]);
    let out = watchdog::output(&mut c, "ffmpeg -f framemd5");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            format!("{} {}", f.get(4).unwrap_or(&""), f.get(5).unwrap_or(&""))
        })
        .collect()
}

/// The subtitles of `path`'s first subtitle stream as FFmpeg reads them, written as SubRip.
pub fn subtitles_srt(path: &Path) -> String {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:s:0", "-c:s", "srt", "-f", "srt", "-"]);
    let out = watchdog::output(&mut c, "ffmpeg -f srt");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each stream of `path` as FFmpeg sees it: "codec_type codec_tag_string timecode-tag".
pub fn streams(path: &Path) -> Vec<String> {
    let out = ffprobe(
        path,
        &[
            "-show_entries",
            "stream=codec_type,codec_name,codec_tag_string:stream_tags=timecode",
            "-of",
            "compact=nokey=1:p=0",
        ],
    );
    out.lines().map(|l| l.replace('|', " ")).collect()
}
