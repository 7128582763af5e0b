//! Child processes under a watchdog: every run of the binary under test (or of another program)
//! is killed after a bound and fails its test with a message naming it, instead of hanging CI.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output};
use std::time::{Duration, Instant};

use assert_cmd::Command;

/// The bound of one child process: far above what any test's child needs (seconds on two
/// slow cores), so only a hang reaches it.
pub const WATCHDOG: Duration = Duration::from_secs(600);

/// The GStreamer registry of the tests (the binary's children and this process share it).
pub fn registry() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gst-registry.bin")
}

/// `clipdenoise`, the binary under test, with the environment every test gives it (OpenMP
/// threads that sleep instead of spinning, the tests' registry) and the watchdog.
pub fn clipdenoise() -> Command {
    let mut c = Command::cargo_bin("clipdenoise").unwrap();
    c.env("OMP_WAIT_POLICY", "PASSIVE")
        .env("GST_REGISTRY", registry())
        .timeout(WATCHDOG);
    c
}

/// Running a command to its end under a watchdog.
pub trait RunExt {
    /// Run to the end, killed after [`WATCHDOG`].
    fn run(&mut self) -> Output {
        self.run_within(WATCHDOG)
    }

    /// Run to the end, killed after `limit`; a killed run fails the test with the command and
    /// what it wrote to stderr.
    fn run_within(&mut self, limit: Duration) -> Output;
}

impl RunExt for Command {
    fn run_within(&mut self, limit: Duration) -> Output {
        let t0 = Instant::now();
        let out = self
            .timeout(limit)
            .output()
            .unwrap_or_else(|e| panic!("{self:?} cannot start: {e}"));
        if out.status.code().is_none() && t0.elapsed() >= limit {
            panic!(
                "{self:?} did not finish within {} s and was killed; stderr:\n{}",
                limit.as_secs(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }
}

/// Wait at most `limit` for a spawned child; if it is still running, kill it and fail the test
/// naming `what`.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    use wait_timeout::ChildExt;
    match child.wait_timeout(limit).expect("waiting for a child") {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {} s, killed", limit.as_secs());
        }
    }
}
