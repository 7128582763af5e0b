//! `clipdenoise plan`, `segment` and `join` on one machine: the joined file equals one
//! `clipdenoise video` pass frame for frame (FFV1) on both sides of every seam, with the
//! temporal stage (its warm-up and lookahead) and without; a done segment exits at once; bad input (a missing or corrupted
//! segment, a changed source, a second worker on a segment, a broken plan) gets one line and
//! leaves nothing half-written. Every child runs under the watchdog.

mod support;

use std::path::Path;

use support::child::RunExt;
use support::job::{assert_job_is_one_pass, fails, ok, sample};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// At temporal 0.3 the temporal stage needs `warmup_frames(0.3)` (31) warm-up frames: segment
/// 2 starts denoising that many frames early, from a frame that is not a restart of the
/// filter's recursions (19), segment 1 from the first frame, and both denoise the default
/// lookahead's frames past their end, so the seams are real. The joined file is one pass,
/// bit for bit.
#[test]
fn a_joined_job_with_the_temporal_stage_is_one_pass_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job");
    let joined = dir.path().join("joined.mkv");
    let settings = ["--codec", "ffv1", "--temporal", "0.3"];
    let warmup = clipdenoise::temporal::warmup_frames(0.3) as u64;
    let seams = assert_job_is_one_pass(&sample(), &job, 3, &settings, &joined, |job, joined| {
        let plan: serde_json::Value =
            serde_json::from_slice(&std::fs::read(job.join("plan.json")).unwrap()).unwrap();
        assert!(warmup > 0);
        assert_eq!(plan["settings"]["warmup"], warmup);
        assert_eq!(plan["segments"][1]["decode_start"], 0);
        assert_eq!(plan["segments"][2]["decode_start"], 50 - warmup);
        assert_eq!(plan["settings"]["lookahead"], 2);
        // `--precision auto`, the default, is fixed to one precision for every machine.
        assert_eq!(plan["settings"]["precision"], "fp32");
        assert_eq!(plan["segments"][1]["stop"], 52);
        // Out of order, as a scheduler may run them.
        for i in ["2", "0", "1"] {
            ok(&["segment", s(job), i]);
        }
        let done = job.join("segments/seg-00001.done.json");
        let before = std::fs::metadata(&done).unwrap().modified().unwrap();
        let out = support::child::clipdenoise()
            .args(["segment", s(job)])
            .env("SLURM_ARRAY_TASK_ID", "1")
            .run();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("segment 1: already done"));
        assert_eq!(
            std::fs::metadata(&done).unwrap().modified().unwrap(),
            before
        );
        let status = ok(&["plan", "--status", s(job)]);
        assert!(status.contains("3 of 3 segments done"), "{status}");
        ok(&["join", s(job), s(joined)]);
    });
    assert_eq!(seams, [(0, 25), (25, 50), (50, 75)]);
}

/// Without the temporal stage a segment needs no warm-up: the joined file is one pass, bit
/// for bit, on both sides of every seam.
#[test]
fn without_the_temporal_stage_a_joined_job_is_one_pass_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ["--codec", "ffv1", "--temporal", "0"];
    let (job, joined) = (dir.path().join("job"), dir.path().join("joined.mkv"));
    assert_job_is_one_pass(&sample(), &job, 3, &settings, &joined, |job, joined| {
        let plan: serde_json::Value =
            serde_json::from_slice(&std::fs::read(job.join("plan.json")).unwrap()).unwrap();
        assert_eq!(plan["segments"][2]["decode_start"], 50);
        for i in ["0", "1", "2"] {
            ok(&["segment", s(job), i]);
        }
        ok(&["join", s(job), s(joined)]);
    });
}

