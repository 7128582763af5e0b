//! `clipdenoise video` end to end: the real binary on clips made here with GStreamer, read back
//! with GStreamer (frame count, timestamps, duration, audio).
#![cfg(feature = "gst")]

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;

mod support;
use support::child::registry;
use support::pipeline::{gst_run, h264_clip, init, wait_eos};
use support::playable::{assert_playable, audio_packets, streams, subtitles_srt};
use support::watchdog;

const TINY: &str = "../tests/fixtures/tiny-w8/official_state_dict.safetensors";

/// The binary under test as a plain `std` command (the interrupt tests spawn it and talk to
/// it); every run goes through `support::watchdog`.
fn clipdenoise() -> StdCommand {
    let mut c = StdCommand::new(assert_cmd::cargo::cargo_bin("clipdenoise"));
    c.env("OMP_WAIT_POLICY", "PASSIVE")
        .env("GST_REGISTRY", registry());
    c
}

/// `clipdenoise video INPUT OUTPUT --model TINY EXTRA...`, run to the end (under a watchdog).
/// When it succeeds, OUTPUT must play in FFmpeg and GStreamer with the frame count it reports.
fn denoise_video(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = clipdenoise();
    c.arg("video")
        .args([input, output])
        .args(["--model", TINY])
        .args(extra);
    let out = watchdog::output(&mut c, "clipdenoise video");
    if out.status.success() {
        assert_playable(output, reported_frames(&stderr_of(&out)));
    }
    out
}

/// The frame count the summary line gives: "wrote OUT: N frames" or "holds the first N frames".
fn reported_frames(err: &str) -> usize {
    let n = err.lines().find_map(|l| {
        let rest = l
            .strip_prefix("wrote ")
            .and_then(|r| r.split(": ").nth(1))
            .or_else(|| l.split("holds the first ").nth(1))?;
        rest.split(' ').next()?.parse().ok()
    });
    n.unwrap_or_else(|| panic!("no frame count in: {err}"))
}

/// A 2-second 160x96 30 fps H.264 clip with a 2-second stereo audio track, in `mux`.
fn make_clip(path: &Path, frames: u32, mux: &str, audio_enc: &str) {
    let audio_buffers = frames * 48000 / 30 / 960;
    gst_run(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=160,height=96,framerate=30/1 ! \
         x264enc speed-preset=ultrafast key-int-max=30 ! h264parse ! {mux} name=m ! filesink location={} \
         audiotestsrc num-buffers={audio_buffers} samplesperbuffer=960 ! audio/x-raw,rate=48000,channels=2 ! \
         audioconvert ! {audio_enc} ! m.",
        path.display()
    ));
}

#[derive(Debug, Default)]
struct Stream {
    caps: String,
    /// Width and height (video), from the last caps.
    size: Option<(i32, i32)>,
    /// Chroma format ("4:2:0") and luma bit depth of coded video, from the parser's caps.
    chroma_depth: Option<(String, u32)>,
    pts: Vec<gst::ClockTime>,
    end: Option<gst::ClockTime>,
}

type SharedStream = Arc<Mutex<Stream>>;

#[derive(Debug, Default)]
struct Probe {
    video: Vec<Stream>,
    audio: Vec<Stream>,
    duration: Option<gst::ClockTime>,
}

