//! `--start`, `--duration` and `--to`: the part of the input to denoise, in the input's running
//! time (the times a player shows, edit lists applied). Frames outside it are dropped after
//! decoding and before the encoder (so the first frames decode from their keyframe, and the
//! encoder sees the first kept frame as the first frame of a stream that starts at 0: a
//! keyframe), the audio is cut to the same part, and the job ends at the range's end.
//!
//! [`Cut`] does it on a pad: it keeps the upstream segment, sends a segment that starts at 0
//! downstream instead, and restamps every kept buffer to its running time minus the start.
//! A job segment's cut ([`Cut::with_pts_offset`]) places buffers by PTS minus the plan's
//! offset instead: after `super::seek` skipped to the segment's keyframe, the segment starts
//! again at 0 (and a demuxer's stream time need not follow its PTS: Matroska past its audio's
//! end), but the container's timestamps stay, so the frames that arrive are placed exactly
//! as when everything is decoded from the first frame.
//!
//! Frames by index: frame k of a constant-rate input is shown at t0 + k/rate, t0 the first
//! frame's time (0, or e.g. 21 ms in ffmpeg's Matroska with AAC), so frames [a, b) are exactly
//! the times [t0 + (a - 1/2)/rate, t0 + (b - 1/2)/rate): half a frame of margin on each side
//! absorbs the containers' rounding.

use anyhow::{bail, Context};
use gst::prelude::*;

/// A time on the command line: seconds (`90`, `2.5`), `MM:SS[.frac]` or `HH:MM:SS[.frac]`.
pub fn parse_time(s: &str) -> anyhow::Result<gst::ClockTime> {
    let bad = || format!("'{s}' is not a time (use seconds like 90 or 2.5, MM:SS or HH:MM:SS)");
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        bail!(bad());
    }
    let (last, whole) = parts.split_last().expect("split gives one part at least");
    let secs: f64 = last
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .with_context(bad)?;
    if !whole.is_empty() && secs >= 60.0 {
        bail!(bad());
    }
    let mut total = secs;
    for (i, p) in whole.iter().rev().enumerate() {
        let v: u64 = p.parse().ok().with_context(bad)?;
        if i == 0 && whole.len() == 2 && v >= 60 {
            bail!(bad());
        }
        total += v as f64 * 60f64.powi(i as i32 + 1);
    }
    Ok(gst::ClockTime::from_nseconds((total * 1e9).round() as u64))
}

/// The part to denoise: `[start, end)` in the input's timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: gst::ClockTime,
    pub end: Option<gst::ClockTime>,
}

impl Range {
    /// From the three options (clap keeps --duration and --to apart); None for the whole file.
    pub fn new(
        start: Option<&str>,
        duration: Option<&str>,
        to: Option<&str>,
    ) -> anyhow::Result<Option<Range>> {
        if start.is_none() && duration.is_none() && to.is_none() {
            return Ok(None);
        }
        let t = |o: Option<&str>, flag: &str| {
            o.map(|s| parse_time(s).with_context(|| format!("--{flag}")))
                .transpose()
        };
        let start_t = t(start, "start")?.unwrap_or(gst::ClockTime::ZERO);
        let end = match (t(duration, "duration")?, t(to, "to")?) {
            (Some(d), _) if d.is_zero() => bail!("--duration must be more than 0"),
            (Some(d), _) => Some(start_t + d),
            (None, Some(e)) if e <= start_t => bail!(
                "--to {:.3} s is not after --start {:.3} s",
                e.seconds_f64(),
                start_t.seconds_f64()
            ),
            (None, e) => e,
        };
        Ok(Some(Range {
            start: start_t,
            end,
        }))
    }

    /// Where a buffer at running time `rt` falls.
    pub fn place(&self, rt: gst::ClockTime) -> Place {
        if rt < self.start {
            Place::Before
        } else if self.end.is_some_and(|e| rt >= e) {
            Place::After
        } else {
            Place::Keep(rt - self.start)
        }
    }

