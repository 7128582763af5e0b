//! Helpers of the element's integration tests that bound every wait: child processes
//! (`gst-launch-1.0`, `gst-inspect-1.0`, this test binary) and pipelines run under watchdogs
//! that kill or stop them and fail the test with a message, instead of hanging CI.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::prelude::*;

/// The bound of one child process: far above what any test's child needs, so only a hang
/// reaches it.
pub const CHILD_WATCHDOG: Duration = Duration::from_secs(300);

/// Run `cmd` to its end with stdout and stderr captured, killed after `limit`; a killed run
/// fails the test naming `what`, with what it wrote.
pub fn output_within(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} cannot start: {e}"));
    output_of(child, limit, what)
}

/// Collect a spawned child's stdout and stderr (both piped) and wait for it at most `limit`;
/// past that it is killed and the test fails naming `what`, with what it wrote.
pub fn output_of(mut child: Child, limit: Duration, what: &str) -> Output {
    fn read(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    }
    let (stdout, stderr) = (read(child.stdout.take()), read(child.stderr.take()));
    let status = wait_or_kill(&mut child, limit);
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!(
            "{what}: still running after {} s, killed; it wrote:\n{}{}",
            limit.as_secs(),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Wait at most `limit` for a spawned child; if it is still running, kill it and fail the test
/// naming `what`.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    wait_or_kill(child, limit)
        .unwrap_or_else(|| panic!("{what}: still running after {} s, killed", limit.as_secs()))
}

/// The child's exit status, or None after killing it once `limit` has passed.
fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    use wait_timeout::ChildExt;
    let status = child.wait_timeout(limit).expect("waiting for a child");
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// Run until EOS (Ok) or ERROR (Err with the message), at most `timeout`.
pub fn wait_eos(pipeline: &gst::Element, timeout: Duration) -> Result<(), String> {
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) else {
            return Err("timed out".into());
        };
        match msg.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(e) => {
                return Err(format!("{} ({:?})", e.error(), e.debug()));
            }
            _ => {}
        }
    }
}

/// The bound of one wait for the next sample of an appsink.
pub const SAMPLE_WATCHDOG: Duration = Duration::from_secs(60);

/// The appsink's next sample, None at EOS; no sample and no EOS within [`SAMPLE_WATCHDOG`]
/// fails the test.
pub fn next_sample(sink: &gst_app::AppSink) -> Option<gst::Sample> {
    let sample = sink.try_pull_sample(gst::ClockTime::from_nseconds(
        SAMPLE_WATCHDOG.as_nanos() as u64
    ));
    if sample.is_none() && !sink.is_eos() {
        panic!(
            "no sample and no EOS within {} s",
            SAMPLE_WATCHDOG.as_secs()
        );
    }
    sample
}