/// Demux (without decoding) and record every stream's buffer timestamps and the duration.
fn probe(path: &Path) -> Probe {
    init();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path.to_str().unwrap())
        .build()
        .unwrap();
    let parse = gst::ElementFactory::make("parsebin").build().unwrap();
    pipeline.add_many([&src, &parse]).unwrap();
    src.link(&parse).unwrap();
    let streams: Arc<Mutex<Vec<(String, SharedStream)>>> = Arc::default();
    let weak = pipeline.downgrade();
    let st = streams.clone();
    parse.connect_pad_added(move |_, pad| {
        let pipeline = weak.upgrade().unwrap();
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let name = caps.structure(0).unwrap().name().to_string();
        let stream = Arc::new(Mutex::new(Stream {
            caps: name.clone(),
            ..Default::default()
        }));
        st.lock().unwrap().push((name, stream.clone()));
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .unwrap();
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        let sinkpad = sink.static_pad("sink").unwrap();
        record_timestamps(&sinkpad, stream);
        pad.link(&sinkpad).unwrap();
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    wait_eos(&pipeline, &path.display().to_string());
    let duration = pipeline.query_duration::<gst::ClockTime>();
    pipeline.set_state(gst::State::Null).unwrap();
    let mut out = Probe {
        duration,
        ..Default::default()
    };
    for (name, s) in streams.lock().unwrap().drain(..) {
        let mut s = std::mem::take(&mut *s.lock().unwrap());
        s.pts.sort();
        if name.starts_with("video/") {
            out.video.push(s);
        } else if name.starts_with("audio/") {
            out.audio.push(s);
        }
    }
    out
}

/// Record the running time of every buffer reaching `sinkpad` into `stream`.
fn record_timestamps(sinkpad: &gst::Pad, stream: SharedStream) {
    // Timestamps as running time: what a player shows (a demuxer may put the first frame
    // at a PTS > 0 with a segment that starts there, e.g. MP4 with B-frames).
    let segment = Mutex::new(gst::FormattedSegment::<gst::ClockTime>::new());
    sinkpad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            match &info.data {
                Some(gst::PadProbeData::Event(e)) => match e.view() {
                    gst::EventView::Segment(s) => {
                        *segment.lock().unwrap() = s
                            .segment()
                            .downcast_ref::<gst::ClockTime>()
                            .unwrap()
                            .clone();
                    }
                    gst::EventView::Caps(c) => {
                        let st = c.caps().structure(0).unwrap();
                        let mut stream = stream.lock().unwrap();
                        if let (Ok(w), Ok(h)) = (st.get::<i32>("width"), st.get::<i32>("height")) {
                            stream.size = Some((w, h));
                        }
                        if let (Ok(c), Ok(d)) = (
                            st.get::<String>("chroma-format"),
                            st.get::<u32>("bit-depth-luma"),
                        ) {
                            stream.chroma_depth = Some((c, d));
                        }
                    }
                    _ => {}
                },
                Some(gst::PadProbeData::Buffer(b)) => {
                    let mut s = stream.lock().unwrap();
                    let running = b
                        .pts()
                        .and_then(|p| segment.lock().unwrap().to_running_time(p));
                    if let Some(p) = running {
                        s.pts.push(p);
                        let end = p + b.duration().unwrap_or(gst::ClockTime::ZERO);
                        s.end = Some(s.end.map_or(end, |e| e.max(end)));
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

fn close(a: gst::ClockTime, b: gst::ClockTime, tol_us: u64) -> bool {
    a.nseconds().abs_diff(b.nseconds()) <= tol_us * 1_000
}

/// Timestamp precision: MP4 stores them in its timescale (exact to rounding), Matroska in ms.
const MP4_US: u64 = 1;
const MKV_US: u64 = 1_000;
/// MPEG-TS: 90 kHz ticks.
const TS_US: u64 = 12;

/// Same frame count, the same timestamps (to the container's precision) and the same duration.
fn assert_same_video(input: &Probe, output: &Probe, tol_us: u64) {
    assert_eq!(input.video.len(), 1);
    assert_eq!(output.video.len(), 1, "one video stream out: {output:?}");
    let (i, o) = (&input.video[0], &output.video[0]);
    assert_eq!(i.pts.len(), o.pts.len(), "frame count");
    for (a, b) in i.pts.iter().zip(&o.pts) {
        assert!(close(*a, *b, tol_us), "timestamp {a} in, {b} out");
    }
    let (di, d_o) = (i.end.unwrap() - i.pts[0], o.end.unwrap() - o.pts[0]);
    assert!(close(di, d_o, tol_us), "video duration {di} in, {d_o} out");
    let (ci, co) = (input.duration.unwrap(), output.duration.unwrap());
    assert!(
        close(ci, co, 40_000),
        "container duration {ci} in, {co} out"
    );
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn two_second_mp4_keeps_frames_timestamps_duration_and_copies_audio_into_mp4_and_mkv() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    make_clip(&input, 60, "mp4mux", "avenc_aac");
    let pin = probe(&input);
    assert_eq!(pin.video[0].pts.len(), 60);
    assert!(
        close(
            pin.duration.unwrap(),
            gst::ClockTime::from_seconds(2),
            40_000
        ),
        "{:?}",
        pin.duration
    );

    for ext in ["mp4", "mkv"] {
        let output = dir.path().join(format!("out.{ext}"));
        let out = denoise_video(&input, &output, &["--batch-size", "2"]);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{ext}: {err}");
        assert!(
            err.contains("60 frames") && err.contains("AAC copied"),
            "{err}"
        );
        let pout = probe(&output);
        // Matroska stores milliseconds.
        assert_same_video(&pin, &pout, if ext == "mkv" { MKV_US } else { MP4_US });
        assert_eq!(pout.audio.len(), 1, "{ext}: audio survives");
        assert_eq!(pout.audio[0].caps, "audio/mpeg");
        assert_eq!(
            pout.audio[0].pts.len(),
            pin.audio[0].pts.len(),
            "{ext}: every audio packet, unchanged"
        );
        assert_eq!(
            audio_packets(&output),
            audio_packets(&input),
            "{ext}: the audio packets as FFmpeg reads them, bit for bit"
        );
        assert!(!err.contains("edit list"), "{err}");
        // No temporary file is left next to the output.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.iter().all(|n| !n.to_string_lossy().contains(".part.")),
            "{left:?}"
        );
    }
}

#[test]
fn audio_the_container_cannot_take_is_reencoded_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mkv");
    make_clip(&input, 45, "matroskamux", "vorbisenc");
    let pin = probe(&input);
    for (ext, codec, audio_caps) in [
        ("mp4", "h264", "audio/mpeg"),
        ("webm", "vp9", "audio/x-vorbis"),
    ] {
        let output = dir.path().join(format!("out.{ext}"));
        let out = denoise_video(&input, &output, &[]);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{ext}: {err}");
        assert!(err.contains(&format!("{codec} in .{ext}")), "{err}");
        if ext == "mp4" {
            assert!(
                err.contains(
                    "note: the audio (Vorbis) cannot go into .mp4 unchanged: re-encoding it to AAC"
                ),
                "{err}"
            );
        } else {
            assert!(err.contains("Vorbis copied"), "{err}");
        }
        let pout = probe(&output);
        assert_same_video(&pin, &pout, MKV_US);
        assert_eq!(pout.audio.len(), 1, "{ext}: audio survives");
        assert_eq!(pout.audio[0].caps, audio_caps);
        let (ai, ao) = (pin.audio[0].end.unwrap(), pout.audio[0].end.unwrap());
        assert!(
            close(ai, ao, 60_000),
            "{ext}: audio length {ai} in, {ao} out"
        );
    }
}

#[test]
fn h264_crf_is_not_capped_at_two_megabits() {
    // Snow at CRF 5 needs far more than x264enc's default 2 Mbit/s VBV cap (which pass=qual
    // applies unless `bitrate` is raised): 1 s of it must come out well above 2 Mbit.
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("snow.mkv"), dir.path().join("out.mkv"));
    gst_run(&format!(
        "videotestsrc num-buffers=30 pattern=snow ! video/x-raw,width=320,height=240,framerate=30/1 ! \
         x264enc pass=qual quantizer=0 bitrate=2048000 speed-preset=ultrafast ! h264parse ! \
         matroskamux ! filesink location={}",
        input.display()
    ));
    let out = denoise_video(&input, &output, &["--crf", "5", "--strength", "0"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let bytes = std::fs::metadata(&output).unwrap().len();
    assert!(
        bytes > 600_000,
        "1 s of snow at CRF 5 is {bytes} bytes: capped at about 2 Mbit/s?"
    );
}

/// A file cut a little short (the last 4 % of its bytes gone) ends without an error from
/// GStreamer: the job keeps what is there and says how many frames that is.
#[test]
fn a_file_cut_short_says_how_many_frames_came_out() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.mkv");
    make_clip(&full, 300, "matroskamux", "vorbisenc");
    let output = dir.path().join("out.mkv");
    let out = denoise_video(&full, &output, &[]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(!stderr_of(&out).contains("warning"), "{}", stderr_of(&out));
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.mkv");
    std::fs::write(&cut, &bytes[..bytes.len() * 96 / 100]).unwrap();
    let out = denoise_video(&cut, &output, &["--force"]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    let n = probe(&output).video[0].pts.len();
    assert!(n < 300, "{n} frames");
    assert!(
        err.contains(&format!(
            "warning: {}: cut short or damaged: salvaged {n} frames of the about 300 it announces",
            cut.display()
        )),
        "{err}"
    );
}

/// A faststart MP4 (index first) cut in half: what decodes is salvaged, as ffmpeg does, and
/// the count is given (it used to be refused as truncated).
#[test]
fn a_cut_faststart_mp4_is_salvaged_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.mp4");
    h264_clip(&full, 60, "ball", "mp4mux faststart=true");
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let output = dir.path().join("out.mkv");
    let out = denoise_video(&cut, &output, &[]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    let n = probe(&output).video[0].pts.len();
    assert!(n > 5 && n < 60, "{n} frames");
    assert!(
        err.contains(&format!("salvaged {n} frames of the about 60 it announces")),
        "{err}"
    );
    assert!(
        err.contains(&format!("wrote {}: {n} frames", output.display())),
        "{err}"
    );
}

/// 481x271: H.264 and H.265 cannot code 4:2:0 at odd sizes (x264 refused to start), so they
/// get 4:4:4 with a note; VP9 and FFV1 take the size as it is. Size, frames and timestamps kept.
#[test]
fn odd_frame_sizes_work_for_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("odd.mkv");
    gst_run(&format!(
        "videotestsrc num-buffers=12 pattern=ball ! video/x-raw,format=I420,width=481,height=271,framerate=30/1 ! \
         avenc_ffv1 ! matroskamux ! filesink location={}",
        input.display()
    ));
    let pin = probe(&input);
    for (name, codec, note) in [
        ("out.mp4", "h264", true),
        ("out265.mkv", "h265", true),
        ("out.webm", "vp9", false),
        ("outffv1.mkv", "ffv1", false),
    ] {
        let output = dir.path().join(name);
        let out = denoise_video(&input, &output, &["--codec", codec]);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{codec}: {err}");
        assert_eq!(
            err.contains("note: 481x271 is an odd size, which"),
            note,
            "{codec}: {err}"
        );
        let pout = probe(&output);
        assert_same_video(&pin, &pout, MKV_US);
        assert_eq!(pout.video[0].size, Some((481, 271)), "{codec}");
    }
}

/// --start/--duration and --start/--to: the frames of that part, their timestamps moved to
/// start at 0, and the audio cut to the same part.
#[test]
fn start_and_duration_cut_the_video_and_the_audio() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    make_clip(&input, 90, "mp4mux", "avenc_aac");
    let pin = probe(&input);
    let second = gst::ClockTime::SECOND;
    for (name, extra, first, count) in [
        ("a.mp4", ["--start", "1", "--duration", "1"], 30, 30),
        ("b.mkv", ["--start", "0:02", "--to", "2.5"], 60, 15),
    ] {
        let output = dir.path().join(name);
        let out = denoise_video(&input, &output, &extra);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{name}: {err}");
        assert!(err.contains(&format!(": {count} frames")), "{name}: {err}");
        let p = probe(&output);
        let v = &p.video[0];
        assert_eq!(v.pts.len(), count, "{name}");
        let shift = pin.video[0].pts[first];
        for (a, b) in pin.video[0].pts[first..].iter().zip(&v.pts) {
            assert!(close(*a - shift, *b, MKV_US), "{name}: {a} in, {b} out");
        }
        let a = &p.audio[0];
        let length = v.end.unwrap() - v.pts[0];
        assert!(
            close(a.pts[0], v.pts[0], 50_000),
            "{name}: audio starts at {}",
            a.pts[0]
        );
        assert!(
            close(a.end.unwrap(), v.pts[0] + length, 50_000),
            "{name}: audio ends at {}, video at {}",
            a.end.unwrap(),
            v.pts[0] + length
        );
        assert!(length < 2 * second, "{name}: {length}");
    }
    let out = denoise_video(&input, &dir.path().join("c.mp4"), &["--start", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("no video frames from --start 5.00 s on (the file lasts 3."),
        "{}",
        stderr_of(&out)
    );
}

/// A 3-second 160x96 25 fps clip made by ffmpeg as cameras and editors write them: x264 with
/// B-frames (in MP4 an edit list moves the first frame's PTS to 0.08 s) in `pix_fmt`, with
/// AAC audio.
fn ffmpeg_clip(path: &Path, pix_fmt: &str) {
    let mut c = StdCommand::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=160x96:rate=25")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "3", "-c:v", "libx264", "-pix_fmt", pix_fmt])
        .args(["-c:a", "aac", "-shortest"])
        .arg(path);
    let out = watchdog::output(&mut c, "ffmpeg (making a clip)");
    assert!(out.status.success(), "{}", stderr_of(&out));
}

/// Cuts are frame-accurate in the times players show: exactly the frames in [start, end),
/// starting with a keyframe at 0 (FFmpeg decoded none of them when the encoder saw frames
/// before the cut at negative times), the audio cut to the same part. MP4 and Matroska
/// from ffmpeg (B-frames, an edit list), 10-bit 4:4:4 too.
#[test]
fn cuts_hold_exactly_the_frames_of_the_part_and_play_in_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("in.mp4");
    ffmpeg_clip(&mp4, "yuv420p");
    let mkv = dir.path().join("in.mkv");
    ffmpeg_clip(&mkv, "yuv420p");
    let hi = dir.path().join("in444p10.mkv");
    ffmpeg_clip(&hi, "yuv444p10le");
    for (input, name, extra, count) in [
        (
            &mp4,
            "a.mp4",
            &["--start", "0.5", "--duration", "1"][..],
            25,
        ),
        (&mp4, "b.mp4", &["--start", "1"][..], 50),
        (&mp4, "c.mp4", &["--to", "1"][..], 25),
        (&mkv, "d.mkv", &["--start", "0.5", "--to", "1.5"][..], 25),
        (&mkv, "e.mp4", &["--duration", "1"][..], 25),
        (&hi, "f.mkv", &["--start", "0.5", "--duration", "1"][..], 25),
        (
            &mp4,
            "g.webm",
            &["--start", "0.5", "--duration", "1"][..],
            25,
        ),
        (
            &mp4,
            "h.mp4",
            &["--start", "0.5", "--duration", "1", "--codec", "h265"][..],
            25,
        ),
        (
            &mkv,
            "i.mkv",
            &["--start", "0.5", "--duration", "1", "--codec", "ffv1"][..],
            25,
        ),
    ] {
        let output = dir.path().join(name);
        // denoise_video checks that it plays with the count it reports.
        let out = denoise_video(input, &output, extra);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{name}: {err}");
        assert_eq!(reported_frames(&err), count, "{name} {extra:?}: {err}");
        let played = assert_playable(&output, count);
        let length = count as f64 / 25.0;
        // The part starts at 0 in the output and ends at its length (in.mkv's frames start at
        // 21 ms, where ffmpeg put them behind the AAC priming, and keep that offset).
        assert!(
            played.pts[0] < 0.025,
            "{name}: first frame at {}",
            played.pts[0]
        );
        assert!(
            (played.end - length).abs() < 0.025,
            "{name}: the video ends at {} s",
            played.end
        );
        if name != "f.mkv" && name != "g.webm" {
            // The AAC copied (.webm re-encodes it to Opus; f.mkv has none): frames of 1024
            // samples at 48 kHz, the cut's length in them, give or take one.
            let audio = played.audio_pts.len() as f64;
            assert!(
                (audio - length * 48000.0 / 1024.0).abs() <= 1.5,
                "{name}: {audio} audio packets for {length} s"
            );
        }
    }
}

/// Subtitle tracks are kept where the container holds them: Matroska with the same cues (times,
/// text, tags, characters the demuxer escapes), MP4 as timed text (without the tags), WebM
/// (WebVTT only) left out with a note in plain words (it was "a text/x-raw stream is left
/// out"); MP2 audio is MP2 (it was "MP3 copied").
#[test]
fn subtitle_tracks_are_kept_where_the_container_holds_them_and_mp2_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let srt = dir.path().join("s.srt");
    std::fs::write(
        &srt,
        "1\n00:00:00,000 --> 00:00:00,400\na & b \"q\" <3\n\n\
         2\n00:00:00,500 --> 00:00:00,800\nworld <b>bold</b>\n",
    )
    .unwrap();
    let input = dir.path().join("in.mkv");
    let mut c = StdCommand::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=160x96:rate=25")
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-i"])
        .arg(&srt)
        .args(["-map", "0", "-map", "1", "-map", "2", "-t", "1"])
        .args(["-c:v", "libx264", "-c:a", "mp2", "-c:s", "srt"])
        .arg(&input);
    let out = watchdog::output(&mut c, "ffmpeg (making a clip)");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let cues = subtitles_srt(&input);
    assert!(cues.contains("world <b>bold</b>"), "{cues}");

    let output = dir.path().join("out.mkv");
    let out = denoise_video(&input, &output, &[]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("left out"), "{err}");
    assert!(
        err.contains("audio: MP2 copied, subtitles: text copied;"),
        "{err}"
    );
    assert_eq!(reported_frames(&err), 25, "{err}");
    assert!(
        streams(&output)
            .iter()
            .any(|s| s.starts_with("subrip subtitle")),
        "{:?}",
        streams(&output)
    );
    assert_eq!(subtitles_srt(&output), cues, "the same cues");

    let output = dir.path().join("out.mp4");
    let out = denoise_video(&input, &output, &[]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("subtitles: text copied;"), "{err}");
    assert!(
        streams(&output)
            .iter()
            .any(|s| s.starts_with("mov_text subtitle")),
        "{:?}",
        streams(&output)
    );
    let got = subtitles_srt(&output);
    let starts: Vec<&str> = got.lines().filter(|l| l.contains(" --> ")).collect();
    assert_eq!(starts.len(), 2, "{got}");
    assert!(
        starts[0].starts_with("00:00:00,0") && starts[1].starts_with("00:00:00,5"),
        "{got}"
    );
    assert!(
        got.contains("a & b \"q\" <3") && got.contains("world bold"),
        "{got}"
    );

    // Cues 11 s apart into MP4 (it stalled: qtmux waited for the next cue while the video
    // filled the queues), and the last cue of a cut keeps its length (--start at frame 263,
    // which the output shows at 0).
    let srt = dir.path().join("far.srt");
    std::fs::write(
        &srt,
        "1\n00:00:00,000 --> 00:00:00,500\nfirst\n\n2\n00:00:11,000 --> 00:00:11,500\nlast\n",
    )
    .unwrap();
    let far = dir.path().join("far.mkv");
    let mut c = StdCommand::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=64x48:rate=25")
        .arg("-i")
        .arg(&srt)
        .args([
            "-map", "0", "-map", "1", "-t", "12", "-c:v", "libx264", "-c:s", "srt",
        ])
        .arg(&far);
    let out = watchdog::output(&mut c, "ffmpeg (making a clip)");
    assert!(out.status.success(), "{}", stderr_of(&out));
    for (name, extra, want) in [
        (
            "far.mp4",
            &[][..],
            &[
                "00:00:00,000 --> 00:00:00,500",
                "00:00:11,000 --> 00:00:11,500",
            ][..],
        ),
        (
            "cut.mp4",
            &["--start", "10.52", "--to", "11.8"][..],
            &["00:00:00,480 --> 00:00:00,980"][..],
        ),
    ] {
        let output = dir.path().join(name);
        let out = denoise_video(&far, &output, extra);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{err}");
        let got = subtitles_srt(&output);
        let times: Vec<&str> = got.lines().filter(|l| l.contains(" --> ")).collect();
        assert_eq!(times, want, "{name}: {got}");
    }

    let output = dir.path().join("out.webm");
    let out = denoise_video(&input, &output, &[]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: subtitle track (text) left out: .webm cannot hold text subtitles"),
        "{err}"
    );
    assert!(
        !streams(&output).iter().any(|s| s.contains("subtitle")),
        "{:?}",
        streams(&output)
    );
}

/// A timecode track (which GStreamer's MP4 reader does not expose) is kept into .mov (advanced
/// to --start) and named with its timecode in a note where the container cannot take it.
#[test]
fn timecode_tracks_are_kept_in_mov_or_noted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tc.mp4");
    let mut c = StdCommand::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=160x96:rate=25")
        .args(["-t", "1", "-c:v", "libx264", "-timecode", "01:00:00:00"])
        .arg(&input);
    let out = watchdog::output(&mut c, "ffmpeg (making a clip)");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        streams(&input).contains(&"unknown data tmcd 01:00:00:00".to_string()),
        "{:?}",
        streams(&input)
    );
    for (name, extra, timecode) in [
        ("all.mov", &[][..], "01:00:00:00"),
        ("part.mov", &["--start", "0.4"][..], "01:00:00:10"),
    ] {
        let output = dir.path().join(name);
        let out = denoise_video(&input, &output, extra);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("timecode"), "{err}");
        let s = streams(&output);
        assert!(
            s.contains(&format!("unknown data tmcd {timecode}")),
            "{name}: {s:?}"
        );
    }
    for name in ["out.mp4", "out.mkv"] {
        let output = dir.path().join(name);
        let out = denoise_video(&input, &output, &[]);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains(
                "note: timecode track (tmcd, 01:00:00:00) left out: GStreamer writes one into .mov only"
            ),
            "{err}"
        );
    }
}