/// A segment decodes from the keyframe at or before its warm-up, not from the source's
/// first frame: `segment` says where decoding began. From an MP4 with B-frames and a keyframe
/// every 12 frames, that is the plan's keyframe (the demuxer seeks to the keyframes `plan`
/// listed), or frame 0 without a seek where the warm-up starts there; from such a Matroska
/// file the start of the keyframe's cluster, a few frames earlier at most;
/// from a Matroska file without its index the demuxer's seek lands on an earlier keyframe,
/// and the extra frames are dropped before the denoiser. Every time the joined file is one
/// pass bit for bit, and the MP4's audio (longer than its video) is copied once, cut where
/// the video ends, without the AAC priming its edit list trims (as the one pass has it).
#[test]
fn segments_decode_from_their_keyframe_and_join_into_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    for (name, indexed, segments, temporal, audio) in [
        ("in.mp4", true, 3, "0.3", Some(3.0)),
        ("in.mkv", true, 5, "0", None),
        ("noindex.mkv", false, 4, "0.3", None),
    ] {
        let src = dir.path().join(name);
        support::job::keyframed_clip(&src, indexed, audio);
        // Distinct stems: the one pass is written next to the job as STEM.single.mkv.
        let stem = name.replace('.', "-");
        let job = dir.path().join(format!("job-{stem}"));
        let joined = dir.path().join(format!("joined-{stem}.mkv"));
        let settings = ["--codec", "ffv1", "--temporal", temporal];
        let mut seeks = 0;
        assert_job_is_one_pass(&src, &job, segments, &settings, &joined, |job, joined| {
            let plan: serde_json::Value =
                serde_json::from_slice(&std::fs::read(job.join("plan.json")).unwrap()).unwrap();
            for (i, seg) in plan["segments"].as_array().unwrap().iter().enumerate() {
                let (ok, err) = support::job::cli(&["segment", s(job), &i.to_string()]);
                assert!(ok, "{name} segment {i}: {err}");
                let number = |after: &str| -> u64 {
                    let t = err.split(after).nth(1).unwrap_or("");
                    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
                    digits
                        .parse()
                        .unwrap_or_else(|_| panic!("{name} segment {i}: {err}"))
                };
                let began = number("decoded from frame ");
                // The warm-up and the frames after the segment that the lookahead reads enter
                // the element DECODE_ONLY: its temporal stage only, not the network.
                let field = |k: &str| seg[k].as_u64().unwrap();
                let outside = field("start") - field("decode_start") + field("stop") - field("end");
                let decode_only = number("(warm-up, lookahead, no network): ");
                assert_eq!(decode_only, outside, "{name} segment {i}: {err}, {seg}");
                let keyframe = seg["keyframe"].as_u64().unwrap();
                assert!(began <= keyframe, "{name} segment {i}: {began}, {seg}");
                match (indexed, name.ends_with(".mp4")) {
                    // MP4: its sample table's keyframe.
                    (true, true) => assert_eq!(began, keyframe, "{name} segment {i}: {seg}"),
                    // Matroska: the start of the cluster its index entry points to, at most
                    // a few frames (the audio interleaved there) before it.
                    (true, false) => assert!(keyframe - began < 12, "{name} {i}: {began}, {seg}"),
                    (false, _) => {}
                }
                seeks += usize::from(began > 0);
            }
            ok(&["join", s(job), s(joined)]);
        });
        assert!(seeks >= 1, "{name}: no segment sought its keyframe");
        let Some(audio) = audio else {
            assert_eq!(support::job::streams(&joined), ["ffv1"], "{name}");
            continue;
        };
        let (v0, v1) = support::job::span(&joined, "v:0");
        let (a0, a1) = support::job::span(&joined, "a:0");
        assert!(
            (a0 - v0).abs() < 0.03,
            "{name}: audio starts at {a0}, video {v0}"
        );
        assert!(
            v1 < audio && (a1 - v1).abs() < 0.03,
            "{name}: audio ends at {a1}, video {v1}"
        );
        assert_eq!(support::job::streams(&joined), ["ffv1", "aac"], "{name}");
    }
}

#[test]
fn bad_input_gets_one_line_and_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job");
    // A copy of the source, to change it after planning.
    let src = dir.path().join("in.mp4");
    std::fs::copy(sample(), &src).unwrap();
    ok(&[
        "plan",
        s(&src),
        "-o",
        s(&job),
        "--segments",
        "2",
        "--codec",
        "ffv1",
        "--temporal",
        "0",
    ]);
    fails(
        &["plan", s(&src), "-o", s(&job), "--segments", "2"],
        "already there",
    );
    fails(
        &[
            "plan",
            s(&src),
            "-o",
            s(&dir.path().join("j2")),
            "--segments",
            "76",
        ],
        "at most 75",
    );
    let out = dir.path().join("out.mkv");
    fails(&["join", s(&job), s(&out)], "missing: 0, 1");
    fails(&["segment", s(&job), "2"], "the plan has 2 segments");
    fails(&["segment", s(&job)], "no segment index");

    // A second worker on a segment another one holds.
    // flock(1) holds the lock (-o: itself, not its command) until its command ends; the
    // command marks that the lock is held, then waits for its stdin to close.
    let lock = job.join("segments/seg-00000.lock");
    let ready = dir.path().join("locked");
    let (mut holder, dog) = support::watchdog::spawn(
        std::process::Command::new("flock")
            .arg("-o")
            .arg(&lock)
            .args(["sh", "-c", &format!("touch {}; exec cat", s(&ready))])
            .stdin(std::process::Stdio::piped()),
        support::watchdog::hang(),
        "flock",
    );
    while !ready.exists() {
        assert!(holder.try_wait().unwrap().is_none(), "flock ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    fails(
        &["segment", s(&job), "0"],
        "being written by another worker",
    );
    assert!(!job.join("segments/seg-00000.mkv").exists());
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    dog.disarm("flock");

    ok(&["segment", s(&job), "0"]);
    ok(&["segment", s(&job), "1"]);
    // Corrupt segment 1: same size, one byte changed.
    let f = job.join("segments/seg-00001.mkv");
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&f, &bytes).unwrap();
    fails(&["join", s(&job), s(&out)], "segment 1");
    let status = ok(&["plan", "--status", s(&job)]);
    assert!(
        status.contains("segment 1: bad (checksum mismatch)"),
        "{status}"
    );
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    // Run again, it is redone and joins.
    ok(&["segment", s(&job), "1"]);
    ok(&["join", s(&job), s(&out)]);
    support::playable::assert_playable(&out, 75);
    fails(&["join", s(&job), s(&out)], "already exists");
    fails(
        &["join", s(&job), s(&dir.path().join("o.mp4"))],
        "cannot go into .mp4",
    );

    // The source changed since the plan: refused.
    std::fs::remove_file(job.join("segments/seg-00000.done.json")).unwrap();
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&src, &bytes).unwrap();
    fails(
        &["segment", s(&job), "0"],
        "the source changed since the plan was made",
    );

    // A broken or foreign plan.
    std::fs::write(job.join("plan.json"), b"{\"version\": 1, \"frames\": 3").unwrap();
    fails(&["segment", s(&job), "0"], "not a valid job plan");
    std::fs::write(job.join("plan.json"), b"{\"version\": 9}").unwrap();
    fails(&["plan", "--status", s(&job)], "version 9");
}
