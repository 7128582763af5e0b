//! What the pad probes and stream callbacks (streaming threads) record for the main thread:
//! frame counts (and those decoded ahead of the range), stream ends, the video's rate and size, problems and notes, where EOS goes on
//! Ctrl-C and where the audio is cut then, what the copied audio streams left out, and the
//! frames for `--side-by-side`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;

#[derive(Default)]
pub struct Shared {
    /// Frames into the element and out of it (into the encoder).
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Frames decoded ahead of the range (dropped before the element): with a seek, those
    /// from the keyframe it landed on to the range's start; without, all before the start.
    pub frames_before: AtomicU64,
    /// Start (PTS) and end (PTS + duration) of the frames into the element; end of the latest
    /// audio buffer.
    pub video_start: Mutex<Option<gst::ClockTime>>,
    pub video_end: Mutex<Option<gst::ClockTime>>,
    pub audio_end: Mutex<Option<gst::ClockTime>>,
    /// Frame rate and size of the decoded video.
    pub fps: Mutex<Option<gst::Fraction>>,
    pub size: Mutex<Option<(i32, i32)>>,
    pub video_seen: AtomicBool,
    pub had_audio: AtomicBool,
    pub input: PathBuf,
    /// The first problem a callback found (the main loop reports it).
    pub error: Mutex<Option<String>>,
    /// Notes for the user (audio re-encoded, streams skipped).
    pub notes: Mutex<Vec<String>>,
    /// What happened to each audio stream, for the summary.
    pub audio: Mutex<Vec<String>>,
    /// The audio streams copied as they are, followed to say what a copy left out.
    pub copied: Mutex<Vec<std::sync::Arc<Copied>>>,
    /// The subtitle tracks kept, for the summary ("text copied").
    pub subtitles: Mutex<Vec<String>>,
    /// The input's tracks as its MP4/MOV box tree gives them (empty for other files).
    pub mp4: Vec<super::mp4_tracks::Track>,
    /// Where Ctrl-C sends EOS: the head of the video branch, then those of the audio ones.
    pub video_head: Mutex<Option<gst::Pad>>,
    pub heads: Mutex<Vec<gst::Pad>>,
    /// After Ctrl-C, the end of the last video frame: audio from there on is dropped, so
    /// that the audio ends with the video.
    pub audio_cut: Mutex<Option<gst::ClockTime>>,
    /// The streams are being ended early (Ctrl-C, or the end of the chosen range).
    pub stopping: AtomicBool,
    /// Before/after frames for --side-by-side.
    pub capture: Mutex<Capture>,
}

/// A copied audio stream: its place among the audio streams (of the summary, and of the
/// output file), its name ("AAC"), the input track it comes from (MP4: the stream id's track
/// number) and the start an MP4 edit list trimmed.
#[derive(Default)]
pub struct Copied {
    pub index: usize,
    pub label: Mutex<String>,
    pub track: Mutex<Option<u32>>,
    pub trimmed: Mutex<Option<gst::ClockTime>>,
}

#[derive(Default)]
pub struct Capture {
    /// PTS from which the "before" frame is taken (the middle of the clip), once known.
    pub target: Option<gst::ClockTime>,
    pub first_before: Option<gst::Sample>,
    pub first_after: Option<gst::Sample>,
    pub before: Option<gst::Sample>,
    pub after: Option<gst::Sample>,
}

impl Shared {
    pub fn fail(&self, msg: String) {
        let mut e = self.error.lock().unwrap();
        if e.is_none() {
            *e = Some(msg);
        }
    }
    pub fn note(&self, msg: String) {
        self.notes.lock().unwrap().push(msg);
    }
}

/// Widen `slot` to include `t`: the latest end (`max`) or the earliest start (`min`).
pub fn extend(slot: &Mutex<Option<gst::ClockTime>>, t: gst::ClockTime, max: bool) {
    let mut s = slot.lock().unwrap();
    *s = Some(match *s {
        None => t,
        Some(v) if max => v.max(t),
        Some(v) => v.min(t),
    });
}
