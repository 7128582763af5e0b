//! `plan.json`: what a segmented job does, made once by `clipdenoise plan` and read by every
//! worker. It holds the source's identity (path, size, duration, SHA-256 of the content),
//! every setting that shapes the output (model and its SHA-256, device, precision, strength,
//! temporal amount, codec, quality, preset) and the segments by frame index (display order):
//! frames `[start, end)` are written; denoising starts `warm-up` frames earlier at
//! `decode_start` (decoding at the `keyframe` at or before it) and runs to `stop` (the
//! lookahead), so that the temporal stage's output on `[start, end)` is what one pass gives.
//! Every index comes with the frame's time (ns; the `*_pts` fields): its running time, edit
//! lists applied, as players show it and as `video`'s ranges select frames.
//!
//! A plan file is untrusted input (it crosses machines, people edit it): [`JobPlan::parse`]
//! bounds its size, refuses unknown fields and other versions, and checks every index and
//! timestamp against the others before anything uses them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::JobError;

/// The plan format's version; another is refused.
pub const VERSION: u32 = 2;
/// Bounds on what a plan may hold.
pub const MAX_SEGMENTS: usize = 100_000;
pub const MAX_FRAMES: u64 = 1 << 32;
pub const MAX_PLAN_BYTES: u64 = 64 << 20;
const MAX_TEXT: usize = 4096;

pub const CODECS: [&str; 4] = ["h264", "h265", "vp9", "ffv1"];
pub const PRECISIONS: [&str; 3] = ["fp32", "bf16", "fp16"];

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobPlan {
    pub version: u32,
    pub source: SourceId,
    pub settings: Settings,
    /// Video frames in the source.
    pub frames: u64,
    pub segments: Vec<Segment>,
}

/// Which file the plan is for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceId {
    /// Absolute path at planning time (workers read it there: a shared file system).
    pub path: String,
    pub size: u64,
    /// The video's duration (end of the last frame), ns.
    pub duration_ns: u64,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
    /// The video's PTS minus its running time (the `*_pts` fields), ns: the demuxer's
    /// timestamps keep it across a seek, which restarts the running time (version 2).
    pub video_pts_offset_ns: i64,
}

/// Everything that shapes the output.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `default` (the built-in model) or a weights file.
    pub model: String,
    pub model_sha256: String,
    /// auto, cpu, cuda, cuda:N: resolved on each worker.
    pub device: String,
    pub precision: String,
    pub strength: f64,
    pub coarse_grain: bool,
    /// After the network: `off` or a `wiener` spec ([`crate::refine`]); plans written before
    /// it existed read as `off`.
    #[serde(default = "refine_off")]
    pub refine: String,
    pub batch_size: Option<u32>,
    pub max_pixels: Option<u64>,
    /// The temporal stage's amount (0: off).
    pub temporal: f64,
    pub codec: String,
    /// Quality level; None for a lossless codec.
    pub crf: Option<u32>,
    pub preset: String,
    /// Frames denoised before each segment's start; None: from the source's first frame
    /// (a temporal stage that never forgets).
    pub warmup: Option<u64>,
    /// The element's `lookahead` (the temporal stage's offline window, in frames); each
    /// segment also denoises this many frames after its end.
    pub lookahead: u64,
}

fn refine_off() -> String {
    "off".into()
}

impl Settings {
    /// The container of segment files: MP4 for H.264/H.265 (exact timestamps), Matroska for
    /// the others (FFV1 goes nowhere else).
    pub fn segment_ext(&self) -> &'static str {
        match self.codec.as_str() {
            "h264" | "h265" => "mp4",
            _ => "mkv",
        }
    }
}

