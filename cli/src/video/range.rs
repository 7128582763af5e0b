//! `--start`, `--duration` and `--to`: the part of the input to denoise. Frames outside it are
//! dropped after decoding (so the first frames decode from their keyframe), the audio is cut
//! to match, timestamps start at 0 in the output, and the job ends at the range's end.

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

    /// Whether a buffer at `pts` comes before the range.
    pub fn before(&self, pts: gst::ClockTime) -> bool {
        pts < self.start
    }

    /// Whether a buffer at `pts` comes at or after the range's end.
    pub fn after(&self, pts: gst::ClockTime) -> bool {
        self.end.is_some_and(|e| pts >= e)
    }

    /// The length of the range within an input of `duration`.
    pub fn length(&self, duration: gst::ClockTime) -> gst::ClockTime {
        self.end
            .map_or(duration, |e| e.min(duration))
            .saturating_sub(self.start)
    }

    /// Shift what leaves `pad` so that the range starts at running time 0 in the output.
    pub fn shift(&self, pad: &gst::Pad) {
        pad.set_offset(-(self.start.nseconds() as i64));
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
        assert!(r.before(s(4)) && !r.before(s(5)) && !r.after(s(100)));
        assert!(Range::new(Some("5"), None, Some("4")).is_err());
        assert!(Range::new(None, Some("0"), None).is_err());
    }
}
