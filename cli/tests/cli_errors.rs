//! Bad input to `clipdenoise video`, through the real binary: exactly one clear line on stderr
//! naming the problem, a non-zero exit, no output file (or temporary file) left behind, no panic.
#![cfg(feature = "gst")]

mod support;

use std::path::{Path, PathBuf};

use gst::prelude::*;

use support::child::{clipdenoise, RunExt};
use support::pipeline::{gst_run, h264_clip};

const TINY: &str = "../tests/fixtures/tiny-w8/official_state_dict.safetensors";

/// A 2-second 160x96 H.264 clip in MP4; `faststart` puts the index first.
fn make_mp4(path: &Path, faststart: bool) {
    h264_clip(path, 60, "ball", &format!("mp4mux faststart={faststart}"));
}

/// Run `clipdenoise video INPUT OUTPUT extra...` and check the failure contract; returns the line.
fn fails(input: &Path, output: &Path, extra: &[&str], expect: &[&str]) -> String {
    let mut args = vec![
        "video".to_string(),
        input.display().to_string(),
        output.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = clipdenoise().args(&args).env("RUST_BACKTRACE", "1").run();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded: {err}");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: exactly one line on stderr, got:\n{err}"
    );
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    for e in expect {
        assert!(
            line.contains(e),
            "{args:?}: '{line}' does not mention '{e}'"
        );
    }
    assert!(
        !err.contains("panicked") && !err.contains("backtrace") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout");
    if output.exists() && output != input {
        panic!("{args:?}: output {} left behind", output.display());
    }
    if let Some(dir) = output.parent().filter(|d| d.is_dir()) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(
                    !name.contains(".part."),
                    "{args:?}: temporary file {name} left behind"
                );
            }
        }
    }
    line.to_string()
}

#[test]
fn missing_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("nope.mp4");
    fails(
        &input,
        &dir.path().join("out.mp4"),
        &["--model", TINY],
        &["nope.mp4", "no such file"],
    );
}

#[test]
fn text_file_named_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.mp4");
    std::fs::write(&input, "these are not video frames\n".repeat(100)).unwrap();
    fails(
        &input,
        &dir.path().join("out.mp4"),
        &["--model", TINY],
        &["notes.mp4", "not a media file"],
    );
}

#[test]
fn truncated_videos() {
    let dir = tempfile::tempdir().unwrap();
    // Index at the end (the usual MP4): cut in half, the index is gone.
    let full = dir.path().join("full.mp4");
    make_mp4(&full, false);
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails(
        &cut,
        &dir.path().join("out.mp4"),
        &["--model", TINY],
        &["cut.mp4", "damaged or truncated"],
    );
    // Index first, cut in half: salvaged (cli_video's a_cut_faststart_mp4_is_salvaged_with_a_count).
}

/// A Matroska file cut at 1029 bytes and a faststart MP4 cut at 5 %: headers but no complete
/// frame. decodebin exposes its pad without caps at the early end; the job used to wait for
/// ever for that pad to be linked.
#[test]
fn files_cut_before_their_first_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mkv = dir.path().join("full.mkv");
    h264_clip(&mkv, 60, "ball", "matroskamux");
    let fs = dir.path().join("faststart.mp4");
    make_mp4(&fs, true);
    let fs_len = std::fs::metadata(&fs).unwrap().len() as usize;
    for (full, keep, name) in [(&mkv, 1029, "cut.mkv"), (&fs, fs_len * 5 / 100, "cut5.mp4")] {
        let bytes = std::fs::read(full).unwrap();
        let cut = dir.path().join(name);
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        fails(
            &cut,
            &dir.path().join("out.mp4"),
            &["--model", TINY],
            &[name, "no video frames could be decoded"],
        );
    }
}

/// The highest quality level the installed x264enc accepts (its `quantizer`'s maximum).
fn x264_max_quantizer() -> u32 {
    gst_run("fakesrc num-buffers=0 ! fakesink"); // initialises GStreamer
    let enc = gst::ElementFactory::make("x264enc").build().unwrap();
    let pspec = enc.find_property("quantizer").unwrap();
    pspec
        .downcast_ref::<gst::glib::ParamSpecUInt>()
        .unwrap()
        .maximum()
}

/// `--crf 51` was valid per `--help` (0-51) but x264enc's quantizer stops at 50: setting it
/// panicked. The range comes from the encoder, in the check and in `--help`.
#[test]
fn crf_beyond_the_encoders_range() {
    let max = x264_max_quantizer();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    make_mp4(&input, false);
    let over = (max + 1).to_string();
    fails(
        &input,
        &dir.path().join("out.mp4"),
        &["--model", TINY, "--crf", &over],
        &[&format!("--crf {over} is outside 0-{max} for h264")],
    );
    let help = clipdenoise().args(["video", "--help"]).run();
    let help = String::from_utf8_lossy(&help.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains(&format!("h264 0-{max} (default 20)")),
        "{help}"
    );
    // --batch-size: the range and default of the element's batch-size property, from the
    // element this workspace builds (registered statically, as the binary does).
    gstclipdenoise_element::plugin_register_static().expect("register the element");
    let e = gst::ElementFactory::make("clipdenoise").build().unwrap();
    let p = e.find_property("batch-size").unwrap();
    let p = p.downcast_ref::<gst::glib::ParamSpecUInt>().unwrap();
    let want = format!(
        "{}-{} (default {}",
        p.minimum(),
        p.maximum(),
        p.default_value()
    );
    assert!(
        help.contains(&format!("Frames per model call: {want}")),
        "{help}"
    );
}