/// AAC from ffmpeg (priming before 0 in MP4's edit list, codec delay in Matroska): copied
/// bit for bit from Matroska; from MP4, GStreamer's reader drops what the edit list trims, which
/// a note says with the priming samples and the packets left out (counted by FFmpeg here).
#[test]
fn copied_audio_is_bit_exact_or_the_note_says_what_was_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("in.mp4");
    ffmpeg_clip(&mp4, "yuv420p");
    let mkv = dir.path().join("in.mkv");
    let mut c = StdCommand::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-i"])
        .arg(&mp4)
        .args(["-c", "copy"])
        .arg(&mkv);
    assert!(watchdog::output(&mut c, "ffmpeg (remux)").status.success());
    let output = dir.path().join("a.mkv");
    let out = denoise_video(&mkv, &output, &[]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("audio: AAC copied;"), "{err}");
    assert!(!err.contains("edit list"), "{err}");
    assert_eq!(audio_packets(&output), audio_packets(&mkv), "bit for bit");
    let output = dir.path().join("b.mp4");
    let out = denoise_video(&mp4, &output, &[]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    let (copied, all) = (audio_packets(&output).len(), audio_packets(&mp4).len());
    assert!(copied < all, "{copied} of {all}");
    assert!(
        err.contains(&format!(
            "note: the AAC audio is copied as the MP4's edit list trims it, not bit for bit: \
             GStreamer's MP4 reader leaves out its first 1024 samples (21 ms at 48000 Hz, the \
             encoder's priming) and any packet the list cuts at the end: the output holds \
             {copied} of its {all} packets, {} left out",
            all - copied
        )),
        "{err}"
    );
    assert!(
        err.contains("audio: AAC copied (as trimmed by the MP4's edit list)"),
        "{err}"
    );
    assert_ne!(audio_packets(&output), audio_packets(&mp4));
}

