//! The plugin file GStreamer loads (gst-plugin/loader) chooses libgomp's wait policy before
//! libtorch loads (issue 14: under a plain gst-launch-1.0, spinning OpenMP threads made the
//! element 0.65x as fast as the CLI): PASSIVE when the user set none, the user's otherwise.
//! Run in real gst-launch-1.0 children on the built plugin files.

mod common;

use std::time::Duration;

use common::{gst_launch, output_within, plugin_dir};

/// Longest a child may run: far above what one 64x48 frame needs on a loaded machine.
const WATCHDOG: Duration = Duration::from_secs(120);

/// The element's log line naming the policy it found, from one frame through gst-launch-1.0
/// with `OMP_WAIT_POLICY` as given (None: unset).
fn policy_line(policy: Option<&str>) -> String {
    let plugins = plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = gst_launch(
        dir.path(),
        plugins.path(),
        "videotestsrc num-buffers=1 ! video/x-raw,width=64,height=48 ! clipdenoise ! fakesink",
    );
    match policy {
        Some(p) => cmd.env("OMP_WAIT_POLICY", p),
        None => cmd.env_remove("OMP_WAIT_POLICY"),
    };
    let out = output_within(&mut cmd, WATCHDOG, "gst-launch-1.0 with clipdenoise");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "gst-launch-1.0 failed: {log}");
    log.lines()
        .find(|l| l.contains("OpenMP wait policy"))
        .unwrap_or_else(|| panic!("no policy line in the element's log: {log}"))
        .to_string()
}

#[test]
fn without_a_policy_the_loader_makes_openmp_wait_passively() {
    let line = policy_line(None);
    assert!(
        line.contains("OpenMP wait policy PASSIVE, model threads all"),
        "{line}"
    );
}

#[test]
fn a_policy_the_user_set_is_kept() {
    let line = policy_line(Some("ACTIVE"));
    assert!(line.contains("OpenMP wait policy ACTIVE"), "{line}");
    assert!(
        !line.contains("threads all"),
        "spinning threads on every core: {line}"
    );
}
