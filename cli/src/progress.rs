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
