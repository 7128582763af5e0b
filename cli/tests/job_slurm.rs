//! Segmented jobs on a real Slurm cluster: one node on this machine (`scripts/slurm-local.sh`,
//! started here and stopped when the test ends, even when it fails), Debian's Slurm 22.05.
//! - FFV1 with the temporal stage (its default), four segments as one `sbatch --wait
//!   --array=0-3`; segment 2 is SIGKILLed on its first attempt: `plan --status` names it,
//!   re-running the array redoes only it (the others exit at once, their done records
//!   untouched), and the joined file equals one `clipdenoise video` pass frame for frame and
//!   timestamp for timestamp.
//! - H.264 with audio through `deploy/slurm/submit.sh` (the array, then the join as a job
//!   with `--dependency=afterok`): the same frame count and timestamps as one pass, PSNR
//!   against the lossless pass within 0.05 dB of the single pass's, the audio copied.
//!
//! Every child runs under the watchdog.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::job::{assert_job_is_one_pass, frame_md5s, frames_rgb, ok, psnr, sample, streams};
use support::watchdog;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The one-node cluster, stopped on drop.
struct Cluster {
    dir: PathBuf,
    conf: String,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slurm");
        let mut c = Command::new(root().join("scripts/slurm-local.sh"));
        c.arg("start").env("SLURM_LOCAL_DIR", &dir);
        let out = watchdog::output(&mut c, "slurm-local.sh start");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the Slurm cluster did not start: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = text
            .lines()
            .find_map(|l| l.strip_prefix("export SLURM_CONF="))
            .expect("slurm-local.sh prints SLURM_CONF")
            .to_string();
        Cluster { dir, conf }
    }

    /// A Slurm command (sbatch, squeue, ...) on this cluster, the binary under test as
    /// $CLIPDENOISE for the deploy scripts.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf)
            .env("CLIPDENOISE", assert_cmd::cargo::cargo_bin("clipdenoise"))
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .env("GST_REGISTRY", support::child::registry());
        c
    }

    /// Wait (bounded by the watchdog's limit) until the queue is empty.
    fn drain(&self) {
        let deadline = Instant::now() + watchdog::hang();
        loop {
            let out = watchdog::output(self.cmd("squeue").args(["-h", "-o", "%i %T"]), "squeue");
            if String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Slurm jobs still queued after the limit"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut c = Command::new(root().join("scripts/slurm-local.sh"));
        c.arg("stop").env("SLURM_LOCAL_DIR", &self.dir);
        let _ = watchdog::output(&mut c, "slurm-local.sh stop");
    }
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn slurm_arrays_join_to_one_pass_and_redo_only_the_killed_segment() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let src = sample();

    // FFV1 with the temporal stage (its default), segment 2 killed on its first attempt.
    let job = dir.path().join("ffv1");
    let wrapper = dir.path().join("kill-2-once.sh");
    support::job::kill_once_wrapper(&wrapper, 2);
    let joined = dir.path().join("ffv1.mkv");
    assert_job_is_one_pass(
        &src,
        &job,
        4,
        &["--codec", "ffv1"],
        &joined,
        |job, joined| {
            let logs = job.join("logs");
            std::fs::create_dir_all(&logs).unwrap();
            let first = watchdog::output(
                cluster
                    .cmd("sbatch")
                    .args(["--wait", "--array=0-3", "-o"])
                    .arg(logs.join("first-%a.log"))
                    .args([s(&wrapper), "segment", s(job)]),
                "sbatch --wait (first attempt)",
            );
            assert!(
                !first.status.success(),
                "the array with a killed task must fail"
            );
            let status = ok(&["plan", "--status", s(job)]);
            assert!(status.contains("segment 2: missing"), "{status}");
            assert!(
                status.contains("3 of 4 segments done; missing: 2"),
                "{status}"
            );
            let done: Vec<PathBuf> = [0, 1, 3]
                .iter()
                .map(|i| job.join(format!("segments/seg-{i:05}.done.json")))
                .collect();
            let times: Vec<_> = done.iter().map(|p| mtime(p)).collect();
            let again = watchdog::output(
                cluster
                    .cmd("sbatch")
                    .args(["--wait", "--array=0-3", "-o"])
                    .arg(logs.join("again-%a.log"))
                    .arg(root().join("deploy/slurm/segment.sbatch"))
                    .arg(job),
                "sbatch --wait (again)",
            );
            assert!(
                again.status.success(),
                "{}",
                String::from_utf8_lossy(&again.stderr)
            );
            for ((i, p), t) in [0, 1, 3].iter().zip(&done).zip(&times) {
                let log = read(&logs.join(format!("again-{i}.log")));
                assert!(log.contains(&format!("segment {i}: already done")), "{log}");
                assert_eq!(mtime(p), *t);
            }
            let log2 = read(&logs.join("again-2.log"));
            assert!(log2.contains("segment 2: done"), "{log2}");
            ok(&["join", s(job), s(joined)]);
        },
    );

    // H.264 with audio, through the documented submit script (array, then the join).
    let with_audio = dir.path().join("in-audio.mp4");
    let mut c = Command::new("ffmpeg");
    c.args(["-v", "error", "-nostdin", "-i"])
        .arg(&src)
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=5",
        ])
        .args([
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "copy",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&with_audio);
    assert!(watchdog::output(&mut c, "ffmpeg (audio)").status.success());
    let job = dir.path().join("h264");
    ok(&[
        "plan",
        s(&with_audio),
        "-o",
        s(&job),
        "--segments",
        "4",
        "--preset",
        "fast",
        "--temporal",
        "0",
    ]);
    let out = dir.path().join("h264.mp4");
    let submit = watchdog::output(
        cluster
            .cmd(root().join("deploy/slurm/submit.sh"))
            .args([s(&job), s(&out), "4"]),
        "submit.sh",
    );
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    cluster.drain();
    assert!(
        out.exists(),
        "join log: {}",
        read(&job.join("logs/join.log"))
    );
    let single = dir.path().join("single-h264.mp4");
    ok(&[
        "video",
        s(&with_audio),
        s(&single),
        "--preset",
        "fast",
        "--precision",
        "fp32",
        "--temporal",
        "0",
    ]);
    let lossless = dir.path().join("single-lossless.mkv");
    ok(&[
        "video",
        s(&with_audio),
        s(&lossless),
        "--precision",
        "fp32",
        "--temporal",
        "0",
        "--codec",
        "ffv1",
        "--no-audio",
    ]);
    support::playable::assert_playable(&out, 75);
    let (a, b) = (frame_md5s(&out), frame_md5s(&single));
    let ts = |v: &[(String, String)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(ts(&a), ts(&b), "timestamps differ");
    let reference = frames_rgb(&lossless);
    let (pj, ps) = (
        psnr(&frames_rgb(&out), &reference),
        psnr(&frames_rgb(&single), &reference),
    );
    assert!(
        (pj - ps).abs() <= 0.05,
        "PSNR joined {pj:.3} dB, one pass {ps:.3} dB"
    );
    assert_eq!(streams(&out), ["h264", "aac"]);
}