/// One segment, by frame index in display order and by those frames' timestamps (ns).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub index: usize,
    /// Frames written: `[start, end)`.
    pub start: u64,
    pub end: u64,
    /// The keyframe at or before `decode_start`: where decoding can begin.
    pub keyframe: u64,
    /// First frame denoised (`start` minus the warm-up).
    pub decode_start: u64,
    /// Frames denoised: `[decode_start, stop)` (`stop` = `end` plus the lookahead).
    pub stop: u64,
    pub keyframe_pts: u64,
    pub decode_start_pts: u64,
    pub start_pts: u64,
    /// Timestamp of frame `end`; None for the last segment.
    pub end_pts: Option<u64>,
    /// Timestamp of frame `stop`; None when it runs to the source's end.
    pub stop_pts: Option<u64>,
}

impl Segment {
    pub fn frames(&self) -> u64 {
        self.end - self.start
    }
}

/// One frame of the source: its timestamp and whether decoding can start there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTime {
    pub pts_ns: u64,
    pub keyframe: bool,
}

/// How to cut the source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Split {
    /// This many segments of (nearly) equal frame counts.
    Count(usize),
    /// Segments of this many seconds (the last one shorter).
    Seconds(f64),
}

/// The segments for `frames` (display order, timestamps strictly increasing).
pub fn split(
    frames: &[FrameTime],
    how: Split,
    warmup: Option<u64>,
    lookahead: u64,
) -> Result<Vec<Segment>, JobError> {
    let n = frames.len() as u64;
    if n == 0 {
        return Err(JobError::Split("the source has no video frames".into()));
    }
    if n > MAX_FRAMES {
        return Err(JobError::Split(format!(
            "{n} frames is more than a plan takes"
        )));
    }
    if let Some(w) = frames.windows(2).find(|w| w[1].pts_ns <= w[0].pts_ns) {
        return Err(JobError::Split(format!(
            "two frames share or reverse a timestamp ({} ns then {} ns); the source's timestamps are broken",
            w[0].pts_ns, w[1].pts_ns
        )));
    }
    let starts: Vec<u64> = match how {
        Split::Count(c) => {
            if c == 0 || c > MAX_SEGMENTS {
                return Err(JobError::Split(format!(
                    "--segments {c}: choose 1 to {MAX_SEGMENTS}"
                )));
            }
            if c as u64 > n {
                return Err(JobError::Split(format!(
                    "{c} segments from {n} frames: choose at most {n}"
                )));
            }
            (0..c as u64).map(|i| i * n / c as u64).collect()
        }
        Split::Seconds(s) => {
            if !(s.is_finite() && s > 0.0) {
                return Err(JobError::Split(format!(
                    "--segment-seconds {s}: give a positive number"
                )));
            }
            let step = (s * 1e9).round().max(1.0) as u64;
            let t0 = frames[0].pts_ns;
            let mut v = vec![0u64];
            let mut next = step;
            for (i, f) in frames.iter().enumerate().skip(1) {
                if f.pts_ns - t0 >= next {
                    v.push(i as u64);
                    while f.pts_ns - t0 >= next {
                        next = next.saturating_add(step);
                    }
                }
            }
            if v.len() > MAX_SEGMENTS {
                return Err(JobError::Split(format!(
                    "--segment-seconds {s} makes {} segments, more than {MAX_SEGMENTS}",
                    v.len()
                )));
            }
            v
        }
    };
    let pts = |i: u64| frames[i as usize].pts_ns;
    let mut out = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(n);
        let decode_start = warmup.map_or(0, |w| start.saturating_sub(w));
        let keyframe = (0..=decode_start)
            .rev()
            .find(|&i| frames[i as usize].keyframe)
            .unwrap_or(0);
        let stop = end.saturating_add(lookahead).min(n);
        out.push(Segment {
            index: k,
            start,
            end,
            keyframe,
            decode_start,
            stop,
            keyframe_pts: pts(keyframe),
            decode_start_pts: pts(decode_start),
            start_pts: pts(start),
            end_pts: (end < n).then(|| pts(end)),
            stop_pts: (stop < n).then(|| pts(stop)),
        });
    }
    Ok(out)
}