#[test]
fn audio_without_video() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("song.mkv");
    gst_run(&format!(
        "audiotestsrc num-buffers=50 ! audioconvert ! vorbisenc ! matroskamux ! filesink location={}",
        input.display()
    ));
    fails(
        &input,
        &dir.path().join("out.mkv"),
        &["--model", TINY],
        &["song.mkv", "audio but no video"],
    );
}

#[test]
fn unwritable_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    make_mp4(&input, true);
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root writes anywhere: then use a directory no one may create files in.
    let target = if std::fs::write(ro.join("probe"), b"").is_err() {
        ro.clone()
    } else if std::fs::write("/sys/clipdenoise-probe", b"").is_err() {
        PathBuf::from("/sys")
    } else {
        eprintln!("skipped: no unwritable directory on this machine");
        return;
    };
    let line = fails(
        &input,
        &target.join("out.mp4"),
        &["--model", TINY],
        &["cannot write to", target.to_str().unwrap()],
    );
    assert!(
        line.contains("denied") || line.contains("ermission") || line.contains("ead-only"),
        "{line}"
    );
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn output_equal_to_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("same.mp4");
    make_mp4(&input, true);
    let before = std::fs::read(&input).unwrap();
    fails(
        &input,
        &input,
        &["--model", TINY, "--force"],
        &["same.mp4", "INPUT file itself"],
    );
    // Also through another spelling of the same path.
    let other = dir.path().join(".").join("same.mp4");
    fails(
        &input,
        &other,
        &["--model", TINY, "--force"],
        &["INPUT file itself"],
    );
    assert_eq!(std::fs::read(&input).unwrap(), before, "input untouched");
}

#[test]
fn corrupt_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    make_mp4(&input, true);
    let model = dir.path().join("broken.safetensors");
    let mut bytes = std::fs::read(TINY).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&model, &bytes).unwrap();
    fails(
        &input,
        &dir.path().join("out.mp4"),
        &["--model", model.to_str().unwrap()],
        &["broken.safetensors", "model"],
    );
    std::fs::write(&model, b"garbage").unwrap();
    fails(
        &input,
        &dir.path().join("out.mp4"),
        &["--model", model.to_str().unwrap()],
        &["broken.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn unknown_device() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    make_mp4(&input, true);
    fails(
        &input,
        &dir.path().join("out.mp4"),
        &["--model", TINY, "--device", "tpu"],
        &["unknown device 'tpu'"],
    );
    // A CUDA device that is not there (every machine has fewer than 64).
    fails(
        &input,
        &dir.path().join("out.mp4"),
        &["--model", TINY, "--device", "cuda:63"],
        &["cuda:63", "not available"],
    );
}

/// A codec the container cannot hold is refused before anything runs, with the pairs that work.
#[test]
fn a_codec_the_container_cannot_take_is_refused_with_the_pairs_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    make_mp4(&input, false);
    for (name, codec) in [
        ("out.mov", "ffv1"),
        ("out.mp4", "ffv1"),
        ("out.webm", "h264"),
    ] {
        let ext = name.rsplit('.').next().unwrap();
        fails(
            &input,
            &dir.path().join(name),
            &["--model", TINY, "--codec", codec],
            &[
                &format!("{codec} video cannot go into .{ext}"),
                ".mp4: h264, h265, vp9; .mov: h264, h265, vp9; .mkv: h264, h265, vp9, ffv1; .webm: vp9",
            ],
        );
    }
}

/// `-` (standard input or output) gets a plain refusal, not "unknown container '.'"; a
/// negative `--crf` gets the range, not clap's "use '-- -1'" advice.
#[test]
fn dash_and_negative_crf_get_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    make_mp4(&input, false);
    fails(
        &input,
        Path::new("-"),
        &["--model", TINY],
        &[
            "'-' (standard output) is not supported: video is written as a file",
            "give a file name ending in .mp4",
        ],
    );
    fails(
        Path::new("-"),
        &dir.path().join("out.mp4"),
        &["--model", TINY],
        &["'-' (standard input) is not supported: video is read as a file"],
    );
    let max = x264_max_quantizer();
    fails(
        &input,
        &dir.path().join("out.mp4"),
        &["--model", TINY, "--crf", "-1"],
        &[&format!("--crf -1 is outside 0-{max} for h264")],
    );
}
