//! Training: the loss goes down, and a resumed run reproduces an uninterrupted one bit for bit.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use clipdenoise::research::train::{TrainConfig, TrainEvent, Trainer};

/// Smooth synthetic photos (gradients, discs, stripes) written as real PNG files.
fn write_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..5u32 {
        let img = image::RgbImage::from_fn(80, 72, |x, y| {
            let (fx, fy) = (x as f32 / 80.0, y as f32 / 72.0);
            let disc = ((x as i32 - 40 - k as i32 * 3).pow(2) + (y as i32 - 36).pow(2) < 300) as u8;
            let stripe = (((x + k * 7) / 9) % 2) as f32;
            image::Rgb([
                (255.0 * fx) as u8 / 2 + disc * 100,
                (255.0 * fy * (0.5 + 0.1 * k as f32)) as u8,
                (120.0 + 60.0 * stripe) as u8,
            ])
        });
        img.save(dir.join(format!("img{k}.png"))).unwrap();
    }
}

fn config(dir: &Path, run: &str) -> TrainConfig {
    config_with(dir, run, "")
}

/// [`config`] with more lines in `[model]`.
fn config_with(dir: &Path, run: &str, model_lines: &str) -> TrainConfig {
    let text = format!(
        r#"
[model]
width = 8
blocks = [1, 1, 1]
{model_lines}
[data]
train_dirs = ["{data}"]
val_holdout = 1
patch = 32
batch = 4
color_prob = 0.5
saturation = [0.8, 2.0]
channel_shuffle = true
[noise]
weights = [1.0, 1.0, 1.0, 1.0]
gaussian_sigma = [10.0, 40.0]
jpeg_prob = 0.2
[optim]
lr = 2e-3
lr_min = 1e-5
weight_decay = 1e-4
betas = [0.9, 0.999]
eps = 1e-8
steps = 20
flat_steps = 10
grad_clip = 1.0
mixup_prob = 0.5
mixup_beta = 1.2
[run]
dir = "{run}"
seed = 3
checkpoint_minutes = 100
val_every = 0
threads = 2
device = "cpu"
"#,
        data = dir.join("data").display(),
        run = dir.join(run).display(),
    );
    let path = dir.join(format!("{run}.toml"));
    std::fs::write(&path, text).unwrap();
    TrainConfig::from_file(&path).unwrap()
}

/// Trainers draw mixup from libtorch's global generator (seeded per step): two training at
/// once in this process would interleave their draws, so the tests that train take turns.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn weights_of(run: &Path) -> clipdenoise::weights::TensorMap {
    clipdenoise::weights::read_safetensors(&run.join("model.safetensors"))
        .unwrap()
        .0
}

#[test]
fn twenty_steps_lower_the_loss_and_resume_is_exact() {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    write_images(&tmp.path().join("data"));
    let stop = AtomicBool::new(false);

    // Uninterrupted: 20 steps.
    let mut t = Trainer::new(config(tmp.path(), "a")).unwrap();
    let before = t.validate().unwrap();
    let mut losses = Vec::new();
    for _ in 0..20 {
        losses.push(t.train_step().unwrap());
    }
    t.save_checkpoint().unwrap();
    t.export(&tmp.path().join("a/model.safetensors")).unwrap();
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[15..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.8 * first, "loss did not drop: {losses:?}");
    assert!(
        t.validate().unwrap() > before,
        "validation PSNR did not improve"
    );

    // Interrupted after 8 steps, then resumed from the checkpoint by a new trainer; it
    // snapshots its weights every 5 steps, across the interruption.
    let snapshotting = || {
        let mut c = config(tmp.path(), "b");
        c.run.snapshot_every = 5;
        c
    };
    let mut t1 = Trainer::new(snapshotting()).unwrap();
    t1.run(Some(8), &stop, |_| {}).unwrap();
    drop(t1);
    let mut t2 = Trainer::new(snapshotting()).unwrap();
    assert_eq!(t2.step(), 8);
    let mut snapshots = Vec::new();
    t2.run(None, &stop, |ev| {
        if let TrainEvent::Snapshot { step, path } = ev {
            snapshots.push((step, path));
        }
    })
    .unwrap();
    assert_eq!(t2.step(), 20);
    let steps: Vec<u64> = snapshots.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, [10, 15, 20], "snapshots after the resume");
    let mut files: Vec<String> = std::fs::read_dir(tmp.path().join("b/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "model-step10.safetensors",
            "model-step15.safetensors",
            "model-step20.safetensors",
            "model-step5.safetensors"
        ]
    );
    let last = clipdenoise::weights::read_safetensors(&snapshots[2].1)
        .unwrap()
        .0;

    let (a, b) = (
        weights_of(&tmp.path().join("a")),
        weights_of(&tmp.path().join("b")),
    );
    assert_eq!(a.len(), b.len());
    for (name, ta) in &a {
        assert!(
            ta.equal(&b[name]),
            "{name} differs between resumed and uninterrupted runs"
        );
        assert!(
            ta.equal(&last[name]),
            "{name}: the step-20 snapshot is not the model"
        );
    }
}