    /// The length of the range within an input of `duration`.
    pub fn length(&self, duration: gst::ClockTime) -> gst::ClockTime {
        self.end
            .map_or(duration, |e| e.min(duration))
            .saturating_sub(self.start)
    }
}

/// The running time of `pts` given PTS minus running time (`offset`, ns); None before 0.
pub fn running_of(pts: gst::ClockTime, offset: i64) -> Option<gst::ClockTime> {
    u64::try_from(pts.nseconds() as i64 - offset)
        .ok()
        .map(gst::ClockTime::from_nseconds)
}

/// Where a buffer falls against a [`Range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Before,
    /// In the range, at this time of the output.
    Keep(gst::ClockTime),
    After,
}

/// A [`Range`] applied to one stream: the upstream segment (to read buffers' running times),
/// or a fixed PTS offset.
pub struct Cut {
    range: Range,
    upstream: gst::FormattedSegment<gst::ClockTime>,
    /// PTS minus running time (a job's plan records it for the video).
    pts_offset: Option<i64>,
}

impl Cut {
    pub fn new(range: Range) -> Cut {
        Cut {
            range,
            upstream: gst::FormattedSegment::new(),
            pts_offset: None,
        }
    }

    /// Buffers placed by PTS minus `offset` (ns), whatever segments come (a seek's).
    pub fn with_pts_offset(range: Range, offset: i64) -> Cut {
        Cut {
            pts_offset: Some(offset),
            ..Cut::new(range)
        }
    }

    /// A segment from upstream: remembered; what goes downstream instead starts at 0.
    pub fn segment(&mut self, upstream: &gst::Segment) -> gst::Event {
        if let Some(s) = upstream.downcast_ref::<gst::ClockTime>() {
            self.upstream = s.clone();
        }
        let mut out = gst::FormattedSegment::<gst::ClockTime>::new();
        out.set_rate(self.upstream.rate());
        gst::event::Segment::new(&out)
    }

    /// Where a buffer at `pts` (upstream) falls; outside the upstream segment counts as before
    /// it (ahead of its start) or after it.
    pub fn place(&self, pts: gst::ClockTime) -> Place {
        if let Some(off) = self.pts_offset {
            return match running_of(pts, off) {
                Some(rt) => self.range.place(rt),
                None => Place::Before,
            };
        }
        match self.upstream.to_running_time(pts) {
            Some(rt) => self.range.place(rt),
            None if self.upstream.start().is_some_and(|s| pts < s) => Place::Before,
            None => Place::After,
        }
    }

