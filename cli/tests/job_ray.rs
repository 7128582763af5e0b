//! A segmented job on a real Ray cluster: one node on this machine (`ray start --head` from
//! the venv setup makes, /opt/ray-venv or $RAY_VENV; stopped when the test ends, even when
//! it fails), driven by `deploy/ray/run_job.py`: one task per segment with `max_retries`.
//! Segment 1's first attempt is SIGKILLed: Ray retries it, the job completes, and the joined
//! file equals one `clipdenoise video` pass frame for frame (the temporal stage on). Every child runs under the
//! watchdog.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::job::{assert_job_is_one_pass, sample};
use support::watchdog;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ray_bin(name: &str) -> PathBuf {
    let venv = std::env::var("RAY_VENV").unwrap_or_else(|_| "/opt/ray-venv".into());
    Path::new(&venv).join("bin").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The head node, stopped on drop (`ray stop` ends the processes it started).
struct Head {
    temp: PathBuf,
}

impl Head {
    fn start(port: u16) -> Head {
        // Short: Ray's unix sockets live under it (108-byte limit).
        let temp = PathBuf::from(format!("/tmp/ray-cd-{}", std::process::id()));
        let mut c = Command::new(ray_bin("ray"));
        c.args(["start", "--head", "--num-cpus=2", "--disable-usage-stats"])
            .args(["--include-dashboard=false", &format!("--port={port}")])
            .arg(format!("--temp-dir={}", temp.display()))
            // Ray's workers inherit the head's environment, not the driver's.
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .env("GST_REGISTRY", support::child::registry());
        let out = watchdog::output(&mut c, "ray start");
        assert!(
            out.status.success(),
            "ray start failed (setup installs Ray into /opt/ray-venv): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Head { temp }
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        let _ = watchdog::output(
            Command::new(ray_bin("ray")).args(["stop", "--force"]),
            "ray stop",
        );
        let _ = std::fs::remove_dir_all(&self.temp);
    }
}

#[test]
fn a_ray_job_retries_a_killed_segment_and_joins_to_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("clipdenoise-kill-1-once.sh");
    support::job::kill_once_wrapper(&wrapper, 1);
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let _head = Head::start(port);
    let (job, out) = (dir.path().join("job"), dir.path().join("joined.mkv"));
    // The temporal stage on (its default amount and the plan's lookahead): still one pass.
    let settings = ["--codec", "ffv1"];
    assert_job_is_one_pass(&sample(), &job, 3, &settings, &out, |job, out| {
        let mut c = Command::new(ray_bin("python"));
        c.arg(root().join("deploy/ray/run_job.py"))
            .args([
                s(job),
                s(out),
                "--max-retries",
                "2",
                "--clipdenoise",
                s(&wrapper),
            ])
            .arg(format!("--address=127.0.0.1:{port}"));
        let run = watchdog::output(&mut c, "deploy/ray/run_job.py");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "the Ray job failed: {err}");
        assert!(
            job.join("killed-once").exists(),
            "segment 1 was never killed"
        );
    });
}