#[test]
fn a_coarse_grain_run_trains_the_two_passes_and_its_weights_run_them() {
    use clipdenoise::inference::{Denoiser, Options};
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    write_images(&tmp.path().join("data"));
    let mut t = Trainer::new(config_with(tmp.path(), "c", "coarse_grain = true")).unwrap();
    for _ in 0..3 {
        let loss = t.train_step().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
    }
    assert!(t.validate().unwrap().is_finite());
    t.save_checkpoint().unwrap();
    let file = tmp.path().join("c/model.safetensors");
    t.export(&file).unwrap();
    // The weights say how they were trained, and inference follows them without being told.
    let d = Denoiser::load(&file, Options::default()).unwrap();
    assert!(d.config().coarse_grain, "config lost the mode");
    assert!(
        d.options().coarse_grain,
        "inference does not run the two passes"
    );
    // A plain run's weights stay plain.
    let mut p = Trainer::new(config(tmp.path(), "p")).unwrap();
    p.train_step().unwrap();
    p.save_checkpoint().unwrap();
    let plain = tmp.path().join("p/model.safetensors");
    p.export(&plain).unwrap();
    assert!(
        !Denoiser::load(&plain, Options::default())
            .unwrap()
            .options()
            .coarse_grain
    );
}

#[test]
fn bad_configs_are_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, "[model]\npreset = \"tiny\"\nwat = 1\n").unwrap();
    let err = TrainConfig::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("bad training config") && err.contains("wat"),
        "{err}"
    );
    std::fs::write(
        &path,
        "[model]\npreset = \"tiny\"\n[data]\ntrain_dirs = [\"x\"]\ncolor_prob = 1.5\n[run]\ndir = \"r\"\nseed = 1\n",
    )
    .unwrap();
    let err = TrainConfig::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("color_prob"), "{err}");
}