/// The side data FFmpeg finds on the first video frame of `path`.
fn first_frame_side_data(path: &Path) -> String {
    let mut c = StdCommand::new("ffprobe");
    c.args([
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-read_intervals",
        "%+#1",
    ])
    .args([
        "-show_entries",
        "frame_side_data=side_data_type",
        "-of",
        "json",
    ])
    .arg(path);
    let out = watchdog::output(&mut c, "ffprobe (side data)");
    assert!(out.status.success(), "{}", stderr_of(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// HDR10 static metadata is kept with h265 (x265 writes it) and, with the other codecs, left
/// out with a note that says so (it was dropped without a word).
#[test]
fn hdr10_metadata_is_kept_with_h265_or_its_loss_noted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hdr.mkv");
    let mut c = StdCommand::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=160x96:rate=25")
        .args(["-t", "0.4", "-c:v", "libx265", "-pix_fmt", "yuv420p10le"])
        .arg("-x265-params")
        .arg(
            "log-level=error:hdr10=1:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:\
             master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):\
             max-cll=1000,400",
        )
        .arg(&input);
    let out = watchdog::output(&mut c, "ffmpeg (making an HDR10 clip)");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let hdr = ["Mastering display metadata", "Content light level metadata"];
    let side = first_frame_side_data(&input);
    assert!(hdr.iter().all(|h| side.contains(h)), "{side}");
    for (codec, name, kept) in [("h265", "a.mkv", true), ("h264", "b.mkv", false)] {
        let output = dir.path().join(name);
        let out = denoise_video(&input, &output, &["--codec", codec]);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{codec}: {err}");
        let side = first_frame_side_data(&output);
        assert_eq!(
            hdr.iter().all(|h| side.contains(h)),
            kept,
            "{codec}: {side}"
        );
        assert_eq!(
            err.contains(
                "note: the HDR10 metadata (mastering display, content light level) is left out"
            ),
            !kept,
            "{codec}: {err}"
        );
    }
}

/// The frame at `secs` of `path` as packed RGB, decoded by ffmpeg.
fn ffmpeg_frame_rgb(path: &Path, secs: &str) -> Vec<u8> {
    let mut c = StdCommand::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-ss", secs, "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]);
    let out = watchdog::output(&mut c, "ffmpeg (a frame)");
    assert!(out.status.success(), "{}", stderr_of(&out));
    out.stdout
}

