//! The Ctrl-C handler (SIGTERM and SIGHUP take the same path) of jobs that stop in steps:
//! the first press asks the job to finish cleanly, the second to abort, and the third exits
//! at once (for a job that does not stop), removing the file named by [`remove_on_exit`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

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