#[test]
fn a_kernel_head_warm_starts_from_a_pixel_model_trains_and_keeps_flat_areas() {
    use clipdenoise::inference::{Denoiser, Options};
    use clipdenoise::model::Head;
    use tch::{Device, Kind, Tensor};
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    write_images(&tmp.path().join("data"));
    // A pixel-head model to start from.
    let mut p = Trainer::new(config(tmp.path(), "px")).unwrap();
    p.train_step().unwrap();
    p.save_checkpoint().unwrap();
    let init = tmp.path().join("px/model.safetensors");
    p.export(&init).unwrap();
    let lines = format!("head = \"kernel\"\ninit = \"{}\"", init.display());
    let mut t = Trainer::new(config_with(tmp.path(), "k", &lines)).unwrap();
    let mut losses = Vec::new();
    for _ in 0..6 {
        let loss = t.train_step().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
        losses.push(loss);
    }
    assert!(t.validate().unwrap().is_finite());
    t.save_checkpoint().unwrap();
    let file = tmp.path().join("k/model.safetensors");
    t.export(&file).unwrap();
    let (tensors, _) = clipdenoise::weights::read_safetensors(&file).unwrap();
    assert!(tensors.contains_key("head.logits.weight"));
    assert!(
        !tensors.contains_key("last.weight"),
        "the pixel head came along"
    );
    // The warm start took the pixel model's decoder (it trained on from there, so compare the
    // first trainer step's file: the encoder stem moved only by a few small AdamW steps).
    let px = weights_of(&tmp.path().join("px"));
    let name = "up_path.0.conv_block.block.0.weight";
    let moved = (&tensors[name] - &px[name]).abs().max().double_value(&[]);
    let scale = px[name].abs().max().double_value(&[]);
    assert!(
        moved < 0.5 * scale,
        "not warm-started: moved {moved} of {scale}"
    );
    // The weights say which head they have; a flat picture comes out as it went in.
    let d = Denoiser::load(&file, Options::default()).unwrap();
    assert_eq!(d.config().head, Head::Kernel);
    let flat = Tensor::ones([1, 3, 40, 52], (Kind::Float, Device::Cpu))
        * Tensor::from_slice(&[0.1f32, 0.45, 0.8]).view([1, 3, 1, 1]);
    let out = d.denoise(&flat).unwrap();
    let err = (&out - &flat).abs().max().double_value(&[]);
    assert!(err < 1e-5, "a flat picture changed by {err}");
    // The checkpoint resumes into the same head.
    let resumed = Trainer::new(config_with(tmp.path(), "k", &lines)).unwrap();
    assert_eq!(resumed.step(), 6);
}