/// With a part chosen, --side-by-side shows the middle of that part (testsrc draws the second
/// as a digit: the 5 of [4 s, 6 s), not another second).
#[test]
fn side_by_side_of_a_part_shows_the_middle_of_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("num.mp4");
    let mut c = StdCommand::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=25")
        .args(["-t", "8", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&input);
    assert!(watchdog::output(&mut c, "ffmpeg (making a clip)")
        .status
        .success());
    let png = dir.path().join("sbs.png");
    let out = denoise_video(
        &input,
        &dir.path().join("out.mp4"),
        &[
            "--start",
            "4",
            "--duration",
            "2",
            "--strength",
            "0",
            "--side-by-side",
            png.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let sbs = image::open(&png).unwrap().to_rgb8();
    // The digit's box, in the left (noisy) half.
    let digit = |px: &dyn Fn(u32, u32) -> [u8; 3]| -> Vec<u8> {
        (90..150)
            .flat_map(|y| (245..295).flat_map(move |x| px(x, y)))
            .collect()
    };
    let ours = digit(&|x, y| sbs.get_pixel(x, y).0);
    let diff = |secs: &str| {
        let f = ffmpeg_frame_rgb(&input, secs);
        let theirs = digit(&|x, y| {
            let i = ((y * 320 + x) * 3) as usize;
            [f[i], f[i + 1], f[i + 2]]
        });
        ours.iter()
            .zip(&theirs)
            .map(|(a, b)| a.abs_diff(*b) as f64)
            .sum::<f64>()
            / ours.len() as f64
    };
    let (five, four) = (diff("5.0"), diff("4.0"));
    assert!(
        five < 8.0 && four > 3.0 * five,
        "digit off by {five} from 5 s, {four} from 4 s"
    );
}

/// VP9 drained at the end: every frame is in the file, in every container that takes VP9
/// (it lost its last 10 or so, and .mp4/.mov failed to negotiate).
#[test]
fn vp9_keeps_every_frame_in_every_container_that_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    ffmpeg_clip(&input, "yuv420p");
    for name in ["a.webm", "b.mkv", "c.mp4", "d.mov"] {
        let output = dir.path().join(name);
        let out = denoise_video(&input, &output, &["--codec", "vp9", "--no-audio"]);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{name}: {err}");
        assert_eq!(reported_frames(&err), 75, "{name}: {err}");
    }
}

/// The first frame of `path` as 8-bit gray, decoded by ffmpeg (which turns rotated clips
/// upright by default).
fn ffmpeg_first_frame_gray(path: &Path) -> Vec<u8> {
    let mut c = StdCommand::new("ffmpeg");
    c.args(["-v", "error", "-i"]).arg(path).args([
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "gray",
        "-",
    ]);
    let out = watchdog::output(&mut c, "ffmpeg");
    assert!(out.status.success(), "{}", stderr_of(&out));
    out.stdout
}

/// A portrait phone clip: landscape frames and a rotation tag (written by ffmpeg, as phones
/// do). The output is upright (96x160), frame for frame what ffmpeg shows.
#[test]
fn a_rotated_clip_comes_out_upright() {
    let dir = tempfile::tempdir().unwrap();
    let landscape = dir.path().join("landscape.mp4");
    h264_clip(&landscape, 15, "gradient", "mp4mux");
    let input = dir.path().join("portrait.mp4");
    let mut c = StdCommand::new("ffmpeg");
    c.args(["-v", "error", "-i"])
        .arg(&landscape)
        .args(["-c", "copy", "-metadata:s:v:0", "rotate=90"])
        .arg(&input);
    assert!(watchdog::output(&mut c, "ffmpeg").status.success());
    let upright = ffmpeg_first_frame_gray(&input);
    assert_eq!(upright.len(), 96 * 160, "ffmpeg shows the clip upright");
    let output = dir.path().join("out.mkv");
    let out = denoise_video(&input, &output, &["--codec", "ffv1", "--strength", "0"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let p = probe(&output);
    assert_eq!(p.video[0].size, Some((96, 160)));
    assert_eq!(p.video[0].pts.len(), 15);
    let ours = ffmpeg_first_frame_gray(&output);
    let diff = |a: &[u8], b: &[u8]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y) as f64)
            .sum::<f64>()
            / a.len() as f64
    };
    let d = diff(&upright, &ours);
    assert!(d < 2.0, "mean difference {d} from ffmpeg's upright frame");
    // The gradient tells the two turns apart: upside down is far off.
    let flipped: Vec<u8> = ours.iter().rev().copied().collect();
    assert!(
        diff(&upright, &flipped) > 20.0,
        "the check cannot tell the turns apart"
    );
}

