//! Watchdogs for tests that run a child process: a child still running after a bound is
//! killed and the test fails with a message naming it, so a hang fails CI instead of
//! stalling it. The bound only detects hangs; no test result depends on how fast work is.

use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any child of a test may run before it counts as hung: 600 s, or
/// `TEST_HANG_SECS` (to see a hang fail quickly).
pub fn hang() -> Duration {
    let secs = std::env::var("TEST_HANG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Armed,
    Disarmed,
    Fired,
}

/// Kills process `pid` (SIGKILL) unless disarmed within `limit`.
pub struct Watchdog {
    state: Arc<(Mutex<State>, Condvar)>,
    what: String,
    limit: Duration,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(pid: u32, limit: Duration, what: &str) -> Watchdog {
        let state = Arc::new((Mutex::new(State::Armed), Condvar::new()));
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            let (lock, cv) = &*st;
            let mut s = lock.lock().unwrap();
            while *s == State::Armed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    *s = State::Fired;
                    break;
                }
                s = cv.wait_timeout(s, left).unwrap().0;
            }
        });
        Watchdog {
            state,
            what: what.to_string(),
            limit,
            thread: Some(thread),
        }
    }

    /// Stop watching; fails the test when the child had to be killed. `log` (what the child
    /// printed) goes into the message.
    pub fn disarm(mut self, log: &str) {
        if self.stop() == State::Fired {
            panic!(
                "{}: still running after {:?}, killed by the watchdog; it printed:\n{log}",
                self.what, self.limit
            );
        }
    }

    /// Whether the child was killed.
    pub fn fired(&self) -> bool {
        *self.state.0.lock().unwrap() == State::Fired
    }

    fn stop(&mut self) -> State {
        let (lock, cv) = &*self.state;
        let before = {
            let mut s = lock.lock().unwrap();
            let before = *s;
            if before == State::Armed {
                *s = State::Disarmed;
            }
            before
        };
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        before
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawn `cmd` with stdout and stderr piped and a watchdog of `limit` on it.
pub fn spawn(cmd: &mut Command, limit: Duration, what: &str) -> (Child, Watchdog) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let dog = Watchdog::new(child.id(), limit, what);
    (child, dog)
}

/// `cmd.output()` under a watchdog of [`hang`]: a hung child fails the test with a message.
pub fn output(cmd: &mut Command, what: &str) -> Output {
    let (child, dog) = spawn(cmd.stdin(Stdio::null()), hang(), what);
    let out = child.wait_with_output().unwrap();
    dog.disarm(&String::from_utf8_lossy(&out.stderr));
    out
}