impl JobPlan {
    /// A plan from untrusted bytes: parsed, then every field checked.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<JobPlan, JobError> {
        if bytes.len() as u64 > MAX_PLAN_BYTES {
            return Err(JobError::bad_plan(path, "larger than 64 MiB"));
        }
        // The version first, so that another version says so rather than "unknown field".
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| JobError::bad_plan(path, e.to_string()))?;
        match v.get("version").and_then(|v| v.as_u64()) {
            Some(x) if x == VERSION as u64 => {}
            Some(x) => {
                return Err(JobError::bad_plan(
                    path,
                    format!(
                        "version {x}; this clipdenoise reads version {VERSION}: make a new plan"
                    ),
                ))
            }
            None => return Err(JobError::bad_plan(path, "no version")),
        }
        let plan: JobPlan =
            serde_json::from_value(v).map_err(|e| JobError::bad_plan(path, e.to_string()))?;
        plan.check().map_err(|m| JobError::bad_plan(path, m))?;
        Ok(plan)
    }

    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<JobPlan, JobError> {
        let meta = std::fs::metadata(path).map_err(|e| JobError::io(path, e))?;
        if meta.len() > MAX_PLAN_BYTES {
            return Err(JobError::bad_plan(path, "larger than 64 MiB"));
        }
        let bytes = std::fs::read(path).map_err(|e| JobError::io(path, e))?;
        Self::parse(&bytes, path)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan serialises")
    }

    /// The plan's identity: the SHA-256 of its JSON. A done record names the plan it was made
    /// for, so a segment from an edited plan is never joined.
    pub fn id(&self) -> String {
        super::sha256_bytes(serde_json::to_string(self).expect("serialises").as_bytes())
    }

    /// Every invariant the workers rely on; the first one broken, in words.
    pub fn check(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!("version {}", self.version));
        }
        let s = &self.source;
        text(&s.path, "source.path")?;
        if s.path.is_empty() {
            return Err("source.path is empty".into());
        }
        hash(&s.sha256, "source.sha256")?;
        let t = &self.settings;
        text(&t.model, "settings.model")?;
        hash(&t.model_sha256, "settings.model_sha256")?;
        text(&t.device, "settings.device")?;
        if !PRECISIONS.contains(&t.precision.as_str()) {
            return Err(format!("settings.precision '{}'", short(&t.precision)));
        }
        if t.refine.len() > 200 || t.refine.parse::<crate::refine::Refine>().is_err() {
            return Err(format!("settings.refine '{}'", short(&t.refine)));
        }
        if !CODECS.contains(&t.codec.as_str()) {
            return Err(format!("settings.codec '{}'", short(&t.codec)));
        }
        for (v, name) in [(t.strength, "strength"), (t.temporal, "temporal")] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("settings.{name} {v} is outside 0..1"));
            }
        }
        if t.crf.is_some_and(|c| c > 63) {
            return Err("settings.crf above 63".into());
        }
        if (t.codec == "ffv1") != t.crf.is_none() {
            return Err("settings.crf must be given for lossy codecs only".into());
        }
        if t.batch_size.is_some_and(|b| !(1..=256).contains(&b)) {
            return Err("settings.batch_size outside 1-256".into());
        }
        if t.preset.is_empty()
            || t.preset.len() > 32
            || !t.preset.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err("settings.preset".into());
        }
        if t.warmup.is_some_and(|w| w > MAX_FRAMES) {
            return Err("settings.warmup too large".into());
        }
        if t.lookahead > u64::from(crate::temporal::MAX_LOOKAHEAD) {
            return Err(format!(
                "settings.lookahead {} is above {}",
                t.lookahead,
                crate::temporal::MAX_LOOKAHEAD
            ));
        }
        let n = self.frames;
        if n == 0 || n > MAX_FRAMES {
            return Err(format!("frames {n}"));
        }
        let count = self.segments.len();
        if count == 0 || count > MAX_SEGMENTS || count as u64 > n {
            return Err(format!("{count} segments for {n} frames"));
        }
        let mut expect_start = 0u64;
        let mut expect_pts: Option<u64> = None;
        for (i, g) in self.segments.iter().enumerate() {
            let bad = |m: &str| Err(format!("segment {i}: {m}"));
            if g.index != i {
                return bad("index out of order");
            }
            if g.start != expect_start {
                return bad("does not start where the previous one ends");
            }
            if !(g.keyframe <= g.decode_start && g.decode_start <= g.start && g.start < g.end) {
                return bad("needs keyframe <= decode_start <= start < end");
            }
            if !(g.end <= g.stop && g.stop <= n) {
                return bad("needs end <= stop <= frames");
            }
            let want_wu = t.warmup.map_or(0, |w| g.start.saturating_sub(w));
            if g.decode_start != want_wu {
                return bad("decode_start is not start minus the warm-up");
            }
            if g.stop != g.end.saturating_add(t.lookahead).min(n) {
                return bad("stop is not end plus the lookahead");
            }
            if !(g.keyframe_pts <= g.decode_start_pts && g.decode_start_pts <= g.start_pts) {
                return bad("timestamps out of order");
            }
            if expect_pts.is_some_and(|p| p != g.start_pts) {
                return bad("start_pts is not the previous end_pts");
            }
            let last = i + 1 == count;
            match (g.end_pts, last) {
                (None, true) => {
                    if g.end != n {
                        return bad("the last segment must end at the last frame");
                    }
                }
                (Some(e), false) if e > g.start_pts => {}
                _ => return bad("end_pts must be set and after start_pts (None for the last)"),
            }
            match (g.stop_pts, g.stop == n) {
                (None, true) => {}
                (Some(p), false) if g.end_pts.is_some_and(|e| p >= e) => {}
                _ => return bad("stop_pts must be set, at or after end_pts (None at the end)"),
            }
            expect_start = g.end;
            expect_pts = g.end_pts;
        }
        if expect_start != n {
            return Err("the segments do not cover every frame".into());
        }
        Ok(())
    }
}

