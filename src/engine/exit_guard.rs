//! The process never exits under a running libtorch call.
//!
//! When a process ends (`exit()`, the end of `main`, Python's interpreter shutdown), libtorch's
//! static destructors run; a model worker still inside a convolution then crashes the
//! process (SIGSEGV, or a libtorch panic). Every stretch of a worker that touches libtorch
//! (loading, a batch, dropping the model) runs under a [`Busy`] token. An `atexit` handler,
//! installed with the first worker (after libtorch was loaded, so it runs before libtorch's
//! destructors), marks the process as exiting, which interrupts running batches at their next
//! step ([`crate::inference::Interrupt`]), and waits for every token to be returned. From then
//! on no token is handed out: a worker leaves libtorch alone (it forgets its model instead of
//! dropping it).

use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

/// Longest the exit waits for running libtorch calls: they stop at their next step, so this is
/// only reached by a step that takes this long.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// The process's guard.
pub(crate) static GUARD: ExitGuard = ExitGuard::new();

/// Whether the process is exiting and how many tokens are out.
pub(crate) struct ExitGuard {
    state: Mutex<(bool, usize)>,
    idle: Condvar,
}

/// A stretch of libtorch work; the process does not exit while one is held.
#[must_use]
pub(crate) struct Busy<'a>(&'a ExitGuard);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.1 -= 1;
        if g.1 == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl ExitGuard {
    pub(crate) const fn new() -> Self {
        ExitGuard {
            state: Mutex::new((false, 0)),
            idle: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (bool, usize)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A token for libtorch work, or None once the process is exiting.
    pub(crate) fn enter(&self) -> Option<Busy<'_>> {
        let mut g = self.lock();
        if g.0 {
            return None;
        }
        g.1 += 1;
        Some(Busy(self))
    }

    /// Whether the process is exiting (running batches stop at their next step).
    pub(crate) fn exiting(&self) -> bool {
        self.lock().0
    }

    /// Refuse new tokens and wait up to `wait` for the held ones; true if none is left.
    pub(crate) fn begin_exit(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut g = self.lock();
        g.0 = true;
        while g.1 > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self
                .idle
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Install the exit handler (once per process).
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `on_exit` is an `extern "C" fn()` that never unwinds.
        if unsafe { atexit(on_exit) } != 0 {
            eprintln!(
                "clipdenoise: could not install the exit handler that waits for model workers"
            );
        }
    });
}

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn on_exit() {
    let _ = std::panic::catch_unwind(|| GUARD.begin_exit(EXIT_WAIT));
}

#[cfg(test)]
mod tests {
    use super::ExitGuard;
    use std::time::Duration;

    #[test]
    fn exit_waits_for_running_work_then_refuses_new_work() {
        static G: ExitGuard = ExitGuard::new();
        let busy = G.enter().expect("a token before the exit");
        let worker = std::thread::spawn(move || {
            // The work ends only once the exit has begun.
            while !G.exiting() {
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(busy);
        });
        assert!(G.begin_exit(Duration::from_secs(60)));
        worker.join().unwrap();
        assert!(G.enter().is_none());
        // A token held past the wait: the exit gives up instead of hanging.
        static H: ExitGuard = ExitGuard::new();
        let _held = H.enter().unwrap();
        assert!(!H.begin_exit(Duration::from_millis(10)));
    }
}
