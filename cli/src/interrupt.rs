//! The Ctrl-C handler (SIGTERM and SIGHUP take the same path) of jobs that stop in steps:
//! the first press asks the job to finish cleanly, the second to abort, and the third exits
//! at once (for a job that does not stop), removing the file named by [`remove_on_exit`].
//! Jobs that stop at their next step (training) use [`install_stop_flag`] instead.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;

static PRESSES: AtomicU8 = AtomicU8::new(0);
static REMOVE_ON_EXIT: OnceLock<PathBuf> = OnceLock::new();

pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
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