/// `--refine` reaches the element: the Wiener stage changes the frames of the same clip (same
/// count, both playable), and a bad spec is refused in one line before any file is written.
#[test]
fn refine_reaches_the_element_and_a_bad_spec_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    h264_clip(&input, 6, "snow", "mp4mux");
    let plain = dir.path().join("plain.mkv");
    let refined = dir.path().join("refined.mkv");
    let out = denoise_video(&input, &plain, &["--codec", "ffv1"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = denoise_video(&input, &refined, &["--codec", "ffv1", "--refine", "wiener"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(probe(&refined).video[0].pts.len(), 6);
    let (a, b) = (
        ffmpeg_first_frame_gray(&plain),
        ffmpeg_first_frame_gray(&refined),
    );
    assert_eq!(a.len(), b.len());
    let changed = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(
        changed > a.len() / 10,
        "--refine wiener changed only {changed} of {} pixels: it did not reach the element",
        a.len()
    );
    let bad = dir.path().join("bad.mkv");
    let out = denoise_video(
        &input,
        &bad,
        &["--codec", "ffv1", "--refine", "wiener:block=0"],
    );
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("refine"), "{err}");
    assert!(!bad.exists(), "a refused run wrote {}", bad.display());
}

/// A 12-frame 160x96 clip coded by `encoder` from raw `format`, in Matroska.
fn make_format_clip(path: &Path, format: &str, encoder: &str) {
    gst_run(&format!(
        "videotestsrc num-buffers=12 pattern=ball ! video/x-raw,format={format},width=160,height=96,framerate=30/1 ! \
         {encoder} ! matroskamux ! filesink location={}",
        path.display()
    ));
}

/// 10-bit HEVC stays 10-bit, 4:4:4 stays 4:4:4 (both were made 8-bit 4:2:0 without a word);
/// where the codec cannot keep them, one note says what was converted.
#[test]
fn bit_depth_and_chroma_are_kept_or_noted() {
    let dir = tempfile::tempdir().unwrap();
    let hevc10 = dir.path().join("hevc10.mkv");
    make_format_clip(
        &hevc10,
        "I420_10LE",
        "x265enc speed-preset=ultrafast ! h265parse",
    );
    let y444 = dir.path().join("y444.mkv");
    make_format_clip(&y444, "Y444", "x264enc speed-preset=ultrafast ! h264parse");
    let y42b = dir.path().join("y42b.mkv");
    make_format_clip(&y42b, "Y42B", "x264enc speed-preset=ultrafast ! h264parse");
    let i422_10 = dir.path().join("i422-10.mkv");
    make_format_clip(
        &i422_10,
        "I422_10LE",
        "x265enc speed-preset=ultrafast ! h265parse",
    );
    for (input, name, codec, want, note) in [
        (
            &hevc10,
            "a.mkv",
            "h265",
            ("4:2:0", 10),
            None::<&str>, // the element denoises 10-bit frames: nothing is converted
        ),
        (&y444, "b.mp4", "h264", ("4:4:4", 8), None),
        (&y42b, "c.mkv", "h265", ("4:2:2", 8), None),
        (
            &i422_10,
            "e.mkv",
            "h265",
            ("4:2:2", 10),
            Some("10-bit 4:2:2 video: written as 10-bit (I422_10LE), denoised at 8 bits"),
        ),
    ] {
        let output = dir.path().join(name);
        let out = denoise_video(input, &output, &["--codec", codec]);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{name}: {err}");
        assert_eq!(err.contains("note:"), note.is_some(), "{name}: {err}");
        if let Some(n) = note {
            assert!(err.contains(n), "{name}: {err}");
        }
        let p = probe(&output);
        assert_eq!(p.video[0].pts.len(), 12, "{name}");
        assert_eq!(
            p.video[0].chroma_depth,
            Some((want.0.to_string(), want.1)),
            "{name}"
        );
    }
    // VP9 here takes 4:2:2 at 10 bits only: 8-bit 4:2:2 is converted, with a note.
    let out = denoise_video(&y42b, &dir.path().join("d.webm"), &[]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: 4:2:2 video converted to 4:2:0: vp9 takes no 4:2:2 here"),
        "{err}"
    );
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    make_clip(&input, 10, "mp4mux", "avenc_aac");
    let output = dir.path().join("out.mkv");
    std::fs::write(&output, b"keep me").unwrap();
    let out = denoise_video(&input, &output, &[]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("already exists (use --force to overwrite)"));
    assert_eq!(std::fs::read(&output).unwrap(), b"keep me");
    let out = denoise_video(&input, &output, &["--force", "--no-audio"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let p = probe(&output);
    assert_eq!(p.video[0].pts.len(), 10);
    assert!(p.audio.is_empty(), "--no-audio");
}

#[test]
fn ctrl_c_finishes_a_playable_file_with_the_frames_done() {
    interrupt_mid_file("kill -INT $0");
}

/// `kill`, systemd and container runtimes stop a job with SIGTERM: same graceful path.
#[test]
fn sigterm_finishes_a_playable_file_with_the_frames_done() {
    interrupt_mid_file("kill -TERM $0");
}

/// Signals arriving together (`timeout -s INT` signals the process and its group at once) are
/// one Ctrl-C: the file is finished, not aborted. Two copies of one signal may merge in the
/// kernel; SIGINT and SIGTERM never do, so both are sent (the job aborted every time).
#[test]
fn signals_arriving_together_are_one_ctrl_c() {
    interrupt_mid_file("kill -INT $0; kill -INT $0; kill -TERM $0");
}

/// The MPEG-TS packet id of the video stream of [`make_ts_clip`]'s clips.
const TS_VIDEO_PID: u16 = 65;

/// A 3-second 160x96 30 fps H.264 + AAC clip in MPEG-TS (a container read as a stream).
fn make_ts_clip(path: &Path) -> u32 {
    let frames = 90;
    gst_run(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=160,height=96,framerate=30/1 ! \
         x264enc speed-preset=ultrafast key-int-max=30 ! h264parse ! m.sink_{TS_VIDEO_PID} \
         mpegtsmux name=m ! filesink location={} \
         audiotestsrc num-buffers=150 samplesperbuffer=960 ! audio/x-raw,rate=48000,channels=2 ! \
         audioconvert ! avenc_aac ! aacparse ! m.sink_66",
        path.display()
    ));
    frames
}

/// The first third of an MPEG-TS clip, then its second third without the video packets: the
/// audio runs a second ahead of the video, as it does when the denoiser is slower than the
/// demuxer.
fn audio_ahead(ts: &[u8]) -> Vec<u8> {
    let third = ts.len() / 3 / 188 * 188;
    let mut out = ts[..third].to_vec();
    for p in ts[third..2 * third].chunks_exact(188) {
        let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        if pid != TS_VIDEO_PID {
            out.extend_from_slice(p);
        }
    }
    out
}

/// A FIFO that gives `bytes` and then nothing until the returned sender is dropped: the job
/// reading it cannot end before the test says so, however fast it is.
fn held_open_fifo(dir: &Path, bytes: Vec<u8>) -> (PathBuf, std::sync::mpsc::Sender<()>) {
    let fifo = dir.join("live.ts");
    let made = StdCommand::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let path = fifo.clone();
    std::thread::spawn(move || {
        use std::io::Write;
        // Read and write: opening does not wait for the reader, and the reader sees no end of
        // file while this end is open.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let _ = f.write_all(&bytes);
        let _ = rx.recv(); // until the sender is dropped
    });
    (fifo, tx)
}

/// The lines a child writes to stderr, collected by a thread.
fn collect_lines(
    stderr: std::process::ChildStderr,
) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            l.lock().unwrap().push(line.unwrap());
        }
    });
    (lines, reader)
}

