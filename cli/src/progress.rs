//! The progress display of long jobs: an indicatif bar when stderr is a terminal; otherwise
//! nothing is drawn and the job prints its own plain lines, at most every
//! [`Progress::plain_due`] interval.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    #[cfg_attr(not(feature = "gst"), allow(dead_code))] // plain lines: `video`
    last_line: Instant,
}

impl Progress {
    /// A bar drawn with `template` (indicatif's syntax) on a terminal; `len` when known.
    pub fn new(template: &str, len: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
            b.set_style(ProgressStyle::with_template(template).expect("valid template"));
            b
        });
        Progress {
            bar,
            last_line: Instant::now(),
        }
    }

    /// The bar, when there is one.
    pub fn bar(&self) -> Option<&ProgressBar> {
        self.bar.as_ref()
    }

    /// Without a bar: whether `every` has passed since the last plain line (then it counts as
    /// printed now). Never true before the first `every`, so short jobs stay quiet.
    #[cfg_attr(not(feature = "gst"), allow(dead_code))] // used by `video`
    pub fn plain_due(&mut self, every: Duration) -> bool {
        if self.bar.is_some() || self.last_line.elapsed() < every {
            return false;
        }
        self.last_line = Instant::now();
        true
    }

    /// A line above the bar.
    pub fn println(&self, s: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{s}")),
            None => eprintln!("{s}"),
        }
    }

    /// Remove the bar.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Speed and time left of a job that starts with a warm-up (the model's first batch: memory,
/// kernels): measured from the first progress seen with work done, so the warm-up does not
/// count (it made the first ETA of a 72 s job read 7 minutes).
#[cfg_attr(not(feature = "gst"), allow(dead_code))] // used by `video`
#[derive(Default)]
pub struct Speed {
    /// Units done and when, at the first progress with work done.
    first: Option<(u64, Instant)>,
}

#[cfg_attr(not(feature = "gst"), allow(dead_code))] // used by `video`
impl Speed {
    /// Units per second since the first progress with work done; None until more is done.
    pub fn rate(&mut self, done: u64, now: Instant) -> Option<f64> {
        let &mut (d0, t0) = self.first.get_or_insert((done, now));
        if d0 == 0 {
            self.first = None; // nothing done yet: still warming up
            return None;
        }
        let secs = now.duration_since(t0).as_secs_f64();
        (done > d0 && secs > 0.0).then(|| (done - d0) as f64 / secs)
    }

    /// Time left for `total` units at the rate since warm-up.
    pub fn eta(&mut self, done: u64, total: u64, now: Instant) -> Option<Duration> {
        let rate = self.rate(done, now)?;
        Some(Duration::from_secs_f64(
            total.saturating_sub(done) as f64 / rate,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_starts_after_the_warm_up() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut speed = Speed::default();
        assert_eq!(speed.rate(0, at(0)), None, "nothing done");
        assert_eq!(speed.rate(0, at(30)), None, "still warming up");
        // The first batch (4 frames) came out after a 60 s warm-up: no rate yet.
        assert_eq!(speed.rate(4, at(60)), None);
        // 4 frames per second since then, not 8 / 62 s.
        assert_eq!(speed.rate(12, at(62)), Some(4.0));
        assert_eq!(speed.eta(12, 100, at(62)), Some(Duration::from_secs(22)));
    }
}