#[test]
fn a_kernel_head_with_more_passes_warm_starts_from_one_with_fewer_as_it_was() {
    use clipdenoise::inference::{Denoiser, Options};
    use clipdenoise::model::WarmStart;
    use tch::{Device, Kind, Tensor};
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    write_images(&tmp.path().join("data"));
    // A [1, 2] kernel model (tests/fixtures/README.md), into [1, 2, 4, 8].
    let old =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kernel-w8/model.safetensors");
    let lines = |d: &str| {
        format!(
            "head = \"kernel\"\nkernel_dilations = {d}\ninit = \"{}\"",
            old.display()
        )
    };
    let wide = lines("[1, 2, 4, 8]");
    let mut t = Trainer::new(config_with(tmp.path(), "wide", &wide)).unwrap();
    let mut started = Vec::new();
    t.run(Some(0), &AtomicBool::new(false), |ev| {
        if let TrainEvent::Started { warm_start, .. } = ev {
            started.push(warm_start)
        }
    })
    .unwrap();
    let want = WarmStart::AddedPasses {
        from: vec![1, 2],
        to: vec![1, 2, 4, 8],
        kept: vec![0, 1],
    };
    assert_eq!(started, [Some(want.clone())]);
    assert!(
        want.to_string().contains("[4, 8] added as near-identity"),
        "{want}"
    );
    // Step 0: the old passes' rows exactly, the new ones zero weights and a centre logit.
    let file = tmp.path().join("wide-step0.safetensors");
    t.export(&file).unwrap();
    let (got, _) = clipdenoise::weights::read_safetensors(&file).unwrap();
    let (was, _) = clipdenoise::weights::read_safetensors(&old).unwrap();
    let (w, b) = (&got["head.logits.weight"], &got["head.logits.bias"]);
    assert_eq!(w.size(), [108, 8, 1, 1]);
    assert!(w.narrow(0, 0, 54).equal(&was["head.logits.weight"]));
    assert!(b.narrow(0, 0, 54).equal(&was["head.logits.bias"]));
    assert_eq!(
        w.narrow(0, 54, 54).abs().sum(Kind::Float).double_value(&[]),
        0.0
    );
    let centre = b.narrow(0, 54, 54).view([2, 3, 9]);
    assert!(centre.select(2, 4).eq(8.0).all().int64_value(&[]) == 1);
    assert_eq!(
        centre
            .narrow(2, 0, 4)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
    // ... so the wide model denoises as the old one did, within the added passes' leak
    // (8 / (8 + e^8) of a neighbour's difference per pass: at most 0.0054 on [0, 1] for two).
    let opts = || Options {
        cpu_threads: 1,
        ..Options::default()
    };
    let (a, d) = (
        Denoiser::load(&old, opts()).unwrap(),
        Denoiser::load(&file, opts()).unwrap(),
    );
    assert_eq!(d.config().kernel_dilations(), &[1, 2, 4, 8]);
    tch::manual_seed(4);
    let x = (Tensor::rand([2, 3, 64, 80], (Kind::Float, Device::Cpu)) * 0.3
        + Tensor::linspace(0.1, 0.6, 80, (Kind::Float, Device::Cpu)))
    .clamp(0.0, 1.0);
    let diff = (a.denoise(&x).unwrap() - d.denoise(&x).unwrap()).abs();
    let (max, mean) = (
        diff.max().double_value(&[]),
        diff.mean(Kind::Float).double_value(&[]),
    );
    assert!(
        max < 0.0054 && mean < 0.001,
        "warm start off by {max} (mean {mean})"
    );
    // Training reaches the new passes (their weights move off zero) and resumes.
    for _ in 0..3 {
        assert!(t.train_step().unwrap().is_finite());
    }
    let after = tmp.path().join("wide-step3.safetensors");
    t.export(&after).unwrap();
    let moved = clipdenoise::weights::read_safetensors(&after).unwrap().0["head.logits.weight"]
        .narrow(0, 54, 54)
        .abs()
        .max()
        .double_value(&[]);
    assert!(moved > 0.0, "the added passes get no gradient");
    t.save_checkpoint().unwrap();
    let mut resumed = Trainer::new(config_with(tmp.path(), "wide", &wide)).unwrap();
    assert_eq!(resumed.step(), 3);
    let mut again = Vec::new();
    resumed
        .run(Some(0), &AtomicBool::new(false), |ev| {
            if let TrainEvent::Started { warm_start, .. } = ev {
                again.push(warm_start)
            }
        })
        .unwrap();
    assert_eq!(again, [None], "a resumed run has no warm start to report");
    // A list that does not hold [1, 2] in order cannot keep its passes: a clear error.
    let err = Trainer::new(config_with(tmp.path(), "bad", &lines("[4, 2, 1]")))
        .err()
        .expect("warm start into [4, 2, 1] accepted")
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("must hold the old one in order"),
        "{err}"
    );
}

#[test]
fn the_wide_kernel_config_warm_starts_from_the_kernel_run_with_four_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/kernel-wide-tiny.toml");
    let cfg = TrainConfig::from_file(&path).unwrap();
    let model = cfg.model_config().unwrap();
    assert_eq!(model.head, clipdenoise::model::Head::Kernel);
    assert_eq!(model.kernel_dilations(), &[1, 2, 4, 8]);
    let init = cfg.model.init.as_ref().unwrap();
    assert!(
        init.ends_with("runs/kernel-unbiased-tiny/model.safetensors"),
        "{init:?}"
    );
    assert!(cfg.run.dir.ends_with("runs/kernel-wide-tiny"));
    // kernel-unbiased-tiny's pool and seed, so its generations are the same pairs.
    let base = TrainConfig::from_file(&path.with_file_name("kernel-unbiased-tiny.toml")).unwrap();
    assert_eq!(cfg.run.seed, base.run.seed);
    assert_eq!(
        cfg.pool.as_ref().unwrap().dir,
        base.pool.as_ref().unwrap().dir
    );
    assert_eq!(
        toml::to_string(&cfg.noise).unwrap(),
        toml::to_string(&base.noise).unwrap()
    );
}
