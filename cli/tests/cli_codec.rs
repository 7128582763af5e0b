//! The codec side of issue 12, through the real binary: `clipdenoise eval-video` (camera noise,
//! x264, the element) and training with a codec pool (x264 round trips through GStreamer).
#![cfg(feature = "gst")]

mod support;

use std::path::{Path, PathBuf};

use support::child::{clipdenoise, RunExt};
use support::pipeline::gst_run;

const TINY: &str = "../tests/fixtures/tiny-w8/official_state_dict.safetensors";
/// An 8-frame 70x42 H.264 clip of a moving ball (sides that are not multiples of x264's
/// 16-pixel macroblocks: eval-video pads them for the encoder and crops them back).
fn make_clip(path: &Path) {
    gst_run(&format!(
        "videotestsrc num-buffers=8 pattern=ball ! video/x-raw,width=70,height=42,framerate=30/1 ! \
         x264enc speed-preset=ultrafast ! h264parse ! mp4mux ! filesink location={}",
        path.display()
    ));
}

fn eval_video(clip: &Path, extra: &[&str]) -> serde_json::Value {
    let out = clipdenoise()
        .arg("eval-video")
        .arg(clip)
        .args([
            "--frames",
            "6",
            "--crf",
            "20,40",
            "--preset",
            "ultrafast",
            "--json",
        ])
        .args(["--model", TINY])
        .args(extra)
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn eval_video_is_seeded_and_scores_every_crf_through_the_element() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("ball.mp4");
    make_clip(&clip);
    let dump = dir.path().join("dump");
    let a = eval_video(&clip, &["--dump", dump.to_str().unwrap()]);
    let b = eval_video(&clip, &[]);
    assert_eq!(a["rows"], b["rows"], "a rerun must give the same numbers");
    let rows = a["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(a["means"].as_array().unwrap().len(), 2);
    for r in rows {
        assert_eq!(r["noisy"]["frames"], 6);
        let (n, d) = (&r["noisy"], &r["denoised"]);
        let p = n["psnr"].as_f64().unwrap();
        assert!(p > 15.0 && p < 60.0, "noisy psnr {p}");
        // The test model is a tiny fixture, not a denoiser: its scores are only finite.
        for s in [n, d] {
            assert!(s["psnr"].as_f64().unwrap().is_finite());
            assert!(s["temporal"].as_f64().unwrap() > 0.0);
        }
        // The element changed the frames (the tiny test model is not the identity).
        assert_ne!(n["psnr"], d["psnr"]);
    }
    // CRF 40 loses more than CRF 20.
    assert!(rows[1]["noisy"]["psnr"].as_f64() < rows[0]["noisy"]["psnr"].as_f64());
    // Another seed films other noise.
    let c = eval_video(&clip, &["--seed", "1"]);
    assert_ne!(a["rows"][0]["noisy"]["psnr"], c["rows"][0]["noisy"]["psnr"]);
    // The default reference is unbiased: the clean frames plus the decoded noisy clip's mean
    // bias (issue 23); `--reference clean` scores the same decoded frames against the clean
    // ones, as before.
    assert_eq!(a["reference"], "unbiased");
    let old = eval_video(&clip, &["--reference", "clean"]);
    assert_eq!(old["reference"], "clean");
    assert_ne!(
        a["rows"][0]["noisy"]["psnr"],
        old["rows"][0]["noisy"]["psnr"]
    );
    for sub in [
        "clean",
        "crf20",
        "crf40",
        "crf20-reference",
        "crf40-reference",
    ] {
        let files: Vec<_> = std::fs::read_dir(dump.join("ball").join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 6, "{sub}");
        for f in files {
            let size = image::image_dimensions(&f).unwrap();
            assert_eq!(
                size,
                (70, 42),
                "{}: the frames keep their size",
                f.display()
            );
        }
    }
}

#[test]
fn eval_video_refuses_a_file_that_is_not_a_video() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.mp4");
    std::fs::write(&bad, b"not a video at all").unwrap();
    let out = clipdenoise()
        .args(["eval-video", bad.to_str().unwrap(), "--model", TINY])
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.mp4"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Training images and one frame sequence (moving gradient) on disk.
fn write_data(dir: &Path) -> (PathBuf, PathBuf) {
    let stills = dir.join("stills");
    let seqs = dir.join("seqs").join("clip");
    std::fs::create_dir_all(&stills).unwrap();
    std::fs::create_dir_all(&seqs).unwrap();
    let img = |k: u32| {
        image::RgbImage::from_fn(96, 80, move |x, y| {
            image::Rgb([
                ((x * 3 + k * 5) % 256) as u8,
                ((y * 3) % 256) as u8,
                (((x + y) / 7 % 2) * 120 + 60) as u8,
            ])
        })
    };
    for k in 0..3 {
        img(k).save(stills.join(format!("s{k}.png"))).unwrap();
    }
    for k in 0..6 {
        img(k * 2).save(seqs.join(format!("{k:05}.png"))).unwrap();
    }
    (stills, dir.join("seqs"))
}

fn pool_config(dir: &Path, stills: &Path, seqs: &Path, run: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
width = 8
blocks = [1, 1, 1]
[data]
train_dirs = ["{stills}"]
val_holdout = 1
patch = 32
batch = 2
[noise]
weights = [1.0, 0.0, 0.0, 0.0, 1.0]
[optim]
lr = 1e-3
lr_min = 1e-5
weight_decay = 1e-4
betas = [0.9, 0.999]
eps = 1e-8
steps = 6
flat_steps = 6
grad_clip = 1.0
mixup_prob = 0.0
mixup_beta = 1.2
[run]
dir = "{run}"
seed = 4
checkpoint_minutes = 100
val_every = 0
threads = 1
[pool]
dir = "{run}-pool"
prob = 0.5
regen_steps = 2
video_dirs = ["{seqs}"]
sequence_clips = 1
still_clips = 1
frames = 4
keep = 2
size = 64
crf = [20.0, 30.0]
presets = ["ultrafast"]
[pool.camera]
jpeg_prob = 0.0
subsample_prob = 0.0
"#,
        stills = stills.display(),
        seqs = seqs.display(),
        run = dir.join(run).display(),
    );
    let path = dir.join(format!("{run}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn train(config: &Path, max_steps: Option<u32>) {
    let mut c = clipdenoise();
    c.args(["train", "--config", config.to_str().unwrap()]);
    if let Some(m) = max_steps {
        c.args(["--max-steps", &m.to_string()]);
    }
    let out = c.run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn training_with_a_codec_pool_regenerates_it_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (stills, seqs) = write_data(dir.path());
    let whole = pool_config(dir.path(), &stills, &seqs, "whole");
    train(&whole, None);
    let pool = dir.path().join("whole-pool");
    // Steps 0-5 train on generations 0, 1, 2: the folder holds the last one.
    assert_eq!(
        std::fs::read_to_string(pool.join("generation.txt"))
            .unwrap()
            .trim(),
        "2"
    );
    let pairs = std::fs::read_dir(&pool).unwrap().count();
    assert_eq!(
        pairs,
        2 * 2 * 2 + 1,
        "2 clips x 2 kept frames x (noisy, clean) + generation"
    );

    // Interrupted after 3 steps (mid-generation 1), then resumed: the same weights.
    let parts = pool_config(dir.path(), &stills, &seqs, "parts");
    train(&parts, Some(3));
    train(&parts, None);
    let read = |run: &str| {
        let path = dir.path().join(run).join("model.safetensors");
        let (t, _) = clipdenoise::weights::read_safetensors(&path).unwrap();
        t
    };
    let (a, b) = (read("whole"), read("parts"));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert!(v.equal(&b[k]), "{k} differs after resuming");
    }
}