fn text(s: &str, name: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT || s.chars().any(|c| c.is_control()) {
        return Err(format!("{name}: too long or has control characters"));
    }
    Ok(())
}

fn hash(s: &str, name: &str) -> Result<(), String> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("{name} is not a SHA-256 in hex"));
    }
    Ok(())
}

fn short(s: &str) -> String {
    s.chars().take(40).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 25 fps, a keyframe every `gop` frames.
    pub fn frames(n: u64, gop: u64) -> Vec<FrameTime> {
        (0..n)
            .map(|i| FrameTime {
                pts_ns: i * 40_000_000,
                keyframe: i % gop == 0,
            })
            .collect()
    }

    pub fn plan(n: u64, segs: usize, warmup: Option<u64>, lookahead: u64) -> JobPlan {
        JobPlan {
            version: VERSION,
            source: SourceId {
                path: "/data/in.mp4".into(),
                size: 1000,
                duration_ns: n * 40_000_000,
                sha256: "a".repeat(64),
                video_pts_offset_ns: 80_000_000,
            },
            settings: Settings {
                model: "default".into(),
                model_sha256: "b".repeat(64),
                device: "auto".into(),
                precision: "fp32".into(),
                strength: 1.0,
                coarse_grain: false,
                refine: "off".into(),
                batch_size: None,
                max_pixels: None,
                temporal: 0.5,
                codec: "h264".into(),
                crf: Some(20),
                preset: "medium".into(),
                warmup,
                lookahead,
            },
            frames: n,
            segments: split(&frames(n, 12), Split::Count(segs), warmup, lookahead).unwrap(),
        }
    }

    #[test]
    fn segments_cover_every_frame_with_warmup_from_a_keyframe() {
        let s = split(&frames(100, 12), Split::Count(4), Some(10), 3).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s.iter().map(|g| (g.start, g.end)).collect::<Vec<_>>(),
            [(0, 25), (25, 50), (50, 75), (75, 100)]
        );
        assert_eq!((s[1].decode_start, s[1].keyframe, s[1].stop), (15, 12, 53));
        assert_eq!((s[0].decode_start, s[0].keyframe), (0, 0));
        assert_eq!((s[3].stop, s[3].stop_pts, s[3].end_pts), (100, None, None));
        assert_eq!(s[2].start_pts, 50 * 40_000_000);
        // No warm-up limit: every segment is denoised from the first frame.
        let s = split(&frames(100, 12), Split::Count(4), None, 0).unwrap();
        assert!(s.iter().all(|g| g.decode_start == 0 && g.keyframe == 0));
    }

    #[test]
    fn seconds_cut_at_the_first_frame_past_each_boundary() {
        let s = split(&frames(100, 12), Split::Seconds(1.0), Some(0), 0).unwrap();
        assert_eq!(
            s.iter().map(|g| g.start).collect::<Vec<_>>(),
            [0, 25, 50, 75]
        );
        assert!(split(&frames(100, 12), Split::Seconds(0.0), Some(0), 0).is_err());
        assert!(split(&frames(100, 12), Split::Seconds(f64::NAN), Some(0), 0).is_err());
    }

    #[test]
    fn impossible_splits_are_refused() {
        assert!(split(&[], Split::Count(1), Some(0), 0).is_err());
        assert!(split(&frames(3, 1), Split::Count(4), Some(0), 0).is_err());
        assert!(split(&frames(3, 1), Split::Count(0), Some(0), 0).is_err());
        let mut f = frames(5, 1);
        f[3].pts_ns = f[2].pts_ns;
        assert!(split(&f, Split::Count(2), Some(0), 0).is_err());
    }

    #[test]
    fn refine_is_checked_and_older_plans_read_it_as_off() {
        let mut p = plan(100, 4, Some(10), 2);
        p.settings.refine = "wiener:sigma=flat,scale=2,dc=input".into();
        let back = JobPlan::parse(p.to_json().as_bytes(), Path::new("plan.json")).unwrap();
        assert_eq!(back.settings.refine, p.settings.refine);
        let without = p
            .to_json()
            .replace("\"refine\": \"wiener:sigma=flat,scale=2,dc=input\",", "");
        assert!(!without.contains("refine"), "{without}");
        let old = JobPlan::parse(without.as_bytes(), Path::new("plan.json")).unwrap();
        assert_eq!(old.settings.refine, "off");
        p.settings.refine = "wiener:block=0".into();
        let err = JobPlan::parse(p.to_json().as_bytes(), Path::new("plan.json")).unwrap_err();
        assert!(err.to_string().contains("settings.refine"), "{err}");
    }

    #[test]
    fn a_plan_round_trips_and_edits_are_caught() {
        let p = plan(100, 4, Some(10), 2);
        let json = p.to_json();
        let back = JobPlan::parse(json.as_bytes(), Path::new("plan.json")).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.id(), p.id());
        let mut q = p.clone();
        q.settings.crf = Some(21);
        assert_ne!(q.id(), p.id());
        for edit in [
            |p: &mut JobPlan| p.segments[1].start += 1,
            |p: &mut JobPlan| p.segments[2].decode_start = 0,
            |p: &mut JobPlan| p.segments[3].end = 99,
            |p: &mut JobPlan| p.segments.truncate(3),
            |p: &mut JobPlan| p.settings.temporal = 1.5,
            |p: &mut JobPlan| p.settings.codec = "mpeg2".into(),
            |p: &mut JobPlan| p.source.sha256 = "xyz".into(),
            |p: &mut JobPlan| p.segments[0].end_pts = None,
            |p: &mut JobPlan| p.segments[1].index = 7,
        ] {
            let mut q = p.clone();
            edit(&mut q);
            let err = JobPlan::parse(q.to_json().as_bytes(), Path::new("plan.json"));
            assert!(err.is_err(), "{q:?}");
        }
        // Version 1 (no PTS offset) and unknown later ones are refused, saying so.
        for v in [1, 3] {
            let other = json.replacen("\"version\": 2", &format!("\"version\": {v}"), 1);
            let e = JobPlan::parse(other.as_bytes(), Path::new("p")).unwrap_err();
            assert!(e.to_string().contains(&format!("version {v}")), "{e}");
        }
    }
}