/// Wait until a line of `lines` satisfies `want`; fail when the child ends first (the
/// watchdog ends a hung one).
fn wait_for_line(
    child: &mut std::process::Child,
    lines: &Mutex<Vec<String>>,
    want: impl Fn(&str) -> bool,
    what: &str,
) {
    while !lines.lock().unwrap().iter().any(|l| want(l)) {
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(200)); // the last lines
            panic!(
                "ended ({status}) before {what}: {:?}",
                lines.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Interrupt a job whose input does not end (a FIFO the test holds open) once frames are
/// done, with the audio read a second ahead of the video; the output holds a prefix of the
/// input's frames, is playable, and its audio ends with its video.
/// `kill` is a shell line that signals the process `$0`.
fn interrupt_mid_file(kill: &str) {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.ts");
    let frames = make_ts_clip(&clip);
    let feed_bytes = audio_ahead(&std::fs::read(&clip).unwrap());
    let (input, feed) = held_open_fifo(dir.path(), feed_bytes);
    let output = dir.path().join("cut.mp4");
    let mut cmd = clipdenoise();
    cmd.args(["video", input.to_str().unwrap(), output.to_str().unwrap()])
        .args(["--model", TINY]);
    let (mut child, dog) = watchdog::spawn(
        &mut cmd,
        watchdog::hang(),
        "clipdenoise video (interrupted)",
    );
    let (lines, reader) = collect_lines(child.stderr.take().unwrap());
    // A progress line with frames done (printed every 5 s while the job waits for input).
    let done = |l: &str| {
        l.strip_prefix("frame ")
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    };
    wait_for_line(&mut child, &lines, done, "any frame was done");
    let kill = StdCommand::new("sh")
        .args(["-c", kill, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_for_line(
        &mut child,
        &lines,
        |l| l.starts_with("interrupted: finishing"),
        "the interruption was seen",
    );
    drop(feed); // the input ends: the reader is no longer blocked on it
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let err = lines.lock().unwrap().join("\n");
    dog.disarm(&err);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopped early:") && err.contains("is playable"),
        "{err}"
    );
    // Playable: it decodes in FFmpeg and GStreamer with the count reported, and the video is
    // a prefix of the input's.
    assert_playable(&output, reported_frames(&err));
    let p = probe(&output);
    let n = p.video[0].pts.len();
    assert!(n > 0 && n < frames as usize, "{n} frames");
    let pin = probe(&clip);
    for (a, b) in pin.video[0].pts.iter().zip(&p.video[0].pts) {
        assert!(close(*a, *b, TS_US), "{a} in, {b} out");
    }
    assert!(err.contains(&format!("the first {n} frames")), "{err}");
    // The audio (fed up to 2 s) ends with the last frame, within one AAC frame (21 ms).
    let (v, a) = (p.video[0].end.unwrap(), p.audio[0].end.unwrap());
    assert!(close(v, a, 25_000), "video ends at {v}, audio at {a}");
}

/// A job killed outright (SIGKILL) leaves its hidden temporary file; the next job writing into
/// that directory removes it (its pid is dead) and leaves a running job's file alone.
#[test]
fn a_later_run_removes_the_temporary_file_of_a_killed_one() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.ts");
    make_ts_clip(&clip);
    let bytes = std::fs::read(&clip).unwrap();
    let (input, _feed) = held_open_fifo(dir.path(), bytes[..bytes.len() / 3].to_vec());
    let out_dir = dir.path().join("out");
    let mut cmd = clipdenoise();
    cmd.arg("video")
        .args([&input, &out_dir.join("a.mp4")])
        .args(["--model", TINY]);
    let (mut child, dog) =
        watchdog::spawn(&mut cmd, watchdog::hang(), "clipdenoise video (killed)");
    let parts = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".part."))
                    .collect()
            })
            .unwrap_or_default()
    };
    while parts(&out_dir).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "ended before writing");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    dog.disarm("");
    let stale = parts(&out_dir);
    assert_eq!(stale.len(), 1, "{stale:?}");
    // A running job's file (this test's pid) must stay.
    let live = format!(".b.mp4.{}.part.mp4", std::process::id());
    std::fs::write(out_dir.join(&live), b"").unwrap();
    let out = denoise_video(&clip, &out_dir.join("c.mp4"), &[]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(parts(&out_dir), vec![live]);
}
