//! The Ctrl-C handler (SIGTERM and SIGHUP take the same path) of jobs that stop in steps:
//! the first press asks the job to finish cleanly, the second to abort, and the third exits
//! at once (for a job that does not stop), removing the file named by [`remove_on_exit`].
//! Jobs that stop at their next step (training) use [`install_stop_flag`] instead.
//!
//! Signals within [`SAME_PRESS`] of the last counted one are the same press: a wrapper such as
//! `timeout -s INT` signals the process and its group at once, which arrives twice.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;

static PRESSES: AtomicU8 = AtomicU8::new(0);
static REMOVE_ON_EXIT: OnceLock<PathBuf> = OnceLock::new();
static LAST_PRESS: Mutex<Option<Instant>> = Mutex::new(None);

/// Signals closer than this to the last counted one count as the same press (a person's
/// double press is slower; the two copies of one signal to process and group come within
/// microseconds).
const SAME_PRESS: Duration = Duration::from_millis(250);

/// Whether a signal at `now` is a new press after one counted at `last`.
fn new_press(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|l| now.saturating_duration_since(l) >= SAME_PRESS)
}

pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        let now = Instant::now();
        {
            let mut last = LAST_PRESS.lock().unwrap_or_else(|e| e.into_inner());
            if !new_press(*last, now) {
                return;
            }
            *last = Some(now);
        }
        if PRESSES.fetch_add(1, Ordering::SeqCst) >= 2 {
            if let Some(p) = REMOVE_ON_EXIT.get() {
                let _ = std::fs::remove_file(p);
            }
            eprintln!("\naborted: no output written");
            std::process::exit(130);
        }
    })
    .context("cannot install the Ctrl-C/SIGTERM handler")
}

/// How often Ctrl-C was pressed: 0, 1 (finish), 2 or more (abort).
pub fn presses() -> u8 {
    PRESSES.load(Ordering::SeqCst)
}

/// Act as if Ctrl-C had been pressed twice: abort.
pub fn abort() {
    PRESSES.store(2, Ordering::SeqCst);
}

/// The unfinished output the third Ctrl-C removes.
pub fn remove_on_exit(path: PathBuf) {
    let _ = REMOVE_ON_EXIT.set(path);
}

/// The handler of a job that stops at its next step: every press prints `notice` and sets
/// `stop`.
pub fn install_stop_flag(notice: &'static str, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    ctrlc::set_handler(move || {
        eprintln!("\n{notice}");
        stop.store(true, Ordering::Relaxed);
    })
    .context("cannot install the Ctrl-C handler")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_right_after_another_is_the_same_press() {
        let t = Instant::now();
        assert!(new_press(None, t));
        assert!(!new_press(Some(t), t + Duration::from_millis(1)));
        assert!(!new_press(Some(t), t + SAME_PRESS / 2));
        assert!(new_press(Some(t), t + SAME_PRESS));
        assert!(new_press(Some(t), t + Duration::from_secs(1)));
    }
}