    /// On `pad` (buffers and downstream events): drop the buffers outside the range (calling
    /// `before` for each one ahead of it, `at_end` at the first one after it), restamp the
    /// others, replace the segment. `keep` sees every kept buffer's output time and may still
    /// drop it (false).
    pub fn install(
        self,
        pad: &gst::Pad,
        before: impl Fn() + Send + Sync + 'static,
        at_end: impl Fn() + Send + Sync + 'static,
        keep: impl Fn(gst::ClockTime) -> bool + Send + Sync + 'static,
    ) {
        let cut = std::sync::Mutex::new(self);
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                let mut cut = cut.lock().unwrap();
                let place = match &info.data {
                    Some(gst::PadProbeData::Event(e)) => {
                        if let gst::EventView::Segment(s) = e.view() {
                            let replaced = cut.segment(s.segment());
                            info.data = Some(gst::PadProbeData::Event(replaced));
                        }
                        return gst::PadProbeReturn::Ok;
                    }
                    Some(gst::PadProbeData::Buffer(b)) => match b.pts() {
                        Some(pts) => cut.place(pts),
                        None => return gst::PadProbeReturn::Ok,
                    },
                    _ => return gst::PadProbeReturn::Ok,
                };
                let t = match place {
                    Place::Keep(t) if keep(t) => t,
                    p => {
                        match p {
                            Place::After => at_end(),
                            Place::Before => before(),
                            Place::Keep(_) => {}
                        }
                        // Taken and handled rather than Drop, which unrefs it twice on a sink pad.
                        drop(info.take_buffer());
                        return gst::PadProbeReturn::Handled;
                    }
                };
                if let Some(gst::PadProbeData::Buffer(b)) = &mut info.data {
                    let b = b.make_mut();
                    b.set_pts(t);
                    // Decoded frames carry no decoding time; audio packets decode when shown.
                    if b.dts().is_some() {
                        b.set_dts(t);
                    }
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_the_usual_forms() {
        let s = |v: f64| gst::ClockTime::from_nseconds((v * 1e9) as u64);
        assert_eq!(parse_time("90").unwrap(), s(90.0));
        assert_eq!(parse_time("2.5").unwrap(), s(2.5));
        assert_eq!(parse_time("1:30").unwrap(), s(90.0));
        assert_eq!(parse_time("01:02:03.5").unwrap(), s(3723.5));
        for bad in [
            "", "x", "1:", ":5", "-1", "1:60", "1:60:00", "1:2:3:4", "inf", "NaN",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_range_follows_the_options() {
        gst::init().unwrap();
        let s = gst::ClockTime::from_seconds;
        assert_eq!(Range::new(None, None, None).unwrap(), None);
        let r = Range::new(Some("1"), Some("2"), None).unwrap().unwrap();
        assert_eq!((r.start, r.end), (s(1), Some(s(3))));
        let r = Range::new(Some("1"), None, Some("4")).unwrap().unwrap();
        assert_eq!((r.start, r.end), (s(1), Some(s(4))));
        assert_eq!(r.length(s(10)), s(3));
        assert_eq!(r.length(s(2)), s(1));
        let r = Range::new(Some("5"), None, None).unwrap().unwrap();
        assert_eq!((r.start, r.end), (s(5), None));
        assert_eq!(r.place(s(4)), Place::Before);
        assert_eq!(r.place(s(5)), Place::Keep(s(0)));
        assert_eq!(r.place(s(100)), Place::Keep(s(95)));
        let r = Range::new(Some("1"), Some("1"), None).unwrap().unwrap();
        assert_eq!(r.place(s(2)), Place::After);
        assert!(Range::new(Some("5"), None, Some("4")).is_err());
        // Running time, not PTS: an MP4 with B-frames starts its segment (edit list) at 0.08 s.
        let mut cut = Cut::new(Range::new(Some("1"), Some("1"), None).unwrap().unwrap());
        let mut seg = gst::FormattedSegment::<gst::ClockTime>::new();
        seg.set_start(gst::ClockTime::from_mseconds(80));
        seg.set_time(gst::ClockTime::ZERO);
        let down = cut.segment(seg.upcast_ref());
        let gst::EventView::Segment(d) = down.view() else {
            panic!("not a segment")
        };
        assert_eq!(d.segment().start().value(), 0);
        let ms = gst::ClockTime::from_mseconds;
        assert_eq!(cut.place(ms(40)), Place::Before);
        assert_eq!(cut.place(ms(1040)), Place::Before);
        assert_eq!(cut.place(ms(1080)), Place::Keep(ms(0)));
        assert_eq!(cut.place(ms(2040)), Place::Keep(ms(960)));
        assert_eq!(cut.place(ms(2080)), Place::After);
        assert!(Range::new(None, Some("0"), None).is_err());
        // A job segment's cut: PTS minus the plan's offset (80 ms), whatever the segment
        // after a seek says (running time 0 again at the keyframe, and a stream time that
        // need not match: Matroska).
        let mut cut = Cut::with_pts_offset(
            Range::new(Some("1"), Some("1"), None).unwrap().unwrap(),
            80_000_000,
        );
        let mut after = gst::FormattedSegment::<gst::ClockTime>::new();
        after.set_start(ms(1040));
        after.set_time(ms(900));
        cut.segment(after.upcast_ref());
        assert_eq!(cut.place(ms(40)), Place::Before);
        assert_eq!(cut.place(ms(1040)), Place::Before);
        assert_eq!(cut.place(ms(1080)), Place::Keep(ms(0)));
        assert_eq!(cut.place(ms(2040)), Place::Keep(ms(960)));
        assert_eq!(cut.place(ms(2080)), Place::After);
        assert_eq!(running_of(ms(40), 80_000_000), None);
    }
}
